"""Segment a scan with a trained model and put the labels on the scan's own grid.

:meth:`Segmenter.segment` does, for one image:

1. With ``preprocessing.orientation: LPS``, the scan is put in the canonical voxel order
   (:func:`~medseg.orientation.to_canonical`, axes permuted and flipped, no interpolation);
   the labels are put back in the stored order at the end, so they lie on the scan's grid.
   :func:`~medseg.transforms.prepare.prepare_case` without a label: crop to the
   non-zero box or a CT's body (when the pipeline says so), resample to the pipeline's spacing
   on a grid that keeps the scan's origin and axes, normalise.
2. The streaming sliding window (:class:`~medseg.inference.window.SlidingWindow`)
   hands out final class scores band by band along the stream axis.
3. As soon as the prepared rows that a block of the scan's rows needs are final,
   their class scores are resampled **linearly** onto those scan rows
   (:func:`~medseg.transforms.resample.resample`, on the band's and the block's
   sub-grids), the argmax is taken there and written as ``uint8`` labels; the
   scores are then dropped. Scan rows outside the prepared grid (cut away by
   ``crop_to_nonzero`` or ``crop_to_body``) stay background. The result equals (up to exact ties)
   ``argmax(restore_to_source(full class scores, order="linear"))``, but peak
   memory is about one patch-deep band of class scores on the prepared grid plus
   one block of class scores on the scan's grid, never class scores x voxels.
4. Post-processing as the pipeline lists it (:mod:`~medseg.inference.postprocess`).

Settings: the pipeline's ``inference`` section, except that on the CPU the
defaults favour speed (:data:`CPU_OVERLAP`, no mirroring) where the measured
Dice cost is small (``docs/inference.md``); :class:`InferenceSettings` overrides both.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medseg.config.schema import Pipeline
from medseg.errors import ConfigError, GeometryError, InputError
from medseg.geometry import Geometry
from medseg.inference.guardrails import ModelFacts
from medseg.inference.postprocess import postprocess
from medseg.inference.window import Progress, ScoreBand, SlidingWindow, cpu_window_batch
from medseg.models.devices import resolve_device
from medseg.models.folder import open_model
from medseg.orientation import to_canonical
from medseg.transforms.prepare import prepare_case
from medseg.transforms.resample import index_mapping, resample
from medseg.volume import Segment, Volume, VolumeKind

log = logging.getLogger(__name__)

#: Window overlap on the CPU unless asked otherwise (the pipeline's, when smaller).
CPU_OVERLAP = 0.25
#: Mirror test-time augmentation on the CPU unless asked otherwise.
CPU_TTA = False
#: Class scores (elements) resampled onto the scan's grid at once: bounds that step's memory (4 MB and its temporaries).
BLOCK_ELEMENTS = 1 << 20
#: Band accumulators stay on the GPU when they take at most this fraction of its free memory.
GPU_BAND_FRACTION = 0.25
#: Positions this close to a whole index count as that index (as in medseg.transforms.resample).
_SNAP = 1e-6


@dataclass(frozen=True)
class InferenceSettings:
    """Overrides of the pipeline's sliding-window settings; None keeps the default.

    Attributes:
        overlap: window overlap, ``0 <= overlap < 1``; default: the pipeline's on CUDA,
            at most :data:`CPU_OVERLAP` on the CPU.
        batch_size: windows per forward pass; default: the pipeline's, on the CPU raised
            for small windows (:func:`medseg.inference.window.cpu_window_batch`).
        tta: mirror test-time augmentation over the pipeline's ``mirror_axes``; default:
            on for CUDA, off on the CPU.
        postprocess: apply the pipeline's post-processing.

    Raises:
        ConfigError: an overlap or batch size out of range.
    """

    overlap: float | None = None
    batch_size: int | None = None
    tta: bool | None = None
    postprocess: bool = True

    def __post_init__(self) -> None:
        if self.overlap is not None and not (
            isinstance(self.overlap, (int, float)) and not isinstance(self.overlap, bool) and 0 <= self.overlap < 1
        ):
            raise ConfigError(f"inference overlap must be at least 0 and below 1, got {self.overlap!r}")
        if self.batch_size is not None and (
            isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1
        ):
            raise ConfigError(f"inference batch size must be a whole number of at least 1, got {self.batch_size!r}")


def segments_of(pipeline: Pipeline) -> tuple[Segment, ...]:
    """The segment table of a pipeline's labels: number, name, colour and codes, by number."""
    return tuple(
        Segment(number, label.name, label.color, label.category, label.type)
        for number, label in sorted(pipeline.labels.items())
    )


