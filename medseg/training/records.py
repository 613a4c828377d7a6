"""What a run leaves to read: ``metrics.csv``, ``train.log``, ``curves.png`` and TensorBoard events.

Every epoch adds one row to the history: ``epoch``, ``train_loss``,
``pseudo_dice_mean`` (Dice of the training batches' predictions, nnU-Net's
pseudo-Dice: a free sign of learning, not a validation), ``val_dice_mean``,
``val_dice_<label name>`` per label (empty where the epoch did not validate),
``lr``, ``seconds`` (the epoch's wall time) and where it went:
``train_seconds`` (steps), ``data_seconds`` (drawing and augmenting patches)
and ``validation_seconds``. The CSV and the PNG are rewritten
from the whole history each epoch (atomically), so after a resume they show
exactly the epochs the checkpoint kept.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from medseg.io.files import write_atomically

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.csv"
LOG_FILE = "train.log"
CURVES_FILE = "curves.png"
TENSORBOARD_DIR = "tensorboard"

Row = Mapping[str, float]
#: Where an epoch's seconds went.
TIMING_COLUMNS = ("train_seconds", "data_seconds", "validation_seconds")


def dice_column(label_name: str) -> str:
    """The metrics column of one label's Dice, e.g. ``val_dice_liver``."""
    return f"val_dice_{label_name}"


def columns(label_names: Sequence[str]) -> list[str]:
    """The metrics columns, in order."""
    return [
        "epoch",
        "train_loss",
        "pseudo_dice_mean",
        "val_dice_mean",
        *(dice_column(n) for n in label_names),
        "lr",
        "seconds",
        *TIMING_COLUMNS,
    ]


def format_epoch(row: Row, *, epochs: int, label_names: Sequence[str]) -> str:
    """One line for an epoch, e.g. ``epoch 3/10  loss 0.5123  dice 0.812 (liver 0.901 ...)  lr 0.0081  4.1 s``."""
    parts = [f"epoch {int(row['epoch'])}/{epochs}", f"loss {row['train_loss']:.4f}"]
    pseudo = row.get("pseudo_dice_mean", math.nan)
    if not math.isnan(pseudo):
        parts.append(f"pseudo-dice {pseudo:.3f}")
    mean = row.get("val_dice_mean", math.nan)
    if not math.isnan(mean):
        per_label = " ".join(f"{name} {row.get(dice_column(name), math.nan):.3f}" for name in label_names)
        parts.append(f"dice {mean:.3f} ({per_label})")
    parts += [f"lr {row['lr']:.3g}", f"{row['seconds']:.1f} s{_split(row)}"]
    return "  ".join(parts)


def _split(row: Row) -> str:
    """`` (train 50.1, data 1.2, validation 4.0)`` where the row has the timing columns."""
    values = [row.get(name, math.nan) for name in TIMING_COLUMNS]
    if any(math.isnan(v) for v in values):
        return ""
    train, data, validation = values
    return f" (train {train:.1f}, data {data:.1f}, validation {validation:.1f})"


class RunRecords:
    """Writes a run's metrics, log, curves and TensorBoard events into ``run_dir``.

    Args:
        run_dir: the run's folder.
        label_names: the pipeline's label names, in label-number order.
        epochs: the run's epoch budget (for the log lines).
        first_epoch: the epoch this session starts with (1, or the one after a resumed checkpoint);
            TensorBoard events from that epoch on, left by an interrupted session, are dropped.
    """

    def __init__(self, run_dir: Path, *, label_names: Sequence[str], epochs: int, first_epoch: int = 1) -> None:
        self.run_dir = Path(run_dir)
        self.label_names = list(label_names)
        self.epochs = epochs
        self._first_epoch = first_epoch
        self._tensorboard: Any = None
        self._tensorboard_failed = False

    def note(self, message: str) -> None:
        """Append a dated line to ``train.log`` and log it."""
        log.info("%s", message)
        stamp = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S")
        with open(self.run_dir / LOG_FILE, "a", encoding="utf-8") as file:
            file.write(f"{stamp}  {message}\n")

    def epoch_done(self, history: Sequence[Row]) -> None:
        """Record the last row of ``history``: log line, CSV, curves and TensorBoard."""
        row = history[-1]
        self.note(format_epoch(row, epochs=self.epochs, label_names=self.label_names))
        self.write_csv(history)
        self.write_curves(history)
        self._add_scalars(row)

    def write_csv(self, history: Sequence[Row]) -> Path:
        """Rewrite ``metrics.csv`` from the whole history."""
        names = columns(self.label_names)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(names)
        for row in history:
            writer.writerow([_cell(name, row.get(name, math.nan)) for name in names])
        text = buffer.getvalue()
        return write_atomically(self.run_dir / METRICS_FILE, lambda tmp: tmp.write_text(text))

    def write_curves(self, history: Sequence[Row]) -> Path:
        """Draw training loss and validation Dice against epoch into ``curves.png``."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        figure = Figure(figsize=(10, 4), dpi=100, layout="constrained")
        FigureCanvasAgg(figure)
        loss_axes, dice_axes = figure.subplots(1, 2)
        epochs = [row["epoch"] for row in history]
        loss_axes.plot(epochs, [row["train_loss"] for row in history], color="tab:blue", label="training loss")
        loss_axes.set(xlabel="epoch", ylabel="loss", title="training loss")
        validated = [row for row in history if not math.isnan(row.get("val_dice_mean", math.nan))]
        if validated:
            x = [row["epoch"] for row in validated]
            dice_axes.plot(x, [row["val_dice_mean"] for row in validated], "k-", linewidth=2, label="mean")
            for name in self.label_names:
                dice_axes.plot(x, [row.get(dice_column(name), math.nan) for row in validated], linewidth=1, label=name)
            dice_axes.legend(loc="lower right", fontsize="small")
        dice_axes.set(xlabel="epoch", ylabel="Dice", title="validation Dice", ylim=(0, 1))
        for axes in (loss_axes, dice_axes):
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        for axes in (loss_axes, dice_axes):
            axes.grid(alpha=0.3)
        return write_atomically(self.run_dir / CURVES_FILE, lambda tmp: figure.savefig(tmp, format="png"))

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None

    def _add_scalars(self, row: Row) -> None:
        writer = self._writer()
        if writer is None:
            return
        step = int(row["epoch"])
        for name, value in row.items():
            if name not in ("epoch", "seconds") and not math.isnan(value):
                tag = "loss/train" if name == "train_loss" else name.replace("val_dice_", "dice/", 1)
                tag = f"time/{name}" if name in TIMING_COLUMNS else tag
                writer.add_scalar(tag, value, step)
        writer.flush()

    def _writer(self) -> Any:
        if self._tensorboard is None and not self._tensorboard_failed:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                self._tensorboard_failed = True
                log.warning("no TensorBoard events written (%s); pip install tensorboard", exc)
                return None
            purge = self._first_epoch if self._first_epoch > 1 else None
            self._tensorboard = SummaryWriter(str(self.run_dir / TENSORBOARD_DIR), purge_step=purge)
        return self._tensorboard


def _cell(name: str, value: float) -> str:
    if math.isnan(value):
        return ""
    if name == "epoch":
        return str(int(value))
    return repr(float(value))  # shortest text that reads back as the same float


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """Read a ``metrics.csv`` back: one dict per epoch, empty cells as NaN."""
    with open(path, newline="", encoding="utf-8") as file:
        return [{k: float(v) if v != "" else math.nan for k, v in row.items()} for row in csv.DictReader(file)]
