"""A dataset's fingerprint: the few numbers that planning a model needs.

Spacings and shapes of every case, how often each label occurs, and intensity
statistics of the foreground (voxels with a label > 0), sampled per case with a
seeded generator. Computed one case at a time, so a dataset of any size fits in
memory; saved as JSON beside a trained model (:meth:`Fingerprint.to_dict`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
from scipy import ndimage

from medseg.errors import InputError
from medseg.metrics.statistics import piece_sizes, significant_pieces
from medseg.transforms.normalize import BODY_HU
from medseg.volume import Volume, VolumeKind

log = logging.getLogger(__name__)

#: Called as ``progress(cases_done, cases_total)`` after each case; the total is
#: None when the cases come from an iterator without a length.
Progress = Callable[[int, int | None], None]

#: ``format`` and ``version`` written by :meth:`Fingerprint.to_dict`.
FORMAT = "medseg-fingerprint"
VERSION = 1

_SLAB_VOXELS = 1 << 20  # voxels handled at once when counting and sampling (bounds temporary memory)


@dataclass(frozen=True)
class ChannelStats:
    """Intensity statistics of one channel over sampled foreground voxels (label > 0)."""

    name: str
    mean: float
    std: float
    median: float
    min: float
    max: float
    percentile_00_5: float
    percentile_99_5: float


@dataclass(frozen=True)
class Fingerprint:
    """What planning needs to know about a training set.

    Attributes:
        modality: ``"CT"``, ``"MR"``, ... (decides the normalisation).
        channels: foreground intensity statistics, one per input channel.
        labels: label number -> name, background (0) excluded.
        spacings: per case, voxel spacing in mm along ``i, j, k``.
        shapes: per case, voxels along ``i, j, k``.
        label_voxels: per label, voxels carrying it over all cases.
        label_cases: per label, cases in which it occurs at all.
        num_cases: number of cases.
        label_positions: per label, one ``(i, j, k)`` per case that holds it: the label's centroid
            as a fraction of the image's extent along each axis (0.5 is the middle). Empty in
            fingerprints written before it was measured.
        body_shapes: CT only, per case, the shape of the body's box (voxels above
            :data:`~medseg.transforms.normalize.BODY_HU`); empty for other modalities and in
            fingerprints written before it was measured.
        labels_outside_body: CT only, the cases (0-based) whose labels reach outside their
            body's box (or that have no body): cropping to the body would cut labels away.
        label_volumes_ml: per label, its volume in mL in each case that holds it (what
            ``medseg predict`` holds a predicted volume against). Empty in fingerprints written
            before it was measured.
        label_pieces: per label, in each case that holds it, its connected pieces (26-connected,
            specks under 1% of its volume not counted; a label whose box passes a million voxels is
            looked at every n-th voxel): two kidneys under one label are two pieces. Empty in
            fingerprints written before it was measured.
    """

    modality: str
    channels: tuple[ChannelStats, ...]
    labels: dict[int, str]
    spacings: tuple[tuple[float, float, float], ...]
    shapes: tuple[tuple[int, int, int], ...]
    label_voxels: dict[int, int]
    label_cases: dict[int, int]
    num_cases: int
    label_positions: dict[int, tuple[tuple[float, float, float], ...]] = field(default_factory=dict)
    body_shapes: tuple[tuple[int, int, int], ...] = ()
    labels_outside_body: tuple[int, ...] = ()
    label_volumes_ml: dict[int, tuple[float, ...]] = field(default_factory=dict)
    label_pieces: dict[int, tuple[int, ...]] = field(default_factory=dict)

    @property
    def body_crop_safe(self) -> bool:
        """CT whose every case has a body box holding all of its labels."""
        return len(self.body_shapes) == self.num_cases > 0 and not self.labels_outside_body

    def cropped_to_body(self) -> Fingerprint:
        """The same fingerprint with each case's shape that of its body's box (see :attr:`body_crop_safe`)."""
        if not self.body_crop_safe:
            raise ValueError("the fingerprint has no body boxes that hold every label")
        return replace(self, shapes=self.body_shapes)

    @property
    def median_spacing(self) -> tuple[float, float, float]:
        """Median spacing per axis over the cases, in mm."""
        median = np.median(np.asarray(self.spacings, dtype=np.float64), axis=0)
        return tuple(float(v) for v in median)  # type: ignore[return-value]

    @property
    def median_shape(self) -> tuple[int, int, int]:
        """Median shape per axis once every case is resampled to :attr:`median_spacing`."""
        return self.median_shape_at(self.median_spacing)

    def shapes_at(self, spacing: Sequence[float]) -> tuple[tuple[int, int, int], ...]:
        """Each case's shape after resampling to ``spacing`` (mm), rounded to whole voxels."""
        target = np.asarray(spacing, dtype=np.float64)
        scaled = np.asarray(self.shapes, dtype=np.float64) * np.asarray(self.spacings, dtype=np.float64) / target
        rows = np.maximum(np.rint(scaled), 1).astype(int)
        return tuple(tuple(int(n) for n in row) for row in rows)  # type: ignore[misc]

    def median_shape_at(self, spacing: Sequence[float]) -> tuple[int, int, int]:
        """Median shape per axis after resampling every case to ``spacing`` (mm)."""
        median = np.median(np.asarray(self.shapes_at(spacing), dtype=np.float64), axis=0)
        return tuple(int(n) for n in np.rint(median))  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready data (label numbers become strings, as JSON keys must be)."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "modality": self.modality,
            "num_cases": self.num_cases,
            "labels": {str(k): v for k, v in self.labels.items()},
            "channels": [{f.name: getattr(c, f.name) for f in fields(ChannelStats)} for c in self.channels],
            "spacings": [list(s) for s in self.spacings],
            "shapes": [list(s) for s in self.shapes],
            "label_voxels": {str(k): v for k, v in self.label_voxels.items()},
            "label_cases": {str(k): v for k, v in self.label_cases.items()},
            "label_positions": {str(k): [list(p) for p in v] for k, v in self.label_positions.items()},
            "body_shapes": [list(s) for s in self.body_shapes],
            "labels_outside_body": list(self.labels_outside_body),
            "label_volumes_ml": {str(k): list(v) for k, v in self.label_volumes_ml.items()},
            "label_pieces": {str(k): list(v) for k, v in self.label_pieces.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fingerprint:
        """Rebuild from :meth:`to_dict`'s data (e.g. read back from JSON).

        Raises:
            InputError: not a fingerprint, a newer version, or a missing or malformed entry.
        """
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise InputError(f"not a medseg fingerprint (expected 'format: {FORMAT}')")
        if data.get("version") != VERSION:
            raise InputError(f"fingerprint version {data.get('version')!r} is not supported (expected {VERSION})")
        try:
            return cls(
                modality=str(data["modality"]),
                channels=tuple(
                    ChannelStats(**{f.name: c[f.name] for f in fields(ChannelStats)}) for c in data["channels"]
                ),
                labels={int(k): str(v) for k, v in data["labels"].items()},
                spacings=tuple(tuple(float(v) for v in s) for s in data["spacings"]),  # type: ignore[misc]
                shapes=tuple(tuple(int(v) for v in s) for s in data["shapes"]),  # type: ignore[misc]
                label_voxels={int(k): int(v) for k, v in data["label_voxels"].items()},
                label_cases={int(k): int(v) for k, v in data["label_cases"].items()},
                num_cases=int(data["num_cases"]),
                label_positions={
                    int(k): tuple(tuple(float(x) for x in p) for p in v)  # type: ignore[misc]
                    for k, v in data.get("label_positions", {}).items()
                },
                body_shapes=tuple(tuple(int(v) for v in s) for s in data.get("body_shapes", [])),  # type: ignore[misc]
                labels_outside_body=tuple(int(v) for v in data.get("labels_outside_body", [])),
                label_volumes_ml={
                    int(k): tuple(float(x) for x in v) for k, v in data.get("label_volumes_ml", {}).items()
                },
                label_pieces={int(k): tuple(int(x) for x in v) for k, v in data.get("label_pieces", {}).items()},
            )
        except KeyError as exc:
            raise InputError(f"fingerprint lacks the entry {exc.args[0]!r}") from exc
        except (TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"fingerprint has a malformed entry: {exc}") from exc


def compute_fingerprint(
    cases: Iterable[tuple[Volume, Volume]],
    *,
    modality: str,
    channel_names: Sequence[str],
    labels: Mapping[int, str],
    samples_per_case: int = 10_000,
    seed: int = 0,
    progress: Progress | None = None,
) -> Fingerprint:
    """Measure a training set, one ``(image, label map)`` case at a time.

    Foreground intensities are sampled without replacement, up to
    ``samples_per_case`` voxels per case (all of them where a case has fewer),
    by a generator seeded with ``(seed, case index)``: the same cases give the
    same fingerprint, whatever else is in the dataset.

    Args:
        cases: ``(image, labels)`` pairs on the same grid; the image has one
            channel per name in ``channel_names``.
        modality: e.g. ``"CT"`` or ``"MR"``.
        channel_names: names of the image channels, in order.
        labels: label number -> name, background (0) excluded.
        samples_per_case: foreground voxels sampled per case for the statistics.
        seed: seeds the sampling.
        progress: called as ``progress(done, total)`` after each case.

    Raises:
        InputError: a case with the wrong number of channels, a label map that is
            not a label map or holds undeclared (or negative) values, or no
            foreground voxel in the whole dataset.
        GeometryError: an image and its label map are on different grids.
    """
    if samples_per_case < 1:
        raise InputError(f"samples_per_case must be at least 1, got {samples_per_case}")
    declared = {int(k): str(v) for k, v in sorted(labels.items())}
    if not declared or min(declared) < 1:
        raise InputError(f"labels must name label numbers >= 1 (background 0 excluded), got {sorted(declared)}")
    total = len(cases) if isinstance(cases, Sized) else None
    samples: list[np.ndarray] = []
    spacings: list[tuple[float, float, float]] = []
    shapes: list[tuple[int, int, int]] = []
    label_voxels = dict.fromkeys(declared, 0)
    label_cases = dict.fromkeys(declared, 0)
    positions: dict[int, list[tuple[float, float, float]]] = {number: [] for number in declared}
    volumes: dict[int, list[float]] = {number: [] for number in declared}
    pieces: dict[int, list[int]] = {number: [] for number in declared}
    body_shapes: list[tuple[int, int, int]] = []
    outside: list[int] = []
    ct = modality.upper() == "CT"
    index = -1
    for index, (image, label_map) in enumerate(cases):
        _check_case(index, image, label_map, len(channel_names))
        counts = _count_labels(label_map.array[0], index, declared)
        centroids = _centroids(label_map.array[0], counts.size)
        boxes = ndimage.find_objects(label_map.array[0])
        for number in declared:
            label_voxels[number] += int(counts[number])
            label_cases[number] += int(counts[number] > 0)
            if counts[number] > 0:
                positions[number].append(centroids[number])
                volumes[number].append(round(float(counts[number]) * image.geometry.voxel_volume_ml, 3))
                pieces[number].append(_pieces(label_map.array[0], boxes[number - 1], number))
        foreground = int(counts[1:].sum())
        rng = np.random.default_rng((seed, index))
        ranks = (
            None if foreground <= samples_per_case else np.sort(rng.choice(foreground, samples_per_case, replace=False))
        )
        samples.append(_foreground_values(image.array, label_map.array[0], ranks))
        spacings.append(image.geometry.spacing)
        shapes.append(image.spatial_shape)
        if ct:
            shape, holds = _body(image.array, label_map.array[0])
            body_shapes.append(shape)
            if not holds:
                outside.append(index)
        if progress is not None:
            progress(index + 1, total)
    num_cases = index + 1
    if num_cases == 0:
        raise InputError("no cases to fingerprint")
    values = np.concatenate(samples, axis=1)
    if values.shape[1] == 0:
        raise InputError(f"none of the {num_cases} label maps has a foreground voxel (label > 0)")
    channels = tuple(_statistics(name, values[c]) for c, name in enumerate(channel_names))
    log.info("fingerprinted %d case(s), %d foreground samples", num_cases, values.shape[1])
    return Fingerprint(
        modality=modality,
        channels=channels,
        labels=declared,
        spacings=tuple(spacings),
        shapes=tuple(shapes),
        label_voxels=label_voxels,
        label_cases=label_cases,
        num_cases=num_cases,
        label_positions={number: tuple(found) for number, found in positions.items() if found},
        body_shapes=tuple(body_shapes),
        labels_outside_body=tuple(outside),
        label_volumes_ml={number: tuple(found) for number, found in volumes.items() if found},
        label_pieces={number: tuple(found) for number, found in pieces.items() if found},
    )


def _body(image: np.ndarray, labels: np.ndarray) -> tuple[tuple[int, int, int], bool]:
    """The shape of a CT's body box (voxels above ``BODY_HU``), and whether it holds every labelled voxel.

    Works in slabs along ``i``, so temporary memory stays small for large scans.
    """
    shape = labels.shape
    body = [np.zeros(n, dtype=bool) for n in shape]
    labelled = [np.zeros(n, dtype=bool) for n in shape]
    for part in _slabs(shape):
        for found, mask in ((body, np.asarray(image[0, part]) > BODY_HU), (labelled, np.asarray(labels[part]) > 0)):
            found[0][part] |= mask.any(axis=(1, 2))
            found[1] |= mask.any(axis=(0, 2))
            found[2] |= mask.any(axis=(0, 1))
    if not body[0].any():
        return tuple(int(n) for n in shape), False  # type: ignore[return-value]
    box = [np.flatnonzero(b) for b in body]
    extent = tuple(int(b[-1] - b[0] + 1) for b in box)
    label_box = [np.flatnonzero(found) for found in labelled]
    holds = all(inside.size == 0 or b[0] <= inside[0] and inside[-1] <= b[-1] for b, inside in zip(box, label_box))
    return extent, holds  # type: ignore[return-value]


def _check_case(index: int, image: Volume, label_map: Volume, channels: int) -> None:
    if image.num_channels != channels:
        raise InputError(f"case {index}: the image has {image.num_channels} channel(s), expected {channels}")
    if label_map.kind is not VolumeKind.LABEL:
        raise InputError(f"case {index}: the second volume must be a label map, got kind {label_map.kind.value!r}")
    image.geometry.require_same_grid(label_map.geometry, what=f"case {index}: image and label map grids")


def _slabs(shape: Sequence[int], *, voxels: int = _SLAB_VOXELS) -> Iterable[slice]:
    """Slices along ``i`` covering about ``voxels`` voxels each."""
    step = max(1, voxels // max(1, int(np.prod(shape[1:]))))
    return (slice(start, min(start + step, shape[0])) for start in range(0, shape[0], step))


def _count_labels(array: np.ndarray, index: int, declared: Mapping[int, str]) -> np.ndarray:
    """Voxels per label value (index = value), counted slab by slab; undeclared values raise."""
    lowest, highest = int(array.min()), int(array.max())
    if lowest < 0:
        raise InputError(f"case {index}: the label map holds negative values (lowest {lowest})")
    counts = np.zeros(max(highest, max(declared)) + 1, dtype=np.int64)
    for part in _slabs(array.shape):
        counts += np.bincount(array[part].ravel(), minlength=counts.size)
    unknown = sorted(int(v) for v in np.flatnonzero(counts) if v and v not in declared)
    if unknown:
        raise InputError(
            f"case {index}: the label map holds values {unknown} that are not declared labels {sorted(declared)}"
        )
    return counts


def _pieces(array: np.ndarray, box: tuple[slice, ...], number: int) -> int:
    """A label's pieces in its box; a box past :data:`_SLAB_VOXELS` is looked at every n-th voxel (memory)."""
    stride = max(1, int(np.ceil((np.prod([b.stop - b.start for b in box]) / _SLAB_VOXELS) ** (1 / 3))))
    return significant_pieces(piece_sizes(array[box][::stride, ::stride, ::stride] == number))


def _centroids(array: np.ndarray, size: int) -> dict[int, tuple[float, float, float]]:
    """Per label value present, its centroid as a fraction of the extent along ``i, j, k`` (slab by slab)."""
    counts = np.zeros(size, dtype=np.float64)
    sums = np.zeros((3, size), dtype=np.float64)
    for part in _slabs(array.shape, voxels=_SLAB_VOXELS // 8):  # weights are 8 bytes a voxel
        block = array[part]
        values = block.ravel()
        counts += np.bincount(values, minlength=size)
        for axis in range(3):
            index = np.arange(block.shape[axis], dtype=np.float64) + (part.start if axis == 0 else 0)
            shape = [1, 1, 1]
            shape[axis] = -1
            weights = np.broadcast_to(index.reshape(shape), block.shape).ravel()
            sums[axis] += np.bincount(values, weights=weights, minlength=size)
    extent = np.asarray(array.shape, dtype=np.float64)[:, None]
    fractions = (sums / np.maximum(counts, 1) + 0.5) / extent
    return {
        int(v): tuple(round(float(fractions[a, v]), 4) for a in range(3))  # type: ignore[misc]
        for v in np.flatnonzero(counts)
    }


def _foreground_values(image: np.ndarray, labels: np.ndarray, ranks: np.ndarray | None) -> np.ndarray:
    """``(C, n)`` float64 values of the foreground voxels at ``ranks`` (in raster order), or of all of them."""
    taken: list[np.ndarray] = []
    seen = 0
    for part in _slabs(labels.shape):
        where = np.flatnonzero(labels[part] > 0)
        start, seen = seen, seen + where.size
        if ranks is not None:
            lo, hi = np.searchsorted(ranks, [start, seen])
            where = where[ranks[lo:hi] - start]
        if where.size:
            taken.append(image[:, part].reshape(image.shape[0], -1)[:, where].astype(np.float64))
    return np.concatenate(taken, axis=1) if taken else np.zeros((image.shape[0], 0))


def _statistics(name: str, values: np.ndarray) -> ChannelStats:
    low, median, high = np.percentile(values, [0.5, 50.0, 99.5])
    return ChannelStats(
        name=str(name),
        mean=float(np.mean(values)),
        std=float(np.std(values)),
        median=float(median),
        min=float(np.min(values)),
        max=float(np.max(values)),
        percentile_00_5=float(low),
        percentile_99_5=float(high),
    )
