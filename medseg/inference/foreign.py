"""What segmenters of models medseg did not train (nnU-Net v2, MONAI bundles) share.

They answer to the workflows as :class:`~medseg.inference.engine.Segmenter` does: ``facts``
(channels, modality) for the checks, ``segments``, ``model_identity`` and ``effective_settings``
for the outputs and ``run.json``, and :meth:`ForeignSegmenter.segment_with_confidence`, whose
labels lie on the scan's own grid, voxel for voxel. A subclass implements :meth:`_predict`:
labels and confidence as arrays on ``image``'s grid.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.errors import InputError
from medseg.inference.engine import InferenceSettings
from medseg.inference.guardrails import ModelFacts
from medseg.inference.window import Progress
from medseg.io.codes import known_codes
from medseg.models.devices import resolve_device
from medseg.models.info import ModelInfo
from medseg.volume import Segment, Volume, VolumeKind

log = logging.getLogger(__name__)


class ForeignSegmenter:
    """A model of another tool, described by ``info``, ready to segment scans.

    Args:
        info: what the model is (:func:`~medseg.model_formats.describe_model`).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a torch device.
        settings: overrides of the model's own inference settings, where the kind allows them.

    Attributes:
        overlap, batch_size, mirror_axes: the settings in effect, as the subclass resolves them.
    """

    fingerprint: dict[str, Any] | None = None

    def __init__(self, info: ModelInfo, *, device: str | torch.device = "auto", settings: InferenceSettings) -> None:

        self.info = info
        self.device = resolve_device(device)
        self.settings = settings
        self.metadata: dict[str, Any] = {"kind": info.kind, "path": info.path}
        self.overlap: float = 0.5
        self.batch_size: int = 1
        self.mirror_axes: tuple[int, ...] = ()
        self._sha256: str | None = None

    @property
    def facts(self) -> ModelFacts:
        """Input channels and modality, for :func:`~medseg.inference.guardrails.check_image`."""
        return ModelFacts(tuple(self.info.channels) or ("image",), self.info.modality)

    @property
    def segments(self) -> tuple[Segment, ...]:
        """The labels, by number, with SNOMED CT codes where the name is one medseg knows."""
        table = []
        for number, name in sorted(self.info.labels.items()):
            codes = known_codes(name)
            table.append(Segment(number, name, None, *(codes or (None, None))))
        return tuple(table)

    @property
    def num_classes(self) -> int:
        """Label values the map can hold, background included."""
        return max(self.info.labels, default=0) + 1

    @property
    def effective_settings(self) -> InferenceSettings:
        """The settings in effect (``tta`` is whether any axis is mirrored)."""
        return InferenceSettings(
            overlap=self.overlap, batch_size=self.batch_size, tta=bool(self.mirror_axes), postprocess=False
        )

    @property
    def model_identity(self) -> dict[str, Any]:
        """Name and version, as DICOM SEG/RTSTRUCT record the algorithm (``"nnunet+sha256:1a2b3c4d"``)."""
        if self._sha256 is None:
            digest = hashlib.sha256()
            for checkpoint in self.info.checkpoints:
                path = Path(checkpoint.split("!")[0])
                with path.open("rb") as handle:
                    for chunk in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(chunk)
            self._sha256 = digest.hexdigest()
        version = self.info.kind if not self.info.version else f"{self.info.kind}-{self.info.version}"
        return {
            "name": self.info.name[:64],
            "version": f"{version}+sha256:{self._sha256[:8]}"[:64],
            "sha256": self._sha256,
        }

    def segment(self, image: Volume, *, progress: Progress | None = None) -> Volume:
        """Segment one scan; the labels lie on ``image``'s grid, voxel for voxel."""
        return self.segment_with_confidence(image, progress=progress)[0]

    def segment_with_confidence(self, image: Volume, *, progress: Progress | None = None) -> tuple[Volume, np.ndarray]:
        """Labels on ``image``'s grid, and the winning class's probability x 255 (``uint8``) per voxel.

        Raises:
            InputError: a label map given as image, or the wrong number of channels.
        """
        if image.kind is VolumeKind.LABEL:
            raise InputError(f"{image.path or 'input'}: segment needs an image, got a label map")
        expected = len(self.facts.channels)
        if image.num_channels != expected:
            raise InputError(
                f"{image.path or 'input'}: the image has {image.num_channels} channel(s); {self.info.describe()} "
                f"takes {expected} ({', '.join(self.facts.channels)})"
            )
        labels, confidence = self._predict(image, progress)
        dtype = np.uint8 if self.num_classes <= 256 else np.uint16
        volume = image.with_array(labels.astype(dtype, copy=False), kind=VolumeKind.LABEL, segments=self.segments)
        return volume, confidence

    def _predict(self, image: Volume, progress: Progress | None) -> tuple[np.ndarray, np.ndarray]:
        """Labels ``(I, J, K)`` and confidence ``(I, J, K)`` (``uint8``) on ``image``'s grid."""
        raise NotImplementedError
