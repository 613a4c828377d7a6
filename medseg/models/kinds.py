"""What a model folder is, from its content: a medseg model, an nnU-Net v2 trained model, or a MONAI bundle.

:func:`describe_model` reads only the small files (and counts the weights without building a
network), so ``medseg model PATH`` answers quickly for any of them:

* **medseg**: ``model.json`` + ``pipeline.yaml`` + ``model.pt`` (``RUN_DIR/model``, or ``RUN_DIR``);
* **nnU-Net v2**: a trained-model folder ``<Dataset>/<Trainer>__<Plans>__<configuration>/`` holding
  ``plans.json``, ``dataset.json`` and ``fold_*/checkpoint_final.pth`` or ``checkpoint_best.pth``
  (any trainer name);
* **MONAI bundle**: a folder or ``.zip`` with ``configs/metadata.json`` and ``models/model.pt`` or
  ``models/model.ts``.

medseg runs its own models; the others are described (and named in a clear error where a command
needs a model it can run).
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from medseg.errors import ModelError

ModelKind = Literal["medseg", "nnunet", "monai-bundle"]
_NNUNET_FOLDER = re.compile(r"^(?P<trainer>[^_][^/]*?)__(?P<plans>[^/]+?)__(?P<configuration>[^/]+)$")


@dataclass(frozen=True)
class ModelInfo:
    """What a model is.

    Attributes:
        kind: ``medseg``, ``nnunet`` or ``monai-bundle``.
        path: the folder (or zip) it was read from.
        name: its name (medseg: the pipeline; nnU-Net: the dataset; bundle: its metadata's name).
        version: its version, where it records one.
        labels: label number -> name, background left out (nnU-Net regions: their first label).
        channels: the input channels, in order (name or modality).
        modality: CT, MR, ... where known.
        dimensions: 2 or 3, where known.
        spacing: voxel spacing it works at (mm), where known.
        patch_size: the sliding window, where known.
        folds: nnU-Net folds present (with the checkpoint asked for).
        checkpoints: the weight files.
        parameters: weights in all (of the first checkpoint), where they can be counted.
        trainer, configuration: nnU-Net's trainer class and configuration names.
        source: where it came from (training facts, the bundle's authors, ...).
        runnable: whether medseg can run it (a medseg model needs its weights).
    """

    kind: ModelKind
    path: str
    name: str
    version: str | None = None
    labels: dict[int, str] = field(default_factory=dict)
    channels: list[str] = field(default_factory=list)
    modality: str | None = None
    dimensions: int | None = None
    spacing: list[float] | None = None
    patch_size: list[int] | None = None
    folds: list[int] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    parameters: int | None = None
    trainer: str | None = None
    configuration: str | None = None
    source: dict[str, Any] = field(default_factory=dict)
    runnable: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (label numbers as strings)."""
        data = asdict(self)
        data["labels"] = {str(k): v for k, v in self.labels.items()}
        return data

    def describe(self) -> str:
        """One line: kind, name and the essentials."""
        what = {"medseg": "a medseg model", "nnunet": "an nnU-Net v2 model", "monai-bundle": "a MONAI bundle"}
        parts = [self.name]
        if self.configuration:
            parts.append(self.configuration)
        if self.folds:
            parts.append(f"fold{'s' if len(self.folds) > 1 else ''} {', '.join(map(str, self.folds))}")
        return f"{what[self.kind]} ({'; '.join(parts)})"


def describe_model(path: str | os.PathLike[str], *, checkpoint: str = "final") -> ModelInfo:
    """Identify and describe the model at ``path``.

    Args:
        path: a model folder, a medseg ``RUN_DIR``, an nnU-Net trained-model folder, or a MONAI
            bundle folder or ``.zip``.
        checkpoint: nnU-Net's ``final`` or ``best`` checkpoint (folds without it are left out).

    Raises:
        ModelError: nothing there, or a folder that is none of these kinds, or an nnU-Net folder
            without any fold holding the checkpoint; the message says what was expected.
    """
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no model there (a model folder, a training RUN_DIR, an nnU-Net or MONAI model)")
    if path.is_file() and zipfile.is_zipfile(path):
        return _bundle_zip(path)
    if not path.is_dir():
        raise ModelError(f"{path}: not a model folder or a MONAI bundle .zip")
    for folder in (path, path / "model"):
        if (folder / "model.json").is_file() and (folder / "pipeline.yaml").is_file():
            return _medseg(folder)
    if (path / "plans.json").is_file() and (path / "dataset.json").is_file():
        return _nnunet(path, checkpoint)
    if (path / "configs" / "metadata.json").is_file():
        return _bundle(path)
    raise ModelError(
        f"{path}: not a model medseg knows: expected a medseg model folder (model.json, pipeline.yaml, model.pt), "
        "an nnU-Net v2 trained-model folder (plans.json, dataset.json, fold_*/checkpoint_final.pth) or a MONAI "
        "bundle (configs/metadata.json, models/model.pt)"
    )


def model_kind(path: str | os.PathLike[str]) -> ModelKind:
    """The kind of model at ``path`` from the names of its files alone; anything unrecognised counts as medseg's."""
    path = Path(path)
    if path.is_file() and zipfile.is_zipfile(path):
        return "monai-bundle"
    if (path / "model.json").is_file() or (path / "model" / "model.json").is_file():
        return "medseg"
    if (path / "plans.json").is_file() and (path / "dataset.json").is_file():
        return "nnunet"
    if (path / "configs" / "metadata.json").is_file():
        return "monai-bundle"
    return "medseg"


# -- kinds ------------------------------------------------------------------------------------------


def _medseg(folder: Path) -> ModelInfo:
    from medseg.config import load_pipeline
    from medseg.errors import ConfigError

    metadata = _json(folder / "model.json")
    try:
        pipeline = load_pipeline(folder / "pipeline.yaml")
    except ConfigError as exc:
        raise ModelError(f"model folder {folder}: {exc}") from exc
    source = {
        k: metadata[k] for k in ("dataset", "created", "trained_by", "fold", "best_dice", "epochs_run") if k in metadata
    }
    weights = folder / "model.pt"
    return ModelInfo(
        kind="medseg",
        path=str(folder),
        name=pipeline.name,
        version=str(metadata.get("medseg_version")) if metadata.get("medseg_version") else None,
        labels={n: label.name for n, label in sorted(pipeline.labels.items())},
        channels=[c.name for c in pipeline.preprocessing.channels],
        modality=pipeline.modality,
        dimensions=pipeline.network.dimensions,
        spacing=[float(v) for v in pipeline.preprocessing.spacing],
        patch_size=[int(v) for v in pipeline.training.patch_size],
        checkpoints=[str(weights)] if weights.is_file() else [],
        parameters=_count_parameters(weights) if weights.is_file() else None,
        source=source,
        runnable=weights.is_file(),
    )


def _nnunet(folder: Path, checkpoint: str) -> ModelInfo:
    if checkpoint not in ("final", "best"):
        raise ModelError(f"--checkpoint takes final or best, got {checkpoint!r}")
    plans, dataset = _json(folder / "plans.json"), _json(folder / "dataset.json")
    match = _NNUNET_FOLDER.match(folder.name)
    configuration = match["configuration"] if match else None
    configs = plans.get("configurations") or {}
    if configuration not in configs and len(configs) == 1:
        configuration = next(iter(configs))
    config = configs.get(configuration or "", {})
    folds, files = [], []
    for fold_dir in sorted(folder.glob("fold_*")):
        name = f"checkpoint_{checkpoint}.pth"
        if (fold_dir / name).is_file() and fold_dir.name[5:].isdigit():
            folds.append(int(fold_dir.name[5:]))
            files.append(str(fold_dir / name))
    if not folds:
        raise ModelError(f"{folder}: an nnU-Net model without any fold_*/checkpoint_{checkpoint}.pth")
    labels = {}
    for name, value in (dataset.get("labels") or {}).items():
        number = value[0] if isinstance(value, list) else value
        if int(number) > 0:
            labels[int(number)] = str(name)
    channels = [
        str(v)
        for _, v in sorted(
            (dataset.get("channel_names") or dataset.get("modality") or {}).items(), key=lambda item: int(item[0])
        )
    ]
    patch = config.get("patch_size")
    return ModelInfo(
        kind="nnunet",
        path=str(folder),
        name=str(plans.get("dataset_name") or dataset.get("name") or folder.parent.name),
        labels=dict(sorted(labels.items())),
        channels=channels,
        modality=channels[0] if channels and channels[0].upper() in ("CT", "MR", "MRI", "PET") else None,
        dimensions=len(patch) if patch else None,
        spacing=[float(v) for v in config["spacing"]] if config.get("spacing") else None,
        patch_size=[int(v) for v in patch] if patch else None,
        folds=folds,
        checkpoints=files,
        parameters=_count_parameters(Path(files[0]), key="network_weights"),
        trainer=match["trainer"] if match else None,
        configuration=configuration,
        source={"plans": plans.get("plans_name"), "dataset": folder.parent.name},
        runnable=True,
    )


def _bundle(folder: Path) -> ModelInfo:
    metadata = _json(folder / "configs" / "metadata.json")
    weights = [p for p in (folder / "models" / "model.pt", folder / "models" / "model.ts") if p.is_file()]
    if not weights:
        raise ModelError(f"{folder}: a MONAI bundle without models/model.pt or models/model.ts")
    return _bundle_info(metadata, str(folder), [str(p) for p in weights], _count_parameters(weights[0]))


def _bundle_zip(path: Path) -> ModelInfo:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        meta = next((n for n in names if n.endswith("configs/metadata.json")), None)
        if meta is None:
            raise ModelError(f"{path}: a zip without configs/metadata.json, not a MONAI bundle")
        try:
            metadata = json.loads(archive.read(meta))
        except ValueError as exc:
            raise ModelError(f"{path}: {meta} is not JSON ({exc})") from exc
        weights = [n for n in names if n.endswith(("models/model.pt", "models/model.ts"))]
    if not weights:
        raise ModelError(f"{path}: a MONAI bundle without models/model.pt or models/model.ts")
    return _bundle_info(metadata, str(path), [f"{path}!{w}" for w in weights], None)


def _bundle_info(metadata: dict[str, Any], path: str, weights: list[str], parameters: int | None) -> ModelInfo:
    data = metadata.get("network_data_format") or {}
    image = (data.get("inputs") or {}).get("image") or {}
    pred = (data.get("outputs") or {}).get("pred") or {}
    labels = {
        int(k): str(v)
        for k, v in (pred.get("channel_def") or {}).items()
        if str(k).isdigit() and int(k) > 0 and str(v).lower() != "background"
    }
    channels = [str(v) for _, v in sorted((image.get("channel_def") or {}).items())]
    modality = str(image.get("modality")) if image.get("modality") else None
    spatial = image.get("spatial_shape")
    return ModelInfo(
        kind="monai-bundle",
        path=path,
        name=str(metadata.get("name") or Path(path).stem),
        version=str(metadata.get("version")) if metadata.get("version") else None,
        labels=dict(sorted(labels.items())),
        channels=channels,
        modality=modality,
        dimensions=len(spatial) if isinstance(spatial, list) else None,
        patch_size=[int(v) for v in spatial]
        if isinstance(spatial, list) and all(isinstance(v, int) for v in spatial)
        else None,
        checkpoints=weights,
        parameters=parameters,
        source={k: metadata[k] for k in ("authors", "copyright", "task", "description") if k in metadata},
        runnable=True,
    )


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return data


def _count_parameters(path: Path, *, key: str | None = None) -> int | None:
    """Weights in a checkpoint (a state dict, or ``checkpoint[key]``), memory-mapped; None when not countable."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - TorchScript archives, pickles needing other classes: not countable here
        if key is None:
            return None
        try:  # an nnU-Net checkpoint: numpy values in its training log need the full unpickler, as nnU-Net loads it
            state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        except Exception:  # noqa: BLE001
            return None
    if key is not None and isinstance(state, dict):
        state = state.get(key, state)
    if not isinstance(state, dict):
        return None
    seen, count = set(), 0
    for tensor in state.values():  # nnU-Net's decoder holds the encoder again: count shared tensors once
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
            if key not in seen:
                seen.add(key)
                count += tensor.numel()
    return count
