"""Plan a dataset end to end: check it, fingerprint it, choose its pipeline."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from medseg.config.schema import Pipeline
from medseg.datasets import Dataset, check_dataset, infer_labels, load_case, open_dataset, require_valid
from medseg.planning.fingerprint import Fingerprint, compute_fingerprint
from medseg.planning.planner import plan_pipeline
from medseg.volume import Volume

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class Plan:
    """A dataset, its fingerprint, and the pipeline chosen for it with the reasons."""

    dataset: Dataset
    fingerprint: Fingerprint
    pipeline: Pipeline
    comments: dict[str, str]

    @property
    def header(self) -> str:
        """The comment block that opens the pipeline file."""
        return (
            f"Pipeline planned by `medseg plan` for {self.dataset.name} ({self.fingerprint.num_cases} training cases,\n"
            f"{self.dataset.layout} layout). Each choice is explained above its key; edit freely."
        )


def fingerprint_path(pipeline_path: str | os.PathLike[str]) -> Path:
    """Where ``medseg plan --output plan.yaml`` puts the fingerprint: ``plan.fingerprint.json``."""
    path = Path(pipeline_path)
    stem = path.name.removesuffix(".yaml").removesuffix(".yml")
    return path.with_name(stem + ".fingerprint.json")


def default_memory_gb() -> float:
    """GiB a training step may use: 8 with a CUDA GPU (nnU-Net's budget), 2 on a CPU."""
    import torch

    return 8.0 if torch.cuda.is_available() else 2.0


def plan_dataset(
    path: str | os.PathLike[str],
    *,
    memory_gb: float | None = None,
    dimensions: Literal["auto", 2, 3] = "auto",
    epochs: int | None = None,
    name: str | None = None,
    progress: Progress | None = None,
) -> Plan:
    """Open the dataset at ``path``, refuse it if any case has errors, and plan its pipeline.

    Raises:
        DatasetError: the dataset cannot be opened, or cases have errors (all listed).
        ConfigError: no pipeline fits (e.g. images too small, memory budget too small).
    """
    dataset = open_dataset(path)
    problems = check_dataset(dataset, progress=_stage(progress, "check"))
    for problem in problems:
        if problem.severity == "warning":
            log.warning("%s", problem)
    require_valid(problems)
    labels = dataset.labels or infer_labels(dataset).labels

    def cases() -> Iterator[tuple[Volume, Volume]]:
        for case in dataset.cases:
            image, label = load_case(dataset, case)
            if label is not None:
                yield image, label

    fingerprint = compute_fingerprint(
        cases(),
        modality=dataset.modality,
        channel_names=dataset.channels,
        labels=labels,
        progress=_stage(progress, "fingerprint"),
    )
    pipeline, comments = plan_pipeline(
        fingerprint,
        name=name or dataset.name,
        memory_gb=memory_gb if memory_gb is not None else default_memory_gb(),
        dimensions=dimensions,
        epochs=epochs,
    )
    return Plan(dataset=dataset, fingerprint=fingerprint, pipeline=pipeline, comments=comments)


def _stage(progress: Progress | None, stage: str) -> Callable[[int, int], None] | None:
    if progress is None:
        return None
    return lambda done, total: progress(stage, done, total or 0)
