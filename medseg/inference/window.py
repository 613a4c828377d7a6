"""A streaming sliding window: class scores of a whole volume, one band of rows at a time.

The window positions and the Gaussian weights are MONAI's
(:func:`monai.data.utils.dense_patch_slices` on the scan interval that
:func:`monai.inferers.sliding_window_inference` uses, and
:func:`monai.data.utils.compute_importance_map`), so the result is the same as
``sliding_window_inference(..., mode="gaussian")``. What differs is memory: the
windows are run in order of their start along one *stream axis* (``i`` for a 3D
network, ``k`` for a 2D one), and weighted scores are accumulated only for the
band of rows that windows still touch, one patch deep, in a ring buffer. Once
every window that covers a row is done, the row is final: it is divided by its
summed weights, handed to the caller (:class:`ScoreBand`) and its buffer reused.
The whole volume's class scores never exist at once.

A 2D network runs through the same machinery with a window one voxel deep
along ``k``; its forward batches then hold several slices.

Mirror test-time augmentation averages the network's outputs over every
combination of flips of the mirror axes (``2 ** len(axes)`` passes, as nnU-Net).
On CUDA the forward passes run under float16 autocast; accumulation is float32.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.data.utils import compute_importance_map, dense_patch_slices

from medseg.errors import ConfigError, ModelError
from medseg.models.devices import autocast

Progress = Callable[[int, int], None]

#: A 2D network's forward batch holds this many windows (slices) per unit of ``batch_size``.
SLICES_PER_BATCH = 16
#: Final class scores handed out at once (elements, 4 MB): the caller holds few rows beyond the band.
EMIT_ELEMENTS = 1 << 20
#: MONAI's default Gaussian width: sigma = 0.125 x window size.
SIGMA_SCALE = 0.125
#: On the CPU, a 3D network's forward batch holds windows up to this many voxels in all, and at
#: most :data:`CPU_MAX_BATCH` of them: small windows one at a time leave the cores idle (a CPU plan's
#: 32 x 32 x 16 windows: 3.2x faster four at a time, the same scores).
CPU_BATCH_VOXELS = 64**3
CPU_MAX_BATCH = 4


def slices_per_batch(roi: Sequence[int], device: torch.device) -> int:
    """Slices a 2D network's forward pass holds per unit of batch size on ``device``.

    :data:`SLICES_PER_BATCH` on a GPU; on the CPU no more than make :data:`CPU_BATCH_VOXELS`
    (a 256 x 224 window: 4 slices, 0.75 us per voxel on two cores against 0.90 for 16 at a
    time, whose feature maps outgrow the caches).
    """
    if device.type != "cpu":
        return SLICES_PER_BATCH
    return max(1, min(SLICES_PER_BATCH, CPU_BATCH_VOXELS // max(1, math.prod(int(r) for r in roi[:2]))))


def cpu_window_batch(roi: Sequence[int], batch_size: int) -> int:
    """Windows per forward pass on the CPU: ``batch_size``, raised for small 3D windows (see :data:`CPU_BATCH_VOXELS`)."""
    if len(roi) != 3:
        return batch_size
    return max(batch_size, min(CPU_MAX_BATCH, CPU_BATCH_VOXELS // max(1, math.prod(int(r) for r in roi))))


@dataclass(frozen=True)
class WindowPlan:
    """Where the windows go on a (virtually padded) volume.

    Attributes:
        shape: the volume's spatial shape.
        roi: the window's size per axis (1 along ``k`` for a 2D network).
        pad_before: zeros added before each axis where the volume is smaller than the window
            (MONAI pads ``(roi - size) // 2`` before, the rest after).
        padded_shape: ``shape`` plus padding: at least ``roi`` along every axis.
        starts: ``(n, 3)`` window starts in padded coordinates, sorted by the stream axis.
        axis: the stream axis.
    """

    shape: tuple[int, int, int]
    roi: tuple[int, int, int]
    pad_before: tuple[int, int, int]
    padded_shape: tuple[int, int, int]
    starts: np.ndarray
    axis: int

    @property
    def count(self) -> int:
        """Number of windows."""
        return len(self.starts)


def plan_windows(shape: Sequence[int], roi: Sequence[int], overlap: float, *, axis: int = 0) -> WindowPlan:
    """Window positions as :func:`monai.inferers.sliding_window_inference` computes them.

    Args:
        shape: the volume's spatial shape ``(I, J, K)``.
        roi: the window size ``(i, j, k)``.
        overlap: fraction of a window shared with its neighbour, ``0 <= overlap < 1``.
        axis: the stream axis; windows are sorted by their start along it (stable, so
            MONAI's order is kept within one start).

    Raises:
        ConfigError: a bad overlap or window size.
    """
    if not 0.0 <= overlap < 1.0:
        raise ConfigError(f"inference overlap must be at least 0 and below 1, got {overlap}")
    shape = tuple(int(n) for n in shape)
    roi = tuple(int(n) for n in roi)
    if len(shape) != 3 or len(roi) != 3 or min(roi) < 1:
        raise ConfigError(f"the window must be three positive sizes, got {list(roi)} for a volume of {list(shape)}")
    padded = tuple(max(n, r) for n, r in zip(shape, roi))
    pad_before = tuple((p - n) // 2 for n, p in zip(shape, padded))
    interval = tuple(r if r == p else max(1, int(r * (1 - overlap))) for r, p in zip(roi, padded))
    slices = dense_patch_slices(padded, roi, interval, return_slice=False)
    starts = np.array([[s[0] for s in window] for window in slices], dtype=np.int64).reshape(-1, 3)
    starts = starts[np.argsort(starts[:, axis], kind="stable")]
    return WindowPlan(shape, roi, pad_before, padded, starts, axis)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ScoreBand:
    """Final class scores of a band of rows along the stream axis.

    Attributes:
        axis: the stream axis (0: ``i``, 2: ``k``).
        start: index of the band's first row along ``axis``.
        scores: float32 ``(classes, I, J, K)`` with ``stop - start`` rows along ``axis``, on the CPU.
    """

    axis: int
    start: int
    scores: np.ndarray

    @property
    def stop(self) -> int:
        """One past the band's last row along ``axis``."""
        return self.start + self.scores.shape[1 + self.axis]


class SlidingWindow:
    """Runs a segmentation network over a whole volume, window by window.

    Args:
        network: in eval mode, on ``device``; maps ``(B, C, *patch)`` to ``(B, classes, *patch)``.
        roi: the window (the training patch size): 3 numbers for a 3D network, 2 for a 2D one.
        overlap: fraction of a window shared with its neighbours along each axis.
        batch_size: windows per forward pass (a 2D network runs :func:`slices_per_batch` times as many).
        device: where the network runs.
        mirror_axes: spatial axes of the network's input to mirror for test-time augmentation.
        accumulate_on: where the band of weighted scores lives; ``device`` when None.

    Raises:
        ConfigError: a bad window, overlap, batch size or mirror axis.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        *,
        roi: Sequence[int],
        overlap: float,
        batch_size: int,
        device: torch.device,
        mirror_axes: Sequence[int] = (),
        accumulate_on: torch.device | None = None,
    ) -> None:
        dimensions = len(roi)
        if dimensions not in (2, 3):
            raise ConfigError(f"the window must have 2 or 3 sizes, got {list(roi)}")
        if batch_size < 1:
            raise ConfigError(f"inference batch size must be at least 1, got {batch_size}")
        if any(not 0 <= a < dimensions for a in mirror_axes):
            raise ConfigError(f"mirror axes {list(mirror_axes)} name an axis beyond the network's {dimensions}")
        if not 0.0 <= overlap < 1.0:
            raise ConfigError(f"inference overlap must be at least 0 and below 1, got {overlap}")

        self._autocast = autocast
        self.network = network
        self.dimensions = dimensions
        self.roi = (*(int(r) for r in roi), 1) if dimensions == 2 else tuple(int(r) for r in roi)
        self.overlap = float(overlap)
        self.batch_size = batch_size * (slices_per_batch(roi, device) if dimensions == 2 else 1)
        self.device = device
        self.mirror_axes = tuple(sorted(set(int(a) for a in mirror_axes)))
        self.accumulate_on = accumulate_on or device
        self.axis = 0 if dimensions == 3 else 2

    def plan(self, shape: Sequence[int]) -> WindowPlan:
        """The windows for a volume of spatial ``shape``."""
        return plan_windows(shape, self.roi, self.overlap, axis=self.axis)

    def band_bytes(self, shape: Sequence[int], classes: int) -> int:
        """Bytes of the accumulators for a volume of ``shape``: scores and weights of one patch-deep band."""
        plan = self.plan(shape)
        others = math.prod(n for a, n in enumerate(plan.padded_shape) if a != self.axis)
        return 4 * (classes + 1) * plan.roi[self.axis] * others

    @torch.no_grad()
    def stream(self, image: np.ndarray | torch.Tensor, *, progress: Progress | None = None) -> Iterator[ScoreBand]:
        """Final class scores of ``image``, band by band in increasing order along the stream axis.

        Args:
            image: ``(C, I, J, K)`` float32 on the CPU (may be read-only); windows are copied to the device
                one batch at a time.
            progress: ``(windows done, windows in all)`` after each forward batch.

        Yields:
            Consecutive bands that together cover every row of the volume once.

        Raises:
            ModelError: the network's output does not have the window's shape.
        """
        # Kept as NumPy: a read-only (memory-mapped, cached) image is fine, windows are copied out of it.
        if isinstance(image, torch.Tensor):
            image = image.detach().cpu().numpy()
        volume = np.asarray(image).astype(np.float32, copy=False)
        if volume.ndim != 4:
            raise ModelError(f"sliding window needs a (C, I, J, K) image, got shape {list(volume.shape)}")
        plan = self.plan(volume.shape[1:])
        axis, depth = plan.axis, plan.roi[plan.axis]
        weight = compute_importance_map(plan.roi, mode="gaussian", sigma_scale=SIGMA_SCALE, device=self.accumulate_on)
        weight = _to_stream_order(weight[None], axis)  # (1, depth, a, b)
        other_axes = [a for a in range(3) if a != axis]
        others = [plan.padded_shape[a] for a in other_axes]
        ring_scores: torch.Tensor | None = None  # (classes, depth, *others), allocated at the first output
        ring_weights = torch.zeros((1, depth, *others), dtype=torch.float32, device=self.accumulate_on)
        emitted = 0  # rows (padded coordinates) before this are final and handed out
        done = 0
        for first in range(0, plan.count, self.batch_size):
            starts = plan.starts[first : first + self.batch_size]
            outputs = self._predict(torch.from_numpy(_gather(volume, plan, starts)).to(self.device))
            if outputs.shape[2:] != torch.Size(plan.roi) or outputs.shape[0] != len(starts):
                raise ModelError(
                    f"the network returned shape {list(outputs.shape)} for a batch of windows of {list(plan.roi)}; "
                    "expected (windows, classes, *window)"
                )
            outputs = outputs.to(self.accumulate_on, dtype=torch.float32)
            if ring_scores is None:
                ring_scores = torch.zeros(
                    (outputs.shape[1], depth, *others), dtype=torch.float32, device=self.accumulate_on
                )
            for output, start in zip(outputs, starts):
                row = int(start[axis])
                if row > emitted:
                    yield from self._emit(ring_scores, ring_weights, plan, emitted, row)
                    emitted = row
                box = tuple(slice(int(start[a]), int(start[a]) + plan.roi[a]) for a in other_axes)
                scores = _to_stream_order(output, axis) * weight
                for ring, values in ((ring_scores, scores), (ring_weights, weight)):
                    _add_to_ring(ring, values, row, box)
            done += len(starts)
            if progress is not None:
                progress(done, plan.count)
        if ring_scores is None:  # no windows: cannot happen for a non-empty volume
            return
        yield from self._emit(ring_scores, ring_weights, plan, emitted, plan.padded_shape[axis])

    def logits(self, image: np.ndarray | torch.Tensor, *, progress: Progress | None = None) -> torch.Tensor:
        """The whole volume's class scores ``(classes, I, J, K)``, float32 on the CPU (for small volumes)."""
        bands = [torch.from_numpy(band.scores) for band in self.stream(image, progress=progress)]
        return torch.cat(bands, dim=1 + self.axis)

    # -- internals ------------------------------------------------------------------------

    def _predict(self, batch: torch.Tensor) -> torch.Tensor:
        """Network outputs for ``(B, C, *roi)`` windows, averaged over the mirror flips."""
        if self.dimensions == 2:
            batch = batch[..., 0]
        flips = [
            tuple(a + 2 for a in combo)
            for size in range(1, len(self.mirror_axes) + 1)
            for combo in itertools.combinations(self.mirror_axes, size)
        ]
        total = self._forward(batch)
        for dims in flips:
            total += torch.flip(self._forward(torch.flip(batch, dims)), dims)
        if flips:
            total /= len(flips) + 1
        return total[..., None] if self.dimensions == 2 else total

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        with self._autocast(self.device):
            output = self.network(batch)
        if isinstance(output, (list, tuple)):  # some networks return (full resolution, deep supervision ...)
            output = output[0]
        return output.float()

    def _emit(
        self, scores: torch.Tensor, weights: torch.Tensor, plan: WindowPlan, begin: int, end: int
    ) -> Iterator[ScoreBand]:
        """Hand out rows ``begin .. end - 1`` (padded coordinates), a few at a time, and clear their ring slots."""
        axis, depth = plan.axis, plan.roi[plan.axis]
        other_axes = [a for a in range(3) if a != axis]
        crop = tuple(slice(plan.pad_before[a], plan.pad_before[a] + plan.shape[a]) for a in other_axes)
        step = max(1, EMIT_ELEMENTS // (scores.shape[0] * math.prod(plan.shape[a] for a in other_axes)))
        pad, real = plan.pad_before[axis], plan.shape[axis]
        for lo, hi in _ring_pieces(begin, end, depth):
            row0 = _row_of_slot(begin, lo, depth)  # the padded row held in slot lo
            first, last = max(row0, pad), min(row0 + hi - lo, pad + real)  # rows of the volume, not padding
            for row in range(first, last, step):
                slots = slice(lo + row - row0, lo + min(row + step, last) - row0)
                values = scores[(slice(None), slots, *crop)] / weights[(slice(None), slots, *crop)]
                band = _from_stream_order(values, axis).to("cpu").contiguous().numpy()
                yield ScoreBand(axis, row - pad, band)
            scores[:, lo:hi] = 0.0
            weights[:, lo:hi] = 0.0


def _to_stream_order(tensor: torch.Tensor, axis: int) -> torch.Tensor:
    """``(C, I, J, K)`` viewed with the stream axis first: ``(C, axis, other, other)``."""
    order = [0, 1 + axis] + [1 + a for a in range(3) if a != axis]
    return tensor.permute(order)


def _from_stream_order(tensor: torch.Tensor, axis: int) -> torch.Tensor:
    order = [0, 1 + axis] + [1 + a for a in range(3) if a != axis]
    inverse = [order.index(d) for d in range(4)]
    return tensor.permute(inverse)


def _ring_pieces(begin: int, end: int, depth: int) -> list[tuple[int, int]]:
    """Ring slots of rows ``begin .. end - 1``, as at most two contiguous ``(lo, hi)`` slot ranges, in row order."""
    pieces = []
    row = begin
    while row < end:
        slot = row % depth
        count = min(end - row, depth - slot)
        pieces.append((slot, slot + count))
        row += count
    return pieces


def _row_of_slot(begin: int, slot: int, depth: int) -> int:
    """The row at or after ``begin`` that lives in ring ``slot``."""
    return begin + (slot - begin % depth) % depth


def _add_to_ring(ring: torch.Tensor, values: torch.Tensor, row: int, box: tuple[slice, slice]) -> None:
    """Add ``values`` (``(C, depth, a, b)``, rows ``row .. row + depth - 1``) into the ring at ``box``."""
    depth = ring.shape[1]
    done = 0
    for lo, hi in _ring_pieces(row, row + values.shape[1], depth):
        ring[:, lo:hi, box[0], box[1]] += values[:, done : done + hi - lo]
        done += hi - lo


def _gather(volume: np.ndarray, plan: WindowPlan, starts: np.ndarray) -> np.ndarray:
    """The windows at ``starts`` (padded coordinates) as a new ``(B, C, *roi)`` batch; zeros outside the volume."""
    batch = np.zeros((len(starts), volume.shape[0], *plan.roi), dtype=np.float32)
    for patch, start in zip(batch, starts):
        source, target = [], []
        for a in range(3):
            lo = int(start[a]) - plan.pad_before[a]
            clipped = (max(lo, 0), min(lo + plan.roi[a], plan.shape[a]))
            source.append(slice(*clipped))
            target.append(slice(clipped[0] - lo, clipped[1] - lo))
        patch[(slice(None), *target)] = volume[(slice(None), *source)]
    return batch
