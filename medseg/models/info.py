"""What a model is (:class:`ModelInfo`), and the small readers the model formats describe models with.

Each model format (:mod:`medseg.model_formats`) fills a :class:`ModelInfo` from the small files
of a model (and counts the weights without building a network), so ``medseg model PATH`` answers
quickly for any of them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medseg.errors import ModelError


@dataclass(frozen=True)
class ModelInfo:
    """What a model is.

    Attributes:
        kind: the name of its format (:mod:`medseg.model_formats`): ``medseg``, ``nnunet``, ``monai-bundle``...
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
        title: what it is, in words (``"an nnU-Net v2 model"``); the kind where empty.
    """

    kind: str
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
    title: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (label numbers as strings)."""
        data = asdict(self)
        data["labels"] = {str(k): v for k, v in self.labels.items()}
        return data

    def describe(self) -> str:
        """One line: kind, name and the essentials."""
        parts = [self.name]
        if self.configuration:
            parts.append(self.configuration)
        if self.folds:
            parts.append(f"fold{'s' if len(self.folds) > 1 else ''} {', '.join(map(str, self.folds))}")
        return f"{self.title or self.kind} ({'; '.join(parts)})"


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return data


def count_parameters(path: Path, *, key: str | None = None) -> int | None:
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
