"""``workflows.plan``: a commented pipeline and its fingerprint, as a notebook asks for them."""

from __future__ import annotations

import json

from medseg.config import load_pipeline
from medseg.planning import Fingerprint
from medseg.workflows.plan import plan_dataset, plan_text, write_plan


def test_a_plan_is_written_with_its_fingerprint_and_reads_back(phantom_dataset, tmp_path):
    plan = plan_dataset(phantom_dataset, device="cpu", cpu_threads=2, cpu_speed=1.0, name="phantom")
    text = plan_text(plan)
    assert text.startswith("# Pipeline planned by `medseg plan`") and "# " in text.split("network:")[1]
    fingerprint = write_plan(plan, tmp_path / "phantom.yaml")
    assert fingerprint == tmp_path / "phantom.fingerprint.json"
    assert (tmp_path / "phantom.yaml").read_text() == text
    assert load_pipeline(tmp_path / "phantom.yaml") == plan.pipeline
    assert Fingerprint.from_dict(json.loads(fingerprint.read_text())) == plan.fingerprint
    again = plan_dataset(phantom_dataset, device="cpu", cpu_threads=2, cpu_speed=1.0, name="phantom")
    assert plan_text(again) == text  # deterministic: the same data and options give the same file
