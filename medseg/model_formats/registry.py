"""The one registry of model formats: what ``--model`` accepts, ``medseg model`` describes and ``doctor`` lists.

Built-in formats come first (medseg, nnU-Net v2, MONAI bundle); formats of other packages follow,
found through the ``medseg.model_formats`` entry point group (each entry names a class, or an
instance, implementing :class:`~medseg.model_formats.base.ModelFormat`), or registered in-process
with :func:`register_format`. The first format whose ``detect`` claims a path is the path's format.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medseg.errors import ModelError
from medseg.model_formats.base import ModelFormat, ModelOptions, ModelPath
from medseg.model_formats.bundle import BundleFormat
from medseg.model_formats.native import MedsegFormat
from medseg.model_formats.nnunet import NnunetFormat
from medseg.models.bundled import bundled_model_path
from medseg.models.info import ModelInfo

if TYPE_CHECKING:
    import torch

    from medseg.inference.engine import InferenceSettings

log = logging.getLogger(__name__)

#: The entry point group other packages register model formats in.
ENTRY_POINT_GROUP = "medseg.model_formats"
#: The name ``--model`` takes for the phantom model shipped with medseg.
BUNDLED = "bundled"

_BUILT_IN: tuple[ModelFormat, ...] = (MedsegFormat(), NnunetFormat(), BundleFormat())
_registered: list[ModelFormat] = []
_plugins: list[ModelFormat] | None = None
_plugin_problems: list[str] = []


def register_format(model_format: ModelFormat) -> None:
    """Add a format for this process (after the built-in and installed ones); a notebook's way to plug one in.

    Raises:
        ModelError: it does not implement the protocol, or its name is taken.
    """
    if not isinstance(model_format, ModelFormat):
        raise ModelError(
            f"{model_format!r} is not a model format (name, title, expects, detect, describe, check, load)"
        )
    if any(f.name == model_format.name for f in formats()):
        raise ModelError(f"a model format named {model_format.name!r} is registered already")
    _registered.append(model_format)


def formats() -> tuple[ModelFormat, ...]:
    """Every format, in the order paths are tried: built-in, installed (entry points), registered."""
    return (*_BUILT_IN, *_installed(), *_registered)


def plugin_problems() -> list[str]:
    """One line per installed format that could not be loaded (``medseg doctor`` shows them)."""
    _installed()
    return list(_plugin_problems)


def resolve_path(path: ModelPath) -> Path:
    """``path``, or for ``"bundled"`` (where no such file or folder exists) the phantom model shipped with medseg."""
    if str(path) == BUNDLED and not Path(path).exists():
        return bundled_model_path()
    return Path(path)


def format_of(path: ModelPath) -> ModelFormat:
    """The format of the model at ``path``, from the names of its files.

    Raises:
        ModelError: nothing there, or no format claims it; the message lists what each format expects.
    """
    path = Path(path)
    if not path.exists():
        raise ModelError(
            f"{path}: no model folder there (a model folder, or the training run's RUN_DIR holding one; an nnU-Net "
            "or MONAI model)"
        )
    for model_format in formats():
        if model_format.detect(path):
            return model_format
    expected = [f.expects for f in formats()]
    raise ModelError(f"{path}: not a model medseg knows: expected {', '.join(expected[:-1])} or {expected[-1]}")


def describe_model(path: ModelPath, options: ModelOptions | None = None) -> ModelInfo:
    """Identify and describe the model at ``path`` from its small files (``medseg model``).

    Raises:
        ModelError: not a model medseg knows, or a broken one; the message says what was expected.
    """
    return format_of(path).describe(Path(path), options or ModelOptions())


def check_models(model: ModelPath | Sequence[ModelPath], options: ModelOptions | None = None) -> None:
    """Fail fast, before any work, on a model that cannot be loaded: reads only the small files.

    Raises:
        ModelError: not a model, a fold asked for that is not there, an unusable model folder.
    """
    options = options or ModelOptions()
    for path in [model] if isinstance(model, (str, os.PathLike)) else list(model):
        format_of(path).check(Path(path), options)


def load_segmenter(
    model: ModelPath | Sequence[ModelPath],
    *,
    device: str | torch.device = "auto",
    settings: InferenceSettings | None = None,
    options: ModelOptions | None = None,
) -> Any:
    """The segmenter for the model (or models, their labels merged into one map) at ``model``, loaded once.

    Args:
        model: a path any format claims (:func:`formats`), or a list of them.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a torch device.
        settings: sliding-window overrides, where the format takes them (default: the model's own).
        options: the options of the formats that take them (nnU-Net folds, checkpoint and orientation).

    Raises:
        ModelError: not a model medseg knows, a missing fold or checkpoint, a package the model needs.
        ConfigError: an unknown device, or CUDA asked for without a GPU.
    """
    from medseg.inference.engine import InferenceSettings  # torch and MONAI load with the model

    settings = settings or InferenceSettings()
    options = options or ModelOptions()
    paths = [model] if isinstance(model, (str, os.PathLike)) else list(model)
    if not paths:
        raise ModelError("no model given")
    if len(paths) > 1:
        from medseg.inference.merge import MergedSegmenter  # torch: loaded with the models

        return MergedSegmenter([load_segmenter(p, device=device, settings=settings, options=options) for p in paths])
    path = Path(paths[0])
    return format_of(path).load(path, device=device, settings=settings, options=options)


def is_loaded(model: Any) -> bool:
    """Whether ``model`` is a loaded segmenter rather than a path (or list of paths) to load."""
    return not isinstance(model, (str, os.PathLike, list, tuple))


def _installed() -> list[ModelFormat]:
    """The formats other packages declare in :data:`ENTRY_POINT_GROUP`, loaded once a process."""
    global _plugins
    if _plugins is None:
        _plugins = []
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            try:
                loaded = entry.load()
                model_format = loaded() if isinstance(loaded, type) else loaded
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the built-in formats
                _plugin_problems.append(f"model format {entry.name} ({entry.value}): {type(exc).__name__}: {exc}")
                continue
            if not isinstance(model_format, ModelFormat):
                _plugin_problems.append(f"model format {entry.name} ({entry.value}): does not implement ModelFormat")
                continue
            _plugins.append(model_format)
        for problem in _plugin_problems:
            log.warning("%s", problem)
    return _plugins