class Segmenter:
    """A trained network with its pipeline, ready to segment scans.

    Args:
        network: the network (put in eval mode and moved to ``device``).
        pipeline: the pipeline it was trained with.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a torch device.
        settings: overrides of the pipeline's inference settings.
        metadata: the model folder's ``model.json`` facts, when known.
        fingerprint: the model folder's ``fingerprint.json`` (training spacings, ...), when it has one.

    Attributes:
        overlap, batch_size, mirror_axes: the settings in effect (defaults resolved).

    Raises:
        ConfigError: an unknown device, or CUDA asked for without a GPU.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        pipeline: Pipeline,
        *,
        device: str | torch.device = "auto",
        settings: InferenceSettings = InferenceSettings(),
        metadata: dict[str, Any] | None = None,
        fingerprint: dict[str, Any] | None = None,
    ) -> None:

        self.device = resolve_device(device)
        self.network = network.to(self.device).eval()
        self.pipeline = pipeline
        self.settings = settings
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.fingerprint: dict[str, Any] | None = fingerprint
        on_cuda = self.device.type == "cuda"
        inference = pipeline.inference
        if settings.overlap is not None:
            self.overlap = float(settings.overlap)
        else:
            self.overlap = inference.overlap if on_cuda else min(inference.overlap, CPU_OVERLAP)
        self.batch_size = settings.batch_size or (
            inference.batch_size if on_cuda else cpu_window_batch(pipeline.training.patch_size, inference.batch_size)
        )
        tta = settings.tta if settings.tta is not None else (on_cuda or CPU_TTA)
        self.mirror_axes: tuple[int, ...] = tuple(inference.mirror_axes) if tta else ()

    @classmethod
    def from_folder(
        cls,
        model_dir: str | os.PathLike[str],
        *,
        device: str | torch.device = "auto",
        settings: InferenceSettings = InferenceSettings(),
    ) -> Segmenter:
        """Load a model folder (:func:`~medseg.models.folder.open_model`) once.

        Raises:
            ModelError: the folder is missing, incomplete or damaged.
            ConfigError: an unknown device, or CUDA asked for without a GPU.
        """

        opened = open_model(model_dir, device=device)
        return cls(
            opened.network,
            opened.pipeline,
            device=device,
            settings=settings,
            metadata=opened.metadata,
            fingerprint=opened.fingerprint,
        )

    @property
    def effective_settings(self) -> InferenceSettings:
        """The settings in effect, defaults resolved (``tta`` is whether any axis is mirrored)."""
        return InferenceSettings(
            overlap=self.overlap,
            batch_size=self.batch_size,
            tta=bool(self.mirror_axes),
            postprocess=self.settings.postprocess,
        )

    @property
    def model_identity(self) -> dict[str, Any]:
        """Name and version of the model, as DICOM SEG/RTSTRUCT record the algorithm.

        ``name`` is the pipeline's name, ``version`` medseg's version with a short hash
        of the weights (``"0.1.0+sha256:1a2b3c4d"``); ``sha256`` is the full hash, when known.
        """
        import medseg

        sha = self.metadata.get("model_sha256")
        version = str(self.metadata.get("medseg_version") or medseg.__version__)
        return {
            "name": self.pipeline.name[:64],
            "version": (f"{version}+sha256:{sha[:8]}" if sha else version)[:64],
            "sha256": sha,
        }

    @property
    def num_classes(self) -> int:
        """Output classes, background included."""
        return self.pipeline.num_classes

    @property
    def facts(self) -> ModelFacts:
        """Input channels and modality, for :func:`~medseg.inference.guardrails.check_image`."""
        return ModelFacts.of(self.pipeline)

    @property
    def segments(self) -> tuple[Segment, ...]:
        """The labels, by number, with their names, colours and codes."""
        return segments_of(self.pipeline)

    def window(self, shape: tuple[int, int, int] | None = None) -> SlidingWindow:
        """The sliding window with this segmenter's settings; accumulating on the GPU when the band fits there."""
        window = SlidingWindow(
            self.network,
            roi=self.pipeline.training.patch_size,
            overlap=self.overlap,
            batch_size=self.batch_size,
            device=self.device,
            mirror_axes=self.mirror_axes,
            accumulate_on=torch.device("cpu"),
        )
        if self.device.type == "cuda" and shape is not None:
            free, _ = torch.cuda.mem_get_info(self.device)
            if window.band_bytes(shape, self.num_classes) <= GPU_BAND_FRACTION * free:
                window.accumulate_on = self.device
        return window

    def segment(self, image: Volume, *, progress: Progress | None = None) -> Volume:
        """Segment one scan; the labels lie on ``image``'s grid, voxel for voxel.

        Args:
            image: the scan, with one channel per ``preprocessing.channels`` entry.
            progress: ``(windows done, windows in all)`` as the sliding window advances.

        Returns:
            A label volume (``uint8``; ``uint16`` past 255 labels) derived from ``image``
            (same geometry and source), with the pipeline's segments.

        Raises:
            InputError: a label map given as image, or the wrong number of channels.
        """
        return self._segment(image, progress, None)

    def segment_with_confidence(self, image: Volume, *, progress: Progress | None = None) -> tuple[Volume, np.ndarray]:
        """:meth:`segment`, and the model's confidence in each voxel's label from the same pass.

        Returns:
            The label volume and a ``uint8`` ``(I, J, K)`` map on the same grid: the winning class's
            softmax probability x 255 (rounded), taken from the same class scores as the argmax. Voxels the
            network never saw (cropped away as air or zero) count as certain background (255).
        """
        confidence = np.full(image.spatial_shape, 255, dtype=np.uint8)
        return self._segment(image, progress, confidence), confidence

    def _segment(self, image: Volume, progress: Progress | None, confidence: np.ndarray | None) -> Volume:
        if image.kind is VolumeKind.LABEL:
            raise InputError(f"{image.path or 'input'}: segment needs an image, got a label map")
        started = time.monotonic()
        # A pipeline trained in one orientation sees the scan in it; the labels go back to the stored order exactly.
        oriented, order = to_canonical(image) if self.pipeline.preprocessing.orientation != "stored" else (image, None)
        prepared = prepare_case(oriented, None, self.pipeline, case_id=image.path or "")
        window = self.window(prepared.spatial_shape)
        dtype = np.uint8 if self.num_classes <= 256 else np.uint16
        labels = np.zeros(oriented.spatial_shape, dtype=dtype)
        turned = confidence if order is None or confidence is None else order.apply(confidence)
        restorer = _Restorer(prepared.geometry, oriented.geometry, axis=window.axis, classes=self.num_classes)
        restorer.run(window.stream(prepared.image, progress=progress), labels, turned)
        del prepared
        if order is not None and not order.is_identity:
            labels = np.ascontiguousarray(order.undo(labels))
        if self.settings.postprocess:
            postprocess(labels, self.pipeline.inference.postprocessing, voxel_volume_ml=image.geometry.voxel_volume_ml)
        log.debug(
            "segmented %s on %s: %.1f s (overlap %s, mirror axes %s)",
            list(image.spatial_shape),
            self.device,
            time.monotonic() - started,
            self.overlap,
            list(self.mirror_axes),
        )
        return image.with_array(labels, kind=VolumeKind.LABEL, segments=segments_of(self.pipeline))

    def segment_prepared(self, image: np.ndarray, *, progress: Progress | None = None) -> np.ndarray:
        """Labels ``(I, J, K)`` for a prepared ``(C, I, J, K)`` image, on the prepared grid (no post-processing)."""
        shape = tuple(int(n) for n in np.shape(image)[1:])
        window = self.window(shape)  # type: ignore[arg-type]
        dtype = np.uint8 if self.num_classes <= 256 else np.uint16
        labels = np.empty(shape, dtype=dtype)
        for band in window.stream(image, progress=progress):
            rows = [slice(None)] * 3
            rows[band.axis] = slice(band.start, band.stop)
            labels[tuple(rows)] = band.scores.argmax(0)  # numpy: far faster than torch's argmax over the first axis
        return labels


