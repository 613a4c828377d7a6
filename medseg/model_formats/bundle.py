"""MONAI bundles: a folder or ``.zip`` with ``configs/metadata.json`` and ``models/model.pt`` or ``models/model.ts``.

medseg runs them with the bundle's own inference settings
(:class:`~medseg.inference.bundle.BundleSegmenter`), as ``monai.bundle run`` would.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medseg.errors import ModelError
from medseg.model_formats.base import ModelOptions
from medseg.models.info import ModelInfo, count_parameters, read_json

if TYPE_CHECKING:
    import torch

    from medseg.inference.engine import InferenceSettings

#: The weights a bundle may hold, in the order they are preferred.
WEIGHTS = ("models/model.pt", "models/model.ts")
#: What ``medseg model`` shows of a bundle's metadata.
SOURCE_KEYS = ("authors", "copyright", "task", "description")


class BundleFormat:
    """A MONAI bundle, as a folder or a ``.zip``."""

    name = "monai-bundle"
    title = "a MONAI bundle"
    expects = "a MONAI bundle folder or .zip (configs/metadata.json, models/model.pt)"

    def detect(self, path: Path) -> bool:
        """A zip file, or a folder with ``configs/metadata.json``."""
        return (path.is_file() and zipfile.is_zipfile(path)) or (path / "configs" / "metadata.json").is_file()

    def describe(self, path: Path, options: ModelOptions) -> ModelInfo:
        """The inputs, outputs and labels its metadata declares; its weights."""
        if path.is_file():
            return self._describe_zip(path)
        metadata = read_json(path / "configs" / "metadata.json")
        weights = [path / name for name in WEIGHTS if (path / name).is_file()]
        if not weights:
            raise ModelError(f"{path}: a MONAI bundle without {' or '.join(WEIGHTS)}")
        return self._info(metadata, str(path), [str(p) for p in weights], count_parameters(weights[0]))

    def check(self, path: Path, options: ModelOptions) -> None:
        """The metadata reads and the weights are there."""
        self.describe(path, options)

    def load(
        self, path: Path, *, device: str | torch.device, settings: InferenceSettings, options: ModelOptions
    ) -> Any:
        """A :class:`~medseg.inference.bundle.BundleSegmenter`."""
        from medseg.inference.bundle import BundleSegmenter  # torch and MONAI load here, not with the CLI

        return BundleSegmenter(self.describe(path, options), device=device, settings=settings)

    def _describe_zip(self, path: Path) -> ModelInfo:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            meta = next((n for n in names if n.endswith("configs/metadata.json")), None)
            if meta is None:
                raise ModelError(f"{path}: a zip without configs/metadata.json, not a MONAI bundle")
            try:
                metadata = json.loads(archive.read(meta))
            except ValueError as exc:
                raise ModelError(f"{path}: {meta} is not JSON ({exc})") from exc
            weights = [n for n in names if n.endswith(WEIGHTS)]
        if not weights:
            raise ModelError(f"{path}: a MONAI bundle without {' or '.join(WEIGHTS)}")
        return self._info(metadata, str(path), [f"{path}!{w}" for w in weights], None)

    def _info(self, metadata: dict[str, Any], path: str, weights: list[str], parameters: int | None) -> ModelInfo:
        data = metadata.get("network_data_format") or {}
        image = (data.get("inputs") or {}).get("image") or {}
        pred = (data.get("outputs") or {}).get("pred") or {}
        labels = {
            int(k): str(v)
            for k, v in (pred.get("channel_def") or {}).items()
            if str(k).isdigit() and int(k) > 0 and str(v).lower() != "background"
        }
        spatial = image.get("spatial_shape")
        return ModelInfo(
            kind=self.name,
            title=self.title,
            path=path,
            name=str(metadata.get("name") or Path(path).stem),
            version=str(metadata["version"]) if metadata.get("version") else None,
            labels=dict(sorted(labels.items())),
            channels=[str(v) for _, v in sorted((image.get("channel_def") or {}).items())],
            modality=str(image["modality"]) if image.get("modality") else None,
            dimensions=len(spatial) if isinstance(spatial, list) else None,
            patch_size=[int(v) for v in spatial]
            if isinstance(spatial, list) and all(isinstance(v, int) for v in spatial)
            else None,
            checkpoints=weights,
            parameters=parameters,
            source={k: metadata[k] for k in SOURCE_KEYS if k in metadata},
            runnable=True,
        )
