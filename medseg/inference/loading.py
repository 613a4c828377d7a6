"""Load any model medseg runs, by what its folder holds: medseg's own, nnU-Net v2, a MONAI bundle, or several.

:func:`load_segmenter` is what ``predict``, ``pacs segment``, ``listen`` and ``demo`` call with
``--model``; it returns a :class:`~medseg.inference.engine.Segmenter` for a medseg model, a
:class:`~medseg.inference.nnunet.NnunetSegmenter` or :class:`~medseg.inference.bundle.BundleSegmenter`
for the others, and a :class:`~medseg.inference.merge.MergedSegmenter` for several models.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from medseg.errors import ModelError
from medseg.inference.engine import InferenceSettings, Segmenter

ModelPath = str | os.PathLike[str]


@dataclass(frozen=True)
class ModelOptions:
    """How to load a model of another tool; medseg's own models ignore these.

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
        from medseg.errors import ConfigError

        if self.checkpoint not in ("final", "best"):
            raise ConfigError(f"checkpoint takes final or best, got {self.checkpoint!r}")
        if self.orientation not in (None, "stored", "ras"):
            raise ConfigError(f"orientation takes stored or ras, got {self.orientation!r}")
        if self.folds is not None and (not self.folds or any(f < 0 for f in self.folds)):
            raise ConfigError(f"folds must be fold numbers (0, 1, ...), got {self.folds!r}")


def load_segmenter(
    model: ModelPath | Sequence[ModelPath],
    *,
    device: str | torch.device = "auto",
    settings: InferenceSettings = InferenceSettings(),
    options: ModelOptions | None = None,
) -> Any:
    """The segmenter for the model (or models) at ``model``, loaded once.

    Args:
        model: a medseg model folder or RUN_DIR, an nnU-Net v2 trained-model folder, a MONAI bundle
            folder or ``.zip``; or a list of them, whose labels are merged into one map.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a torch device.
        settings: sliding-window overrides (medseg models; nnU-Net takes overlap and mirroring).
        options: nnU-Net folds, checkpoint and orientation.

    Raises:
        ModelError: not a model medseg knows, a missing fold or checkpoint, a package the model needs.
        ConfigError: an unknown device, or CUDA asked for without a GPU.
    """
    if not isinstance(model, (str, os.PathLike)):
        paths = list(model)
        if not paths:
            raise ModelError("no model given")
        if len(paths) > 1:
            from medseg.inference.merge import MergedSegmenter

            parts = [load_segmenter(p, device=device, settings=settings, options=options) for p in paths]
            return MergedSegmenter(parts)
        model = paths[0]
    from medseg.models.kinds import describe_model, model_kind

    options = options or ModelOptions()
    if model_kind(model) == "medseg":
        return Segmenter.from_folder(model, device=device, settings=settings)
    info = describe_model(model, checkpoint=options.checkpoint)
    if info.kind == "nnunet":
        from medseg.inference.nnunet import NnunetSegmenter

        return NnunetSegmenter(
            info, device=device, settings=settings, folds=options.folds, orientation=options.orientation
        )
    from medseg.inference.bundle import BundleSegmenter

    return BundleSegmenter(info, device=device, settings=settings)


def is_loaded(model: Any) -> bool:
    """Whether ``model`` is a loaded segmenter rather than a path (or list of paths) to load."""
    return not isinstance(model, (str, os.PathLike, list, tuple))


def check_models(model: ModelPath | Sequence[ModelPath], options: ModelOptions | None = None) -> None:
    """Fail fast, before any work, on a model that cannot be loaded: reads only the small files.

    Raises:
        ModelError: not a model, a fold asked for that is not there, an unusable medseg folder.
    """
    from medseg.models.folder import require_complete_model_folder
    from medseg.models.kinds import describe_model, model_kind

    options = options or ModelOptions()
    folds, checkpoint = options.folds, options.checkpoint
    paths = [model] if isinstance(model, (str, os.PathLike)) else list(model)
    for path in paths:
        if model_kind(path) == "medseg":
            require_complete_model_folder(path)
            continue
        info = describe_model(path, checkpoint=checkpoint)
        if info.kind == "nnunet":
            from medseg.models.nnunet import chosen_folds

            chosen_folds(info, folds)
