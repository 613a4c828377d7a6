"""The protocol every model format implements, and the options loading a model takes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from medseg.errors import ConfigError
from medseg.models.info import ModelInfo

if TYPE_CHECKING:  # torch and MONAI load with the segmenters, not with the CLI's argument parsing
    import torch

    from medseg.inference.engine import InferenceSettings

ModelPath = str | os.PathLike[str]


@dataclass(frozen=True)
class ModelOptions:
    """How to load a model; each format takes the options that concern it and ignores the others.

    Attributes:
        folds: nnU-Net folds to average (None: every fold present).
        checkpoint: nnU-Net's ``final`` or ``best`` checkpoint.
        orientation: nnU-Net: ``stored`` (the voxels as the scan stores them, as ``nnUNetv2_predict``),
            ``ras`` (reordered to the closest RAS axes, as TotalSegmentator feeds its models), or None
            (``ras`` for a TotalSegmentator dataset, else ``stored``).

    Raises:
        ConfigError: an unknown checkpoint or orientation, or a negative fold.
    """

    folds: tuple[int, ...] | None = None
    checkpoint: str = "final"
    orientation: str | None = None

    def __post_init__(self) -> None:
        if self.checkpoint not in ("final", "best"):
            raise ConfigError(f"checkpoint takes final or best, got {self.checkpoint!r}")
        if self.orientation not in (None, "stored", "ras"):
            raise ConfigError(f"orientation takes stored or ras, got {self.orientation!r}")
        if self.folds is not None and (not self.folds or any(f < 0 for f in self.folds)):
            raise ConfigError(f"folds must be fold numbers (0, 1, ...), got {self.folds!r}")


@runtime_checkable
class ModelFormat(Protocol):
    """One kind of model medseg runs: how to recognise it, describe it and load it.

    Attributes:
        name: the kind, as :attr:`ModelInfo.kind <medseg.models.info.ModelInfo.kind>` and ``run.json`` record it.
        title: what it is, in words, for messages (``"an nnU-Net v2 model"``).
        expects: what its folder or file holds, for the message naming what a path is not.
    """

    name: str
    title: str
    expects: str

    def detect(self, path: Path) -> bool:
        """Whether ``path`` is a model of this format, by the names of its files alone (nothing is read)."""
        ...

    def describe(self, path: Path, options: ModelOptions) -> ModelInfo:
        """What the model is, from its small files; raises :class:`~medseg.errors.ModelError` for a broken one."""
        ...

    def check(self, path: Path, options: ModelOptions) -> None:
        """Fail fast, before any work, on a model that cannot be loaded with ``options`` (small files only)."""
        ...

    def load(
        self, path: Path, *, device: str | torch.device, settings: InferenceSettings, options: ModelOptions
    ) -> Any:
        """The segmenter (:class:`~medseg.inference.engine.Segmenter` or one that answers as it does)."""
        ...
