"""``train()``: from a dataset to a model folder, resumable, within a time limit.

::

    result = train("/data/Dataset001_Phantom", Path("runs/phantom"), TrainOptions(epochs=50))
    network, pipeline, facts = load_model(result.model_dir)

The run folder holds everything the run made (see ``docs/training.md``)::

    RUN_DIR/
      pipeline.yaml  fingerprint.json  splits.json     what is trained, on which cases
      cache/                                           prepared cases (read from raw files once)
      checkpoints/last.pt  checkpoints/best.pt         for resuming, and the best weights
      metrics.csv  train.log  curves.png  tensorboard/ what happened
      model/                                           the result (see model_folder.py)
      .lock                                            held while a process trains into the folder

Under ``torchrun`` (see :mod:`medseg.training.distributed`) rank 0 locks the folder,
plans, splits, writes the run files and fills the cache while the other ranks
wait; then every rank opens the cached cases (and the checkpoint, when resuming)
and trains its share; rank 0 alone writes records, checkpoints and the model folder.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medseg.config.loading import dump_pipeline, read_comments
from medseg.config.schema import Pipeline
from medseg.datasets import load_case
from medseg.errors import ConfigError
from medseg.io.files import write_atomically
from medseg.models.devices import compute_settings
from medseg.models.folder import export_model_folder
from medseg.training.distributed import Distributed, main_process, process_group
from medseg.training.loop import (
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    EpochCallback,
    LoopOutcome,
    LoopSettings,
    Progress,
    Trainer,
    unique_names,
)
from medseg.training.records import RunRecords
from medseg.training.splits import Fold, FoldCases, load_or_make_splits, select_fold
from medseg.training.state import Checkpoint, load_checkpoint
from medseg.training.validation import largest_component_labels
from medseg.transforms.cache import CaseCache, file_stamp
from medseg.transforms.prepare import PreparedCase
from medseg.workflows.resolve import ResolvedPipeline, resolve_pipeline

__all__ = ["LOCK_FILE", "TrainOptions", "TrainingResult", "main_process", "train"]

log = logging.getLogger(__name__)

MODEL_DIR = "model"
CACHE_DIR = "cache"
#: Held (``flock``) by the process training into a run folder, for the run's life.
LOCK_FILE = ".lock"
#: Processes preparing cases when there are at least this many (each holds one scan in memory).
MAX_PREPARE_WORKERS = 8
#: Files whose presence means a folder holds a run that ``resume=False`` must not overwrite.
RUN_MARKERS = (f"{CHECKPOINT_DIR}/{LAST_CHECKPOINT}", "metrics.csv", MODEL_DIR)


@dataclass(frozen=True)
class TrainOptions:
    """How to train (``medseg train``'s options), checked when made.

    Attributes:
        pipeline: ``"auto"`` plans one for the dataset (``medseg plan``); else a
            :class:`Pipeline` or a pipeline file, checked against the dataset's channels and labels.
        epochs: overrides ``training.epochs`` (also when resuming, to extend or shorten a run).
        time_limit_minutes: end, model exported, within this much wall time (counted from the
            :func:`train` call, preparation included) plus a small margin: validation is kept to
            ``training.validation_share`` of the time, and training stops early enough for a
            closing validation and the export (see :mod:`medseg.training.budget`).
        fold: validate on this fold of ``training.folds`` and train on the others; ``None``
            means fold 0 (or, when resuming, the checkpoint's fold); ``"all"`` trains on every
            case without validation and exports the last epoch.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        resume: continue the run in the output folder from ``checkpoints/last.pt`` (start it when
            there is none). The pipeline must be the same, except for ``training.epochs``.

    Raises:
        ConfigError: epochs, time limit or fold out of range.
    """

    pipeline: Pipeline | str | os.PathLike[str] = "auto"
    epochs: int | None = None
    time_limit_minutes: float | None = None
    fold: Fold | None = None
    device: Literal["auto", "cpu", "cuda"] | str = "auto"
    resume: bool = False

    def __post_init__(self) -> None:
        _check_options(self.epochs, self.time_limit_minutes, self.fold)


@dataclass(frozen=True)
class TrainingResult:
    """What a run achieved.

    Attributes:
        run_dir: the run folder.
        model_dir: the exported model folder (``run_dir/model``), for :func:`load_model`.
        epochs: epochs finished (over all sessions of the run).
        best_epoch: the epoch whose weights were exported.
        best_dice: its mean foreground validation Dice (NaN without validation).
        history: one metrics row per epoch (as in ``metrics.csv``).
        stopped: ``"completed"``, ``"time limit"`` or ``"interrupted"`` (``stop`` was set).
        seconds: wall time of this call.
    """

    run_dir: Path
    model_dir: Path
    epochs: int
    best_epoch: int
    best_dice: float
    history: list[dict[str, float]]
    stopped: str
    seconds: float


def train(
    dataset_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: TrainOptions | None = None,
    *,
    progress: Progress | None = None,
    on_epoch: EpochCallback | None = None,
    stop: threading.Event | None = None,
) -> TrainingResult:
    """Train a network on a dataset and export the best epoch as a model folder.

    Args:
        dataset_path: an nnU-Net v2 or Decathlon folder, or a CSV/JSON list (see ``medseg.datasets``).
        output: the run folder; created if absent. Without ``options.resume`` it must not hold a run.
        options: the pipeline, epochs, time limit, fold, device and resume (:class:`TrainOptions`; default: its
            defaults, i.e. a planned pipeline, fold 0, the device chosen automatically).
        progress: ``(stage, done, total)``: stages ``check``, ``fingerprint``, ``prepare`` (per
            case), ``epoch`` (epochs finished of the budget), ``train`` (per step of the epoch)
            and ``validate`` (per validation case).
        on_epoch: ``(metrics row, one-line summary)`` after each epoch.
        stop: when set (e.g. by a SIGTERM handler), training ends after the current step; the
            epoch is saved without validation and the best model so far is exported
            (``stopped == "interrupted"``); ``options.resume`` continues the run.

    Raises:
        ConfigError: bad options, a pipeline that does not fit the dataset, a run folder
            in use without ``resume``, or a resume with another pipeline or fold.
        DatasetError: the dataset cannot be read, or cases have errors (all listed).
        ModelError: a damaged checkpoint.
    """
    started = time.monotonic()
    options = options or TrainOptions()
    limit = options.time_limit_minutes
    deadline = None if limit is None else started + limit * 60.0
    run_dir = Path(output)
    with process_group(options.device) as group, contextlib.ExitStack() as held:
        target = group.device
        if not group.is_main:
            progress = on_epoch = None  # bars and epoch lines come from rank 0 only
        processes = group.describe()
        begin = _Begin(run_dir, dataset_path, options.pipeline, options.epochs, options.fold, options.resume,
                       progress, target, processes)  # fmt: skip
        started_run = group.run_on_main(functools.partial(_start_run, begin, held))
        if group.is_main:
            checkpoint, records = begin.checkpoint, begin.records
        else:
            checkpoint, records = _join_run(run_dir, started_run), None
        resolved, chosen = started_run.resolved, started_run.chosen
        train_cases, validation_cases = _open_cases(run_dir, resolved, chosen, started_run.stamps)
        settings = LoopSettings(
            run_dir=run_dir,
            device=target,
            fold=chosen.fold,
            pipeline_yaml=resolved.text,
            deadline=deadline,
            stop=stop,
            progress=progress,
            on_epoch=on_epoch,
            group=group,
        )
        try:
            with compute_settings(target):
                trainer = Trainer(
                    resolved.pipeline, train_cases=train_cases, validation_cases=validation_cases, settings=settings
                )
                if checkpoint is not None:
                    trainer.restore(checkpoint)
                outcome = trainer.run(records)
        finally:
            if records is not None:
                records.close()

        model_dir = _export(run_dir, resolved, chosen, outcome, group, records)
        seconds = time.monotonic() - started
        if records is not None:
            dice = "no validation" if math.isnan(outcome.best_dice) else f"mean Dice {outcome.best_dice:.4f}"
            records.note(
                f"exported epoch {outcome.best_epoch} ({dice}) to {model_dir} "
                f"after {outcome.epochs_done} epoch(s); {outcome.stopped}; {seconds:.1f} s in this session"
            )
    return TrainingResult(
        run_dir=run_dir,
        model_dir=model_dir,
        epochs=outcome.epochs_done,
        best_epoch=outcome.best_epoch,
        best_dice=outcome.best_dice,
        history=outcome.history,
        stopped=outcome.stopped,
        seconds=seconds,
    )


def _export(
    run_dir: Path,
    resolved: ResolvedPipeline,
    chosen: FoldCases,
    outcome: LoopOutcome,
    group: Distributed,
    records: RunRecords | None,
) -> Path:
    """The model folder of the best epoch (written by rank 0), with the post-processing chosen on validation."""
    exported, exported_text, chosen_note = _with_chosen_postprocessing(resolved, outcome)
    if records is not None and chosen_note:
        records.note(chosen_note)

    def export() -> Path:
        return export_model_folder(
            run_dir / MODEL_DIR,
            weights=outcome.best_weights,
            pipeline=exported,
            pipeline_yaml=exported_text,
            fingerprint=resolved.fingerprint,
            metadata=_model_facts(resolved, chosen, outcome, group.device, group),
        )

    return group.run_on_main(export)


def _with_chosen_postprocessing(resolved: ResolvedPipeline, outcome: LoopOutcome) -> tuple[Pipeline, str, str]:
    """The pipeline to export, and a note: with ``choose_on_validation``, ``inference.postprocessing``'s
    ``largest_component`` chosen on the exported epoch's validation cases (nnU-Net's rule); else as trained."""
    pipeline = resolved.pipeline
    settings = pipeline.inference.postprocessing
    if not settings.choose_on_validation or outcome.component_dice is None:
        return pipeline, resolved.text, ""
    chosen, reason = largest_component_labels(sorted(pipeline.labels), *outcome.component_dice)
    names = ", ".join(pipeline.labels[n].name for n in chosen) or "no label"
    note = f"post-processing: largest component of {names}; {reason}"
    if chosen == settings.largest_component:
        return pipeline, resolved.text, note
    postprocessing = settings.model_copy(update={"largest_component": chosen})
    inference = pipeline.inference.model_copy(update={"postprocessing": postprocessing})
    changed = pipeline.model_copy(update={"inference": inference})
    header, comments = read_comments(resolved.text)
    comments["inference.postprocessing.largest_component"] = reason
    return changed, dump_pipeline(changed, comments=comments, header=header), note


@dataclass
class _Begin:
    """What rank 0 needs to start a run, and what it keeps for itself (checkpoint, records)."""

    run_dir: Path
    dataset_path: str | os.PathLike[str]
    pipeline: Pipeline | str | os.PathLike[str]
    epochs: int | None
    fold: Fold | None
    resume: bool
    progress: Progress | None
    device: Any
    processes: str
    checkpoint: Checkpoint | None = None
    records: RunRecords | None = None


@dataclass(frozen=True)
class _Started:
    """What rank 0 decided and prepared, sent to every rank: the pipeline, the cases, the cache stamps."""

    resolved: ResolvedPipeline
    chosen: FoldCases
    resumed_epoch: int | None
    stamps: dict[str, str] = field(default_factory=dict)


def _start_run(begin: _Begin, held: contextlib.ExitStack) -> _Started:
    """Rank 0's part: lock the folder, resolve the pipeline, split, write the run files, fill the cache."""
    run_dir = begin.run_dir
    held.enter_context(lock_run_dir(run_dir))
    checkpoint = _open_run_dir(run_dir, resume=begin.resume)
    fold = begin.fold
    if checkpoint is not None:
        fold = _resumed_fold(checkpoint, fold)
    resolved = resolve_pipeline(
        begin.dataset_path,
        begin.pipeline,
        run_dir=run_dir,
        checkpoint=checkpoint,
        epochs=begin.epochs,
        device=begin.device.type,
        progress=begin.progress,
    )
    chosen = _choose_cases(run_dir, resolved, 0 if fold is None else fold)
    _write_run_files(run_dir, resolved)
    records = RunRecords(
        run_dir,
        label_names=unique_names([resolved.pipeline.labels[n].name for n in sorted(resolved.pipeline.labels)]),
        epochs=resolved.pipeline.training.epochs,
        first_epoch=(checkpoint.epoch + 1) if checkpoint is not None else 1,
    )
    _note_start(records, resolved, chosen, checkpoint, begin.device, begin.processes)
    if checkpoint is not None and checkpoint.history:  # drop rows of epochs the checkpoint does not have
        records.write_csv(checkpoint.history)
        records.write_curves(checkpoint.history)
    stamps = _prepare(run_dir, resolved, chosen, begin.progress)
    begin.checkpoint, begin.records = checkpoint, records
    return _Started(resolved, chosen, None if checkpoint is None else checkpoint.epoch, stamps)


def _join_run(run_dir: Path, started: _Started) -> Checkpoint | None:
    """Another rank's part: check it sees the run folder, and read the checkpoint rank 0 resumes from."""
    if not (run_dir / "pipeline.yaml").is_file():
        raise ConfigError(
            f"{run_dir}: not visible from {socket.gethostname()} (no pipeline.yaml there); "
            "training on several nodes needs the run folder on a filesystem all of them share"
        )
    if started.resumed_epoch is None:
        return None
    checkpoint = load_checkpoint(run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT)
    if checkpoint.epoch != started.resumed_epoch:
        raise ConfigError(
            f"{run_dir}: rank 0 resumed after epoch {started.resumed_epoch} but this rank read a checkpoint "
            f"of epoch {checkpoint.epoch}; is another process writing into the run folder?"
        )
    return checkpoint


@contextlib.contextmanager
def lock_run_dir(run_dir: Path) -> Iterator[Path]:
    """Hold ``RUN_DIR/.lock`` while training; refuse a folder another live process trains into.

    The lock is an ``flock`` on the file, which the kernel drops when its process
    dies: a lock file left by a killed run does not block a ``--resume``. The file
    is removed on exit, and so is the folder when this created it and it stayed empty.
    (Without ``fcntl``, e.g. on Windows, nothing is locked.)

    Raises:
        ConfigError: ``run_dir`` is not a folder, or another process holds its lock.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: exists and is not a folder; choose a folder for the run")
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    handle = _acquire(path, run_dir)
    try:
        yield path
    finally:
        if handle is not None:
            path.unlink(missing_ok=True)  # while still holding it: nobody locks a file about to vanish
            os.close(handle)
        if created:
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # only when empty: a run that failed before writing anything


def _acquire(path: Path, run_dir: Path) -> int | None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        return None
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(handle, 200).decode(errors="replace").strip() or "unknown"
            os.close(handle)
            raise ConfigError(
                f"{run_dir}: another process ({holder}) is training into this folder; "
                "wait for it to end, or choose another output folder"
            ) from None
        except OSError as exc:  # a filesystem without locks (ENOLCK)
            os.close(handle)
            log.warning("%s: cannot be locked (%s); a second run into it would not be refused", path, exc)
            return None
        try:
            same = os.fstat(handle).st_ino == os.stat(path).st_ino
        except FileNotFoundError:  # its last holder removed it between our open and our lock
            same = False
        if same:
            break
        os.close(handle)
    os.ftruncate(handle, 0)
    os.write(handle, f"pid {os.getpid()} on {socket.gethostname()}".encode())
    return handle


def _check_options(epochs: int | None, time_limit_minutes: float | None, fold: Fold | None) -> None:
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise ConfigError(f"epochs must be a whole number of at least 1, got {epochs!r}")
    if time_limit_minutes is not None and not (
        isinstance(time_limit_minutes, (int, float))
        and not isinstance(time_limit_minutes, bool)
        and 0 < time_limit_minutes < float("inf")
    ):
        raise ConfigError(f"the time limit must be a positive number of minutes, got {time_limit_minutes!r}")
    if fold is not None and fold != "all" and (isinstance(fold, bool) or not isinstance(fold, int) or fold < 0):
        raise ConfigError(f"fold must be a fold number (0, 1, ...) or 'all', got {fold!r}")


def _open_run_dir(run_dir: Path, *, resume: bool) -> Checkpoint | None:
    """The checkpoint to continue from (None for a new run); refuses to overwrite a run."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: exists and is not a folder; choose a folder for the run")
    last = run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
    if not resume:
        found = [name for name in RUN_MARKERS if (run_dir / name).exists()]
        if found:
            raise ConfigError(
                f"{run_dir}: holds a training run already ({', '.join(found)}); resume it, "
                "or choose a new output folder"
            )
        return None
    if not last.is_file():
        log.info("%s: no checkpoint to resume from; starting the run", run_dir)
        return None
    return load_checkpoint(last)


