"""Plan a dataset end to end: check it, fingerprint it, choose its pipeline."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from medseg.config.schema import Pipeline
from medseg.datasets import Dataset, check_dataset, infer_labels, load_case, open_dataset, require_valid
from medseg.errors import ConfigError
from medseg.orientation import to_canonical
from medseg.planning.calibrate import measure_cpu_speed
from medseg.planning.fingerprint import Fingerprint, compute_fingerprint
from medseg.planning.planner import plan_pipeline
from medseg.volume import Volume

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class Plan:
    """A dataset, its fingerprint, and the pipeline chosen for it with the reasons (and the device planned for)."""

    dataset: Dataset
    fingerprint: Fingerprint
    pipeline: Pipeline
    comments: dict[str, str]
    device: Literal["cuda", "cpu"] = "cuda"
    cpu_threads: int | None = None

    @property
    def header(self) -> str:
        """The comment block that opens the pipeline file."""
        text = (
            f"Pipeline planned by `medseg plan` for {self.dataset.name} ({self.fingerprint.num_cases} training cases,\n"
            f"{self.dataset.layout} layout). Each choice is explained above its key; edit freely."
        )
        if self.device == "cpu":
            text += (
                f"\nPlanned for a CPU ({self.cpu_threads} threads): a small network whose training step takes a\n"
                f"fraction of a second; plan with `--device cuda` to train on a GPU."
            )
        return text


def fingerprint_path(pipeline_path: str | os.PathLike[str]) -> Path:
    """Where ``medseg plan --output plan.yaml`` puts the fingerprint: ``plan.fingerprint.json``."""
    path = Path(pipeline_path)
    stem = path.name.removesuffix(".yaml").removesuffix(".yml")
    return path.with_name(stem + ".fingerprint.json")


def default_memory_gb(device: Literal["cuda", "cpu"] | None = None) -> float:
    """GiB a training step may use: 8 on a CUDA GPU (nnU-Net's budget), 2 on a CPU.

    Args:
        device: the device planned for; None asks torch whether a CUDA GPU is visible.
    """
    return 8.0 if (device or resolve_device("auto")) == "cuda" else 2.0


def resolve_device(device: Literal["auto", "cuda", "cpu"]) -> Literal["cuda", "cpu"]:
    """``"auto"`` is ``"cuda"`` when torch sees a CUDA GPU, else ``"cpu"``; the others are returned as they are.

    Raises:
        ConfigError: an unknown device name.
    """
    if device in ("cuda", "cpu"):
        return device
    if device != "auto":
        raise ConfigError(f"device must be 'auto', 'cuda' or 'cpu', got {device!r}")
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_cpu_threads() -> int:
    """The threads torch computes with (``torch.get_num_threads()``: the cores, or ``OMP_NUM_THREADS``)."""
    import torch

    return torch.get_num_threads()


def plan_dataset(
    path: str | os.PathLike[str],
    *,
    memory_gb: float | None = None,
    dimensions: Literal["auto", 2, 3] = "auto",
    epochs: int | None = None,
    name: str | None = None,
    device: Literal["auto", "cuda", "cpu"] = "auto",
    cpu_threads: int | None = None,
    cpu_speed: float | None = None,
    progress: Progress | None = None,
) -> Plan:
    """Open the dataset at ``path``, refuse it if any case has errors, and plan its pipeline.

    Args:
        path: an nnU-Net v2 or Decathlon folder, or a CSV/JSON list (see ``medseg.datasets``).
        memory_gb: GiB a training step may use; default 8 on a GPU, 2 on a CPU.
        dimensions: 2 or 3 to force a 2D or 3D network; "auto" chooses.
        epochs: epochs to plan for; default nnU-Net's 1000 on a GPU, a night's run on a CPU.
        name: the pipeline's name; default the dataset's.
        device: what training will run on: ``"cuda"`` (nnU-Net's heuristics), ``"cpu"``
            (a network and patch whose step fits a time budget, see
            :func:`medseg.planning.plan_pipeline`), or ``"auto"``: ``"cuda"`` when torch
            sees a CUDA GPU, else ``"cpu"``.
        cpu_threads: threads a CPU run will use; default ``torch.get_num_threads()``.
        cpu_speed: for a CPU plan, this machine's training-step time over the formula's;
            default: measured (:func:`medseg.planning.calibrate.measure_cpu_speed`, a few seconds).
        progress: ``(stage, done, total)`` for the ``check`` and ``fingerprint`` stages.

    Raises:
        DatasetError: the dataset cannot be opened, or cases have errors (all listed).
        ConfigError: no pipeline fits (e.g. images too small, memory budget too small),
            or a bad option.
    """
    target = resolve_device(device)
    threads = cpu_threads if cpu_threads is not None else default_cpu_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"cpu_threads must be a positive whole number, got {threads!r}")
    dataset = open_dataset(path)
    problems = check_dataset(dataset, progress=_stage(progress, "check"))
    for problem in problems:
        if problem.severity == "warning":
            log.warning("%s", problem)
        elif problem.severity == "note":
            log.info("%s", problem)
    require_valid(problems)
    labels = dataset.labels or infer_labels(dataset).labels

    def cases() -> Iterator[tuple[Volume, Volume]]:
        # measured in the canonical voxel order the plan trains in, so sides and spacings agree across scans
        for case in dataset.cases:
            image, label = load_case(dataset, case)
            if label is not None:
                yield to_canonical(image)[0], to_canonical(label)[0]

    fingerprint = compute_fingerprint(
        cases(),
        modality=dataset.modality,
        channel_names=dataset.channels,
        labels=labels,
        progress=_stage(progress, "fingerprint"),
    )
    if target == "cpu" and cpu_speed is None:
        cpu_speed = measure_cpu_speed(threads)
        log.info("this machine takes %gx the reference time for a training step on %d thread(s)", cpu_speed, threads)
    pipeline, comments = plan_pipeline(
        fingerprint,
        name=name or dataset.name,
        memory_gb=memory_gb if memory_gb is not None else default_memory_gb(target),
        dimensions=dimensions,
        epochs=epochs,
        device=target,
        cpu_threads=threads,
        cpu_speed=cpu_speed if cpu_speed is not None else 1.0,
    )
    return Plan(
        dataset=dataset,
        fingerprint=fingerprint,
        pipeline=pipeline,
        comments=comments,
        device=target,
        cpu_threads=threads if target == "cpu" else None,
    )


def _stage(progress: Progress | None, stage: str) -> Callable[[int, int], None] | None:
    if progress is None:
        return None
    return lambda done, total: progress(stage, done, total or 0)
