"""Which pipeline a run trains: planned, given, or the one a resumed run was started with.

The result carries the pipeline's YAML text as it will be stored (in checkpoints,
``RUN_DIR/pipeline.yaml`` and the model folder): the planner's comments when it
was planned, the user's own file (comments and all) when one was given.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.config.loading import dump_pipeline, load_pipeline, parse_pipeline
from medseg.config.schema import Pipeline
from medseg.datasets import Dataset, check_dataset, infer_labels, open_dataset, require_valid
from medseg.errors import ConfigError
from medseg.planning import fingerprint_path, plan_dataset
from medseg.training.state import Checkpoint
from medseg.transforms.steps import check_augmentation

log = logging.getLogger(__name__)

_EPOCHS_LINE = re.compile(r"^(\s+epochs:\s*)\d+(\s*(#.*)?)$", re.MULTILINE)


@dataclass(frozen=True)
class ResolvedPipeline:
    """The pipeline a run trains, its YAML text, the dataset, and the fingerprint when planned."""

    pipeline: Pipeline
    text: str
    dataset: Dataset
    fingerprint: dict[str, Any] | None = None


def resolve_pipeline(
    dataset_path: str | os.PathLike[str],
    pipeline: Pipeline | str | os.PathLike[str],
    *,
    run_dir: Path,
    checkpoint: Checkpoint | None,
    epochs: int | None,
    device: str = "auto",
    progress: Any = None,
) -> ResolvedPipeline:
    """The run's pipeline: see :func:`medseg.workflows.train.train` for the rules.

    ``device`` (``"cpu"`` or ``"cuda"``, the device training runs on) is what an ``"auto"``
    pipeline is planned for.

    Raises:
        ConfigError: the pipeline does not fit the dataset, or differs from the
            resumed run's (other than ``training.epochs``).
        DatasetError: the dataset cannot be opened or has errors.
    """
    fingerprint = None
    if isinstance(pipeline, str) and pipeline == "auto":
        saved_file = run_dir / "pipeline.yaml"
        if checkpoint is not None:
            chosen, text = (
                parse_pipeline(checkpoint.pipeline_yaml, source="the checkpoint's pipeline"),
                checkpoint.pipeline_yaml,
            )
            dataset = open_dataset(dataset_path)
            fingerprint = _read_fingerprint(run_dir / "fingerprint.json")
        elif saved_file.is_file():
            log.info("using the pipeline saved in %s", saved_file)
            chosen, text = load_pipeline(saved_file), saved_file.read_text()
            dataset = open_dataset(dataset_path)
            fingerprint = _read_fingerprint(run_dir / "fingerprint.json")
        else:
            plan = plan_dataset(dataset_path, epochs=epochs, device=device, progress=progress)
            chosen, dataset = plan.pipeline, plan.dataset
            text = dump_pipeline(chosen, comments=plan.comments, header=plan.header)
            fingerprint = plan.fingerprint.to_dict()
    else:
        if isinstance(pipeline, Pipeline):
            chosen, text = pipeline, dump_pipeline(pipeline)
        else:
            chosen, text = load_pipeline(pipeline), Path(pipeline).read_text()
            fingerprint = _read_fingerprint(fingerprint_path(pipeline))  # written there by `medseg plan -o`
        check_augmentation(chosen)  # a misspelled step is refused now, with its line, not at the first batch
        fingerprint = fingerprint or _read_fingerprint(run_dir / "fingerprint.json")
        dataset = open_dataset(dataset_path)
        if checkpoint is None:
            problems = check_dataset(dataset, progress=_stage(progress, "check"))
            for problem in problems:
                if problem.severity == "warning":
                    log.warning("%s", problem)
                elif problem.severity == "note":
                    log.info("%s", problem)
            require_valid(problems)
        check_pipeline_fits(chosen, dataset)
    if epochs is not None and epochs != chosen.training.epochs:
        chosen, text = with_epochs(chosen, text, epochs)
    if checkpoint is not None:
        saved = parse_pipeline(checkpoint.pipeline_yaml, source="the checkpoint's pipeline")
        changed = differences(_without_epochs(saved), _without_epochs(chosen))
        if changed:
            shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
            raise ConfigError(
                f"{run_dir}: cannot resume with a different pipeline (changed: {shown}); resume with the "
                "run's own pipeline (RUN_DIR/pipeline.yaml, or 'auto'), or train into a new folder. "
                "Only training.epochs may change on resume."
            )
    return ResolvedPipeline(chosen, text, dataset, fingerprint)


def check_pipeline_fits(pipeline: Pipeline, dataset: Dataset) -> None:
    """Refuse a pipeline whose channels or labels do not match the dataset's.

    Raises:
        ConfigError: a different number of channels, or label values in the
            dataset the pipeline has no output for.
    """
    expected = [c.name for c in pipeline.preprocessing.channels]
    if len(expected) != len(dataset.channels):
        raise ConfigError(
            f"pipeline {pipeline.name!r} takes {len(expected)} channel(s) {expected}, "
            f"the dataset {dataset.name!r} has {len(dataset.channels)} {list(dataset.channels)}"
        )
    if [n.lower() for n in expected] != [n.lower() for n in dataset.channels]:
        log.warning(
            "channel names differ: pipeline %s, dataset %s (matched by order)", expected, list(dataset.channels)
        )
    labels = dataset.labels or infer_labels(dataset).labels
    unknown = sorted(set(labels) - set(pipeline.labels))
    if unknown:
        listing = ", ".join(f"{n} {labels[n]}" for n in unknown)
        raise ConfigError(
            f"the dataset {dataset.name!r} has label(s) {listing} that pipeline {pipeline.name!r} does not list "
            f"(it lists {', '.join(f'{n} {label.name}' for n, label in sorted(pipeline.labels.items()))}); "
            "add them to the pipeline's labels"
        )
    for number, name in labels.items():
        if pipeline.labels[number].name.lower() != name.lower():
            log.warning(
                "label %d is %r in the dataset but %r in the pipeline", number, name, pipeline.labels[number].name
            )


def with_epochs(pipeline: Pipeline, text: str, epochs: int) -> tuple[Pipeline, str]:
    """The pipeline with ``training.epochs`` replaced, and its text edited to match.

    The ``epochs:`` line is edited in place (keeping comments); when that cannot be
    done unambiguously, the text is written anew.
    """
    training = pipeline.training.model_copy(update={"epochs": epochs})
    changed = pipeline.model_copy(update={"training": training})
    if len(_EPOCHS_LINE.findall(text)) == 1:
        edited = _EPOCHS_LINE.sub(lambda m: f"{m.group(1)}{epochs}{m.group(2)}", text)
        try:
            if parse_pipeline(edited) == changed:
                return changed, edited
        except ConfigError:
            pass  # fall through: write the pipeline anew
    return changed, dump_pipeline(changed)


def differences(before: Mapping[str, Any], after: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested mappings."""
    keys = [*before, *(k for k in after if k not in before)]
    changed = []
    for key in keys:
        a, b = before.get(key), after.get(key)
        path = f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            changed += differences(a, b, f"{path}.")
        elif a != b:
            changed.append(path)
    return changed


def _without_epochs(pipeline: Pipeline) -> dict[str, Any]:
    data = pipeline.model_dump(mode="json")
    data["training"].pop("epochs")
    data.pop("description", None)
    return data


def _read_fingerprint(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("%s: unreadable, not copied into the model folder (%s)", path, exc)
        return None


def _stage(progress: Any, stage: str) -> Any:
    if progress is None:
        return None
    return lambda done, total: progress(stage, done, total or 0)