def _resumed_fold(checkpoint: Checkpoint, fold: Fold | None) -> Fold:
    saved: Fold = checkpoint.fold if checkpoint.fold == "all" else int(checkpoint.fold)
    if fold is not None and fold != saved:
        raise ConfigError(
            f"cannot resume fold {fold!r}: this run trains fold {saved!r}; train another fold into a new folder"
        )
    return saved


def _choose_cases(run_dir: Path, resolved: ResolvedPipeline, fold: Fold) -> FoldCases:
    case_ids = [case.case_id for case in resolved.dataset.cases]
    if fold == "all":
        if not case_ids:
            raise ConfigError(f"{resolved.dataset.root}: the dataset has no training cases")
        return FoldCases("all", tuple(sorted(case_ids)), ())
    training = resolved.pipeline.training
    splits = load_or_make_splits(run_dir, case_ids, folds=training.folds, seed=training.seed)
    return select_fold(splits, fold)


def _write_run_files(run_dir: Path, resolved: ResolvedPipeline) -> None:
    import json

    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(run_dir / "pipeline.yaml", lambda tmp: tmp.write_text(resolved.text))
    if resolved.fingerprint is not None:
        text = json.dumps(resolved.fingerprint, indent=2) + "\n"
        write_atomically(run_dir / "fingerprint.json", lambda tmp: tmp.write_text(text))


