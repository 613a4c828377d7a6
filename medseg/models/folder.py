"""The model folder: a trained network with everything needed to use it, and nothing else.

::

    model/
      model.pt          the best epoch's weights (a state_dict; loads with weights_only=True)
      pipeline.yaml     the resolved pipeline (with the planner's comments when it was planned)
      labels.json       label number -> {"name", and "category", "type", "color" where the pipeline has them}
      fingerprint.json  the dataset fingerprint (when the pipeline was planned)
      model.json        versions, dataset, cases, fold, epochs, best epoch and Dice, channels,
                        classes, and the SHA-256 of model.pt

:func:`load_model` rebuilds the network from ``pipeline.yaml``, checks the weights
against ``model.json``'s hash and returns it ready for inference.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from medseg.config.loading import dump_pipeline, load_pipeline, parse_pipeline
from medseg.config.schema import Pipeline
from medseg.errors import ConfigError, ModelError
from medseg.io.files import write_atomically
from medseg.models.devices import resolve_device

MODEL_WEIGHTS = "model.pt"
MODEL_PIPELINE = "pipeline.yaml"
MODEL_LABELS = "labels.json"
MODEL_FINGERPRINT = "fingerprint.json"
MODEL_METADATA = "model.json"
MODEL_FORMAT = 1

log = logging.getLogger(__name__)


def export_model_folder(
    folder: str | os.PathLike[str],
    *,
    weights: Mapping[str, torch.Tensor],
    pipeline: Pipeline,
    metadata: Mapping[str, Any],
    pipeline_yaml: str | None = None,
    fingerprint: Mapping[str, Any] | None = None,
) -> Path:
    """Write a model folder (see the module docstring); each file is replaced atomically.

    Args:
        folder: the folder to write (created if needed).
        weights: the network's ``state_dict``.
        pipeline: the pipeline the network was trained with.
        metadata: the run's facts for ``model.json`` (dataset, cases, fold, epochs, best
            epoch and Dice, ...); versions, channels, classes, time and hash are added.
        pipeline_yaml: the pipeline's text (e.g. with the planner's comments) when it is
            ``pipeline`` as YAML; otherwise ``pipeline`` is written anew.
        fingerprint: the dataset fingerprint (``Fingerprint.to_dict()``), when planned.

    Returns:
        ``folder``.
    """
    import monai

    import medseg

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu() for name, tensor in weights.items()}
    write_atomically(folder / MODEL_WEIGHTS, lambda tmp: torch.save(state, tmp))
    yaml_text = (
        pipeline_yaml if pipeline_yaml is not None and _describes(pipeline_yaml, pipeline) else dump_pipeline(pipeline)
    )
    write_atomically(folder / MODEL_PIPELINE, lambda tmp: tmp.write_text(yaml_text))
    _write_json(folder / MODEL_LABELS, label_table(pipeline))
    if fingerprint is not None:
        _write_json(folder / MODEL_FINGERPRINT, dict(fingerprint))
    elif (folder / MODEL_FINGERPRINT).exists():
        (folder / MODEL_FINGERPRINT).unlink()
    facts = {
        "format": MODEL_FORMAT,
        "medseg_version": medseg.__version__,
        "torch_version": torch.__version__,
        "monai_version": monai.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **dict(metadata),
        "in_channels": len(pipeline.preprocessing.channels),
        "num_classes": pipeline.num_classes,
        "model_sha256": file_sha256(folder / MODEL_WEIGHTS),
    }
    _write_json(folder / MODEL_METADATA, facts)
    return folder


def model_folder(path: str | os.PathLike[str]) -> Path:
    """The model folder ``path`` names: itself, or a training run's ``RUN_DIR/model``."""
    path = Path(path)
    if not (path / MODEL_METADATA).is_file() and (path / "model" / MODEL_METADATA).is_file():
        return path / "model"
    return path


def require_model_folder(path: str | os.PathLike[str]) -> Path:
    """The model folder ``path`` names (see :func:`model_folder`).

    Raises:
        ModelError: there is no folder there, or it holds a model of another kind (nnU-Net, MONAI bundle).
    """
    folder = model_folder(path)
    foreign = (folder / "plans.json").is_file() or (folder / "configs" / "metadata.json").is_file()
    if (folder.is_file() and zipfile.is_zipfile(folder)) or (not (folder / MODEL_METADATA).is_file() and foreign):
        raise ModelError(
            f"{path}: another tool's model (nnU-Net or MONAI bundle), not a medseg model folder "
            "(medseg.model_formats.load_segmenter runs it; medseg model describes it)"
        )
    if not folder.is_dir():
        raise ModelError(f"{path}: no model folder there (a model folder, or the training run's RUN_DIR holding one)")
    return folder


