"""Checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint holds the network, optimiser, schedule and gradient-scaler states,
the number of finished epochs, the metrics history, the random generators'
states (Python, NumPy, torch) and the pipeline's YAML. It is written
atomically (to a temporary file, then renamed), so a run killed at any moment
leaves the previous checkpoint intact and loses at most the epoch in progress.

Everything is stored as tensors, numbers, strings, lists and dicts, so
checkpoints load with ``torch.load(weights_only=True)``: no pickled code runs.
"""

from __future__ import annotations

import logging
import pickle
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.errors import ModelError
from medseg.io.files import write_atomically

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


@dataclass
class Checkpoint:
    """The state of a run after ``epoch`` finished epochs.

    Attributes:
        epoch: epochs finished (1-based count; 0 before training).
        model: the network's ``state_dict``.
        optimizer, scheduler, scaler: their ``state_dict``s (scaler empty on CPU).
        history: one metrics row per finished epoch (see :mod:`medseg.training.records`).
        best_epoch, best_dice: the epoch with the highest mean validation Dice so far
            (0 and NaN before any validation).
        rng: the generators' states, from :func:`capture_rng`.
        pipeline_yaml: the run's pipeline, as YAML.
        fold: the fold trained (a number, or ``"all"``).
    """

    epoch: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any]
    history: list[dict[str, float]]
    best_epoch: int
    best_dice: float
    rng: dict[str, Any]
    pipeline_yaml: str
    fold: int | str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint as the plain dict that is saved."""
        return {"format": CHECKPOINT_FORMAT, **{name: getattr(self, name) for name in self.__dataclass_fields__}}


def save_checkpoint(checkpoint: Checkpoint, path: str | Path) -> Path:
    """Write ``checkpoint`` to ``path`` atomically."""
    data = checkpoint.to_dict()
    return write_atomically(path, lambda tmp: torch.save(data, tmp))


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors land on the CPU).

    Raises:
        ModelError: missing, unreadable or not a medseg checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no checkpoint there")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError) as exc:  # truncated or foreign
        raise ModelError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{path}: not a medseg checkpoint (format {CHECKPOINT_FORMAT})")
    fields = Checkpoint.__dataclass_fields__
    missing = [name for name in fields if name not in data and name != "extra"]
    if missing:
        raise ModelError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return Checkpoint(**{name: data[name] for name in fields if name in data})


def capture_rng() -> dict[str, Any]:
    """The states of Python's, NumPy's global and torch's (CPU and CUDA) generators."""
    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Put the generators back into the states :func:`capture_rng` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except RuntimeError as exc:  # e.g. resumed on a machine with fewer GPUs
            log.warning("CUDA random state not restored (%s); results may differ from an uninterrupted run", exc)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's global and torch's generators (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