def _note_start(
    records: RunRecords,
    resolved: ResolvedPipeline,
    chosen: FoldCases,
    checkpoint: Checkpoint | None,
    device: Any,
    processes: str,
) -> None:
    pipeline = resolved.pipeline
    where = f"resumed after epoch {checkpoint.epoch}" if checkpoint is not None else "started"
    records.note(
        f"{where}: {pipeline.name!r} ({pipeline.network.dimensions}D), fold {chosen.fold}, "
        f"{len(chosen.train)} training / {len(chosen.validation)} validation cases, "
        f"{pipeline.training.epochs} epochs x {pipeline.training.iterations_per_epoch} steps on {device}, "
        f"{processes}"
    )


def _loaders(resolved: ResolvedPipeline, chosen: FoldCases) -> dict[str, Any]:

    dataset = resolved.dataset
    return {
        case_id: functools.partial(load_case, dataset, dataset.case(case_id))
        for case_id in (*chosen.train, *chosen.validation)
    }


def _prepare(run_dir: Path, resolved: ResolvedPipeline, chosen: FoldCases, progress: Progress | None) -> dict[str, str]:
    """Fill the cache with the fold's cases (those not cached, or whose files changed); returns their stamps."""

    dataset = resolved.dataset
    loaders = _loaders(resolved, chosen)
    stamps = {}
    for case_id in loaders:
        case = dataset.case(case_id)
        stamps[case_id] = file_stamp([*case.images, case.label])
    cache = CaseCache(run_dir / CACHE_DIR, resolved.pipeline)
    stage = None if progress is None else functools.partial(progress, "prepare")
    workers = min(os.cpu_count() or 1, MAX_PREPARE_WORKERS) if len(loaders) >= MAX_PREPARE_WORKERS else 1
    cache.prepare_all(list(loaders.items()), workers=workers, progress=stage, stamps=stamps)
    return stamps