class _Restorer:
    """Takes final score bands on the prepared grid and writes argmax labels on the scan's grid, block by block.

    The prepared grid shares the scan's axes (a scaling and a shift per axis), so a
    block of scan rows along the stream axis needs only a band of prepared rows: those
    around ``p = scale * r + shift`` for each of its rows ``r`` (linear interpolation
    takes the two neighbours; one more on each side keeps edge handling exact).
    """

    def __init__(self, prepared: Geometry, source: Geometry, *, axis: int, classes: int) -> None:
        mapping = index_mapping(prepared, source)  # scan index -> prepared index
        linear = mapping[:3, :3]
        if not np.allclose(linear - np.diag(np.diag(linear)), 0.0, atol=1e-9) or linear[axis, axis] <= 0:
            raise GeometryError(
                f"the prepared grid {prepared!r} does not share the scan's axes {source!r}; cannot restore by bands"
            )
        self.prepared, self.source, self.axis, self.classes = prepared, source, axis, classes
        count = source.shape[axis]
        positions = linear[axis, axis] * np.arange(count, dtype=np.float64) + mapping[axis, 3]
        nearest = np.rint(positions)
        self.positions = np.where(np.abs(positions - nearest) < _SNAP, nearest, positions)
        size = prepared.shape[axis]
        inside = np.flatnonzero((self.positions >= -0.5 - _SNAP) & (self.positions <= size - 0.5 + _SNAP))
        others = math.prod(n for a, n in enumerate(source.shape) if a != axis)
        step = max(1, BLOCK_ELEMENTS // max(1, classes * others))
        self.blocks = (
            [(r, min(r + step, int(inside[-1]) + 1)) for r in range(int(inside[0]), int(inside[-1]) + 1, step)]
            if inside.size
            else []
        )

    def needed(self, block: tuple[int, int]) -> tuple[int, int]:
        """Prepared rows ``(lo, hi)`` (hi exclusive) that scan rows ``block`` interpolate from."""
        size = self.prepared.shape[self.axis]
        lo = int(np.floor(self.positions[block[0]])) - 1
        hi = int(np.floor(self.positions[block[1] - 1])) + 3
        return max(0, min(lo, size - 1)), max(1, min(hi, size))

    def run(self, bands: Iterator[ScoreBand], labels: np.ndarray, confidence: np.ndarray | None = None) -> None:
        """Consume every band (the window stream must run to its end) and fill ``labels`` block by block
        (and ``confidence``, when given, with the winning class's softmax probability x 255)."""
        pending: list[ScoreBand] = []
        blocks = iter(self.blocks)
        block = next(blocks, None)
        for band in bands:
            pending.append(band)
            while block is not None:
                lo, hi = self.needed(block)
                if pending[-1].stop < hi:
                    break
                self._write(block, self._rows(pending, lo, hi), lo, labels, confidence)
                block = next(blocks, None)
                keep = self.needed(block)[0] if block is not None else self.prepared.shape[self.axis]
                pending = [b for b in pending if b.stop > keep]
        if block is not None:
            raise GeometryError(f"the sliding window ended before covering the prepared grid {self.prepared!r}")

    def _rows(self, pending: list[ScoreBand], lo: int, hi: int) -> np.ndarray:
        pieces = []
        for band in pending:
            a, b = max(lo, band.start), min(hi, band.stop)
            if a < b:
                index = [slice(None)] * 4
                index[1 + self.axis] = slice(a - band.start, b - band.start)
                pieces.append(band.scores[tuple(index)])
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=1 + self.axis)

    def _write(
        self, block: tuple[int, int], scores: np.ndarray, lo: int, labels: np.ndarray, confidence: np.ndarray | None
    ) -> None:
        band_grid = _cut(self.prepared, self.axis, lo, scores.shape[1 + self.axis])
        block_grid = _cut(self.source, self.axis, block[0], block[1] - block[0])
        values = resample(np.ascontiguousarray(scores), band_grid, block_grid, order="linear", fill=0.0)
        rows = [slice(None)] * 3
        rows[self.axis] = slice(*block)
        labels[tuple(rows)] = values.argmax(0)
        if confidence is not None:
            unseen = ~values.any(axis=0)  # off the prepared grid (cropped away): no scores, certain background
            # softmax of the winner: 1 / sum(exp(score - best)), in place on the block's scores
            values -= values.max(0)
            np.exp(values, out=values)
            winner = np.rint(255.0 / values.sum(0)).astype(np.uint8)
            winner[unseen] = 255
            confidence[tuple(rows)] = winner


def _cut(geometry: Geometry, axis: int, start: int, count: int) -> Geometry:
    """Rows ``start .. start + count - 1`` of ``geometry`` along ``axis``, as a grid of their own."""
    affine = geometry.affine_lps
    offset = np.zeros(3)
    offset[axis] = start
    affine[:3, 3] = geometry.index_to_physical(offset)
    shape = list(geometry.shape)
    shape[axis] = count
    return Geometry(shape, affine, geometry.frame_of_reference_uid)
