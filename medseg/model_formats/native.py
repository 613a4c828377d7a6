"""medseg's own models: ``model.json`` + ``pipeline.yaml`` + ``model.pt`` (``RUN_DIR/model``, or ``RUN_DIR``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from medseg.config import load_pipeline
from medseg.errors import ConfigError, ModelError
from medseg.model_formats.base import ModelOptions
from medseg.models.info import ModelInfo, count_parameters, read_json

if TYPE_CHECKING:
    import torch

    from medseg.inference.engine import InferenceSettings

#: The file that makes a folder a medseg model (``medseg.models.folder.MODEL_METADATA``, which loads torch).
MODEL_METADATA = "model.json"
#: The files by which a folder is recognised as a medseg model folder, complete or not.
MODEL_FILES = (MODEL_METADATA, "pipeline.yaml", "model.pt")
#: What ``medseg model`` shows of a model's training facts (``model.json``).
SOURCE_KEYS = ("dataset", "created", "trained_by", "fold", "best_dice", "epochs_run")


class MedsegFormat:
    """A model folder written by ``medseg train``, or the training run's folder holding it."""

    name = "medseg"
    title = "a medseg model"
    expects = "a medseg model folder (model.json, pipeline.yaml, model.pt) or the RUN_DIR of medseg train"

    def detect(self, path: Path) -> bool:
        """Any of a model folder's files (``model.json``, ``pipeline.yaml``, ``model.pt``) in ``path`` or ``path/model``.

        A folder holding some of them is an incomplete medseg model, and :meth:`check` names what it lacks.
        """
        return any((folder / name).is_file() for folder in (path, path / "model") for name in MODEL_FILES)

    def describe(self, path: Path, options: ModelOptions) -> ModelInfo:
        """The pipeline's labels, channels, spacing and patch, and the facts ``model.json`` records."""
        folder = path if any((path / name).is_file() for name in MODEL_FILES) else path / "model"
        metadata = read_json(folder / MODEL_METADATA)
        try:
            pipeline = load_pipeline(folder / "pipeline.yaml")
        except ConfigError as exc:
            raise ModelError(f"model folder {folder}: {exc}") from exc
        weights = folder / "model.pt"
        return ModelInfo(
            kind=self.name,
            title=self.title,
            path=str(folder),
            name=pipeline.name,
            version=str(metadata["medseg_version"]) if metadata.get("medseg_version") else None,
            labels={n: label.name for n, label in sorted(pipeline.labels.items())},
            channels=[c.name for c in pipeline.preprocessing.channels],
            modality=pipeline.modality,
            dimensions=pipeline.network.dimensions,
            spacing=[float(v) for v in pipeline.preprocessing.spacing],
            patch_size=[int(v) for v in pipeline.training.patch_size],
            checkpoints=[str(weights)] if weights.is_file() else [],
            parameters=count_parameters(weights) if weights.is_file() else None,
            source={k: metadata[k] for k in SOURCE_KEYS if k in metadata},
            runnable=weights.is_file(),
        )

    def check(self, path: Path, options: ModelOptions) -> None:
        """The folder holds its weights, pipeline and ``model.json``."""
        from medseg.models.folder import require_complete_model_folder  # torch: not needed to parse arguments

        require_complete_model_folder(path)

    def load(
        self, path: Path, *, device: str | torch.device, settings: InferenceSettings, options: ModelOptions
    ) -> Any:
        """A :class:`~medseg.inference.engine.Segmenter`."""
        from medseg.inference.engine import Segmenter  # torch and MONAI load here, not with the CLI

        return Segmenter.from_folder(path, device=device, settings=settings)