def _open_cases(
    run_dir: Path, resolved: ResolvedPipeline, chosen: FoldCases, stamps: Mapping[str, str]
) -> tuple[list[PreparedCase], list[PreparedCase]]:
    """The training and validation cases, memory-mapped from the cache (prepared here if missing)."""

    cache = CaseCache(run_dir / CACHE_DIR, resolved.pipeline)
    loaders = _loaders(resolved, chosen)

    def get(ids: Sequence[str]) -> list[PreparedCase]:
        return [cache.get(case_id, loaders[case_id], stamp=stamps.get(case_id)) for case_id in ids]

    return get(chosen.train), get(chosen.validation)


def _model_facts(
    resolved: ResolvedPipeline, chosen: FoldCases, outcome: Any, device: Any, group: Distributed
) -> Mapping[str, Any]:
    best_row = next((row for row in outcome.history if int(row["epoch"]) == outcome.best_epoch), {})
    return {
        "dataset": resolved.dataset.name,
        "dataset_path": str(resolved.dataset.root),
        "pipeline": resolved.pipeline.name,
        "fold": chosen.fold,
        "cases": {"train": list(chosen.train), "validation": list(chosen.validation)},
        "epochs_planned": resolved.pipeline.training.epochs,
        "epochs_run": outcome.epochs_done,
        "stopped": outcome.stopped,
        "best_epoch": outcome.best_epoch,
        "best_dice": _json_number(outcome.best_dice),
        "best_dice_per_label": {
            key.removeprefix("val_dice_"): _json_number(value)
            for key, value in best_row.items()
            if key.startswith("val_dice_") and key != "val_dice_mean"
        },
        "device": str(device),
        "processes": group.world_size,
    }


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)  # NaN -> null