def require_complete_model_folder(path: str | os.PathLike[str]) -> Path:
    """:func:`require_model_folder`, also refusing a folder without its weights, pipeline or ``model.json``.

    Raises:
        ModelError: no folder, a model of another kind, or a file missing (named).
    """
    folder = require_model_folder(path)
    for name in (MODEL_WEIGHTS, MODEL_PIPELINE, MODEL_METADATA):
        if not (folder / name).is_file():
            raise ModelError(f"{folder}: not a complete model folder, {name} is missing")
    return folder


def load_model(
    folder: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, Pipeline, dict[str, Any]]:
    """Load a model folder: the network (in eval mode, on ``device``), its pipeline and ``model.json``.

    Args:
        folder: a folder written by :func:`export_model_folder` (``RUN_DIR/model``), or the
            training run's folder ``RUN_DIR`` itself.
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` (CUDA when available) or a torch device.

    Raises:
        ModelError: a file is missing or damaged, the weights do not match their
            recorded hash, or do not fit the network the pipeline describes.
    """
    from medseg.models.networks import build_network, fast_cpu_norms  # MONAI: loaded when a network is built

    folder = require_complete_model_folder(folder)
    try:
        metadata = json.loads((folder / MODEL_METADATA).read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{folder / MODEL_METADATA}: unreadable ({exc})") from exc
    if not isinstance(metadata, dict):
        raise ModelError(f"{folder / MODEL_METADATA}: expected a JSON object")
    if metadata.get("format", MODEL_FORMAT) > MODEL_FORMAT:
        raise ModelError(f"{folder}: written by a newer medseg (model format {metadata['format']}); upgrade medseg")
    expected = metadata.get("model_sha256")
    if expected and file_sha256(folder / MODEL_WEIGHTS) != expected:
        raise ModelError(f"{folder / MODEL_WEIGHTS}: damaged or replaced (its SHA-256 differs from model.json's)")
    try:
        pipeline = load_pipeline(folder / MODEL_PIPELINE)
    except ConfigError as exc:
        raise ModelError(f"model folder {folder}: {exc}") from exc
    target = resolve_device(device)
    try:
        state = torch.load(folder / MODEL_WEIGHTS, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError) as exc:  # truncated or foreign
        raise ModelError(f"{folder / MODEL_WEIGHTS}: unreadable weights ({type(exc).__name__}: {exc})") from exc
    network = build_network(
        pipeline.network, in_channels=len(pipeline.preprocessing.channels), out_channels=pipeline.num_classes
    )
    try:
        network.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelError(f"{folder / MODEL_WEIGHTS}: the weights do not fit the pipeline's network ({first})") from exc
    if target.type == "cpu" and pipeline.network.dimensions == 2:  # measured: 7-9% faster in 2D, 4% slower in 3D
        fast_cpu_norms(network)
    return network.to(target).eval(), pipeline, metadata


@dataclass(frozen=True)
class OpenedModel:
    """A loaded model folder: the network, its pipeline, ``model.json``, and the training fingerprint if kept."""

    network: torch.nn.Module
    pipeline: Pipeline
    metadata: dict[str, Any]
    fingerprint: dict[str, Any] | None


def open_model(folder: str | os.PathLike[str], device: str | torch.device = "cpu") -> OpenedModel:
    """:func:`load_model`, and the training fingerprint beside the weights (None when absent or unreadable).

    Raises:
        ModelError: as :func:`load_model`.
    """
    network, pipeline, metadata = load_model(folder, device)
    fingerprint = None
    path = model_folder(folder) / MODEL_FINGERPRINT
    if path.is_file():
        try:
            fingerprint = json.loads(path.read_text())
        except (OSError, ValueError):
            log.warning("%s: unreadable; going on without the training fingerprint", path)
    return OpenedModel(network, pipeline, metadata, fingerprint)


def label_table(pipeline: Pipeline) -> dict[str, dict[str, Any]]:
    """Label number (as text) -> name and, where the pipeline gives them, codes and colour."""
    return {
        str(number): label.model_dump(mode="json", exclude_none=True)
        for number, label in sorted(pipeline.labels.items())
    }


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _describes(text: str | None, pipeline: Pipeline) -> bool:
    if text is None:
        return False
    try:
        return parse_pipeline(text) == pipeline
    except ConfigError:
        return False


def _write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2) + "\n"
    write_atomically(path, lambda tmp: tmp.write_text(text))
