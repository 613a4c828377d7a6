"""nnU-Net v2 trained-model folders: ``<Dataset>/<Trainer>__<Plans>__<configuration>/`` (any trainer name).

They hold ``plans.json``, ``dataset.json`` and ``fold_*/checkpoint_final.pth`` or
``checkpoint_best.pth``; medseg rebuilds the network from the plans
(:mod:`medseg.models.nnunet`) and runs nnU-Net's preprocessing and sliding window
(:class:`~medseg.inference.nnunet.NnunetSegmenter`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medseg.errors import ModelError
from medseg.model_formats.base import ModelOptions
from medseg.models.info import ModelInfo, count_parameters, read_json

if TYPE_CHECKING:
    import torch

    from medseg.inference.engine import InferenceSettings

_FOLDER = re.compile(r"^(?P<trainer>[^_][^/]*?)__(?P<plans>[^/]+?)__(?P<configuration>[^/]+)$")
#: Channel names that are a modality.
MODALITIES = ("CT", "MR", "MRI", "PET")


class NnunetFormat:
    """An nnU-Net v2 trained-model folder."""

    name = "nnunet"
    title = "an nnU-Net v2 model"
    expects = "an nnU-Net v2 trained-model folder (plans.json, dataset.json, fold_*/checkpoint_final.pth)"

    def detect(self, path: Path) -> bool:
        """``plans.json`` and ``dataset.json`` side by side."""
        return (path / "plans.json").is_file() and (path / "dataset.json").is_file()

    def describe(self, path: Path, options: ModelOptions) -> ModelInfo:
        """Labels, channels, spacing and patch of the folder's configuration; the folds holding the checkpoint."""
        plans, dataset = read_json(path / "plans.json"), read_json(path / "dataset.json")
        match = _FOLDER.match(path.name)
        configuration = match["configuration"] if match else None
        configs = plans.get("configurations") or {}
        if configuration not in configs and len(configs) == 1:
            configuration = next(iter(configs))
        config = configs.get(configuration or "", {})
        folds, files = _folds(path, options.checkpoint)
        channels = [
            str(v)
            for _, v in sorted(
                (dataset.get("channel_names") or dataset.get("modality") or {}).items(), key=lambda item: int(item[0])
            )
        ]
        patch = config.get("patch_size")
        return ModelInfo(
            kind=self.name,
            title=self.title,
            path=str(path),
            name=str(plans.get("dataset_name") or dataset.get("name") or path.parent.name),
            labels=_labels(dataset),
            channels=channels,
            modality=channels[0] if channels and channels[0].upper() in MODALITIES else None,
            dimensions=len(patch) if patch else None,
            spacing=[float(v) for v in config["spacing"]] if config.get("spacing") else None,
            patch_size=[int(v) for v in patch] if patch else None,
            folds=folds,
            checkpoints=files,
            parameters=count_parameters(Path(files[0]), key="network_weights"),
            trainer=match["trainer"] if match else None,
            configuration=configuration,
            source={"plans": plans.get("plans_name"), "dataset": path.parent.name},
            runnable=True,
        )

    def check(self, path: Path, options: ModelOptions) -> None:
        """The folds asked for hold the checkpoint asked for."""
        from medseg.models.nnunet import chosen_folds  # torch: not needed to parse arguments

        chosen_folds(self.describe(path, options), options.folds)

    def load(
        self, path: Path, *, device: str | torch.device, settings: InferenceSettings, options: ModelOptions
    ) -> Any:
        """An :class:`~medseg.inference.nnunet.NnunetSegmenter` of the folds and orientation asked for."""
        from medseg.inference.nnunet import NnunetSegmenter  # torch and MONAI load here, not with the CLI

        info = self.describe(path, options)
        return NnunetSegmenter(
            info, device=device, settings=settings, folds=options.folds, orientation=options.orientation
        )


def _folds(folder: Path, checkpoint: str) -> tuple[list[int], list[str]]:
    """Fold numbers holding ``checkpoint_<checkpoint>.pth``, and those files."""
    folds, files = [], []
    name = f"checkpoint_{checkpoint}.pth"
    for fold_dir in sorted(folder.glob("fold_*")):
        if (fold_dir / name).is_file() and fold_dir.name[5:].isdigit():
            folds.append(int(fold_dir.name[5:]))
            files.append(str(fold_dir / name))
    if not folds:
        raise ModelError(f"{folder}: an nnU-Net model without any fold_*/{name}")
    return folds, files


def _labels(dataset: dict[str, Any]) -> dict[int, str]:
    """Label number -> name, background left out (regions: their first label)."""
    labels = {}
    for name, value in (dataset.get("labels") or {}).items():
        number = value[0] if isinstance(value, list) else value
        if int(number) > 0:
            labels[int(number)] = str(name)
    return dict(sorted(labels.items()))
