"""``medseg plan``'s job: a commented pipeline for a dataset, written with its fingerprint beside it.

::

    from medseg.workflows.plan import plan_dataset, write_plan

    plan = plan_dataset("/data/Dataset001_Phantom", device="cpu")
    write_plan(plan, "phantom.yaml")   # phantom.yaml and phantom.fingerprint.json
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from medseg.config import dump_pipeline, save_pipeline
from medseg.io.files import write_atomically
from medseg.planning import fingerprint_path, plan_dataset
from medseg.planning.dataset import Plan

__all__ = ["plan_dataset", "plan_text", "write_plan"]


def plan_text(plan: Plan) -> str:
    """The pipeline as commented YAML, as ``medseg plan`` prints it without ``--output``."""
    return dump_pipeline(plan.pipeline, comments=plan.comments, header=plan.header)


def write_plan(plan: Plan, output: str | os.PathLike[str]) -> Path:
    """Write the pipeline to ``output`` and the fingerprint beside it (``<stem>.fingerprint.json``), atomically.

    Returns:
        The fingerprint's path.
    """
    save_pipeline(plan.pipeline, output, comments=plan.comments, header=plan.header)
    text = json.dumps(plan.fingerprint.to_dict(), indent=2) + "\n"
    path = fingerprint_path(output)
    write_atomically(path, lambda tmp: tmp.write_text(text))
    return path
