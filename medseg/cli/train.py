"""``medseg train DATASET --output RUN_DIR``: train a U-Net, resumably, and export a model folder."""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HELP = "train a U-Net on a dataset (planned for it unless --pipeline is given) and export a model folder"


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "train",
        help=HELP,
        description=HELP + ". DATASET is an nnU-Net v2 raw folder, a Medical Segmentation Decathlon "
        "folder, or a CSV/JSON list of image/label files. RUN_DIR receives the pipeline, the folds "
        "(splits.json), a cache of prepared cases, checkpoints after every epoch, metrics.csv, "
        "curves.png, train.log, TensorBoard events, and the best epoch's model folder (RUN_DIR/model, "
        "for `medseg predict --model`). Interrupted runs continue with --resume and lose at most "
        "the epoch in progress. Several GPUs or nodes: start the same command with torchrun, e.g. "
        "`torchrun --nproc-per-node 4 -m medseg train DATASET -o RUN_DIR` (DistributedDataParallel, one "
        "process per GPU, each running every step of an epoch on its own patches; rank 0 writes RUN_DIR; "
        "see docs/training.md). SIGTERM (e.g. a job scheduler's time limit) ends training after the current "
        "step and exports the best model so far.",
    )
    parser.add_argument("dataset", type=Path, help="dataset folder or list file")
    parser.add_argument("--output", "-o", type=Path, required=True, metavar="RUN_DIR", help="the run folder")
    parser.add_argument(
        "--pipeline", default="auto", metavar="FILE|auto", help="pipeline YAML, or 'auto' to plan one (default)"
    )
    parser.add_argument("--epochs", type=int, default=None, help="epochs to train (default: the pipeline's)")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=None,
        metavar="MIN",
        help="end within this many minutes (plus a margin of about 30 s), validated and exported: validation "
        "is kept to a share of the time (training.validation_share) and training stops in time for a closing "
        "validation and the export",
    )
    parser.add_argument(
        "--fold",
        type=_fold,
        default=None,
        metavar="K|all",
        help="validate on fold K, train on the others (default 0; when resuming, the run's fold); "
        "'all' trains on every case without validation",
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="default: CUDA when available (under torchrun: GPU LOCAL_RANK, or the CPU with gloo)",
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its last checkpoint")
    parser.set_defaults(run=run)


def _fold(text: str) -> int | str:
    if text == "all":
        return "all"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fold number or 'all', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"fold numbers start at 0, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    from medseg.cli._render import stderr
    from medseg.errors import ConfigError
    from medseg.workflows.train import LOCK_FILE, TrainOptions, main_process, train

    if not args.dataset.exists():
        raise FileNotFoundError(f"{args.dataset}: no such file or folder")
    if args.pipeline != "auto" and not Path(args.pipeline).is_file():
        raise FileNotFoundError(f"{args.pipeline}: no such pipeline file (or pass --pipeline auto)")
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {args.epochs}")
    if args.time_limit is not None and not args.time_limit > 0:
        raise ConfigError(f"--time-limit must be a positive number of minutes, got {args.time_limit}")
    output: Path = args.output
    if output.exists() and not output.is_dir():
        raise ConfigError(f"{output}: exists and is not a folder")
    main = main_process()  # under torchrun, rank 0 checks the folder and prints; the others follow it
    if main and not args.resume and output.is_dir() and any(p.name != LOCK_FILE for p in output.iterdir()):
        raise ConfigError(f"{output}: not empty; add --resume to continue the run there, or choose a new folder")
    options = TrainOptions(
        pipeline=args.pipeline,
        epochs=args.epochs,
        time_limit_minutes=args.time_limit,
        fold=args.fold,
        device=args.device,
        resume=args.resume,
    )
    quiet = args.quiet or not main
    display = _Display(enabled=not quiet, bars=not quiet and sys.stderr.isatty())
    stop = threading.Event()
    try:
        with display, _sigterm_stops(stop):
            result = train(
                args.dataset,
                output,
                options,
                progress=display.progress,
                on_epoch=display.epoch,
                stop=stop,
            )
    except KeyboardInterrupt:
        if main and (output / "checkpoints" / "last.pt").exists():
            stderr.print(f"continue with: medseg train {args.dataset} --output {output} --resume", soft_wrap=True)
        raise
    if not quiet:
        dice = "no validation" if math.isnan(result.best_dice) else f"mean Dice {result.best_dice:.3f}"
        note = {"time limit": " (time limit)", "interrupted": " (stopped by SIGTERM)"}.get(result.stopped, "")
        stderr.print(
            f"trained {result.epochs} epoch(s){note}; best epoch {result.best_epoch}, {dice} -> {result.model_dir}",
            soft_wrap=True,
        )
        if result.stopped == "interrupted":
            stderr.print(f"continue with: medseg train {args.dataset} --output {output} --resume", soft_wrap=True)
    return 0


@contextmanager
def _sigterm_stops(stop: threading.Event) -> Iterator[None]:
    """SIGTERM (e.g. a job scheduler's time limit) ends training after the current step, model exported.

    A second SIGTERM interrupts at once, like Ctrl-C (the last finished epoch is kept for ``--resume``).
    """

    def interrupt(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not in the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Display:
    """Bars for preparation, epochs and the steps of the current epoch; one printed line per epoch."""

    def __init__(self, *, enabled: bool, bars: bool) -> None:
        self.enabled, self.bars = enabled, bars
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        self._epoch, self._epochs, self._loss = 1, 0, ""

    def __enter__(self) -> _Display:
        if self.bars:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            from medseg.cli._render import stderr

            columns = (TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            self._progress = Progress(*columns, console=stderr, transient=True)
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def progress(self, stage: str, done: int, total: int) -> None:
        if stage == "epoch":
            self._epoch, self._epochs = done + 1, total
            self._show("epoch", "epochs", done, total)
        elif stage == "train":
            self._show("train", f"epoch {min(self._epoch, self._epochs)}/{self._epochs}{self._loss}", done, total)
        else:
            self._show(stage, stage, done, total)

    def epoch(self, row: Mapping[str, float], line: str) -> None:
        self._loss = f"  loss {row['train_loss']:.4f}"
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.console.print(line, soft_wrap=True)
        else:
            from medseg.cli._render import stderr

            stderr.print(line, soft_wrap=True)

    def _show(self, key: str, description: str, done: int, total: int) -> None:
        if self._progress is None:
            return
        if key not in self._tasks:
            self._tasks[key] = self._progress.add_task(description, total=total)
        self._progress.update(self._tasks[key], description=description, completed=done, total=total)
