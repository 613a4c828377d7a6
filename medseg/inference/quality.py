"""Quality signals of a predicted label map: which masks to distrust before the numbers go into a paper.

:func:`assess_case` looks at one case, from the label map and the confidence map of the same
inference pass (:meth:`~medseg.inference.engine.Segmenter.segment_with_confidence`), held against
the training set's fingerprint. Per label: volume, connected pieces and the share of the largest,
the scan edges it touches (truncated anatomy), whether it is empty, and the model's confidence
inside it and on its boundary. Each finding that should make a reader look is a **flag**, a
reason in plain words (``"spleen: 3 pieces, largest 71%"``). :func:`batch_flags` then holds each
case's volumes against the rest of the batch (a robust z-score).

The thresholds are constants below, chosen so that the good scans of a batch raise none
(``docs/predict.md`` shows them on a batch with damaged scans among good ones).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from medseg.metrics.statistics import piece_sizes, significant_pieces
from medseg.volume import Volume

#: A label whose mean confidence (winning class's softmax probability) is below this is flagged.
LOW_CONFIDENCE = 0.80
#: A label in more pieces than the training scans had is flagged when the pieces beyond that number
#: hold more than ``1 - LARGEST_SHARE`` of its volume (with no training counts: one piece expected).
LARGEST_SHARE = 0.90
#: A label touches a scan edge when that face holds at least this share of its voxels (and
#: :data:`EDGE_MIN_VOXELS`): a cut through the organ, not a stray voxel.
EDGE_SHARE = 0.01
EDGE_MIN_VOXELS = 5
#: An empty label is flagged when the training scans held it this often (or more).
EXPECTED_SHARE = 0.90
#: Against the training volumes (one per training scan that holds the label): flagged below
#: ``TRAINING_BELOW x`` the smallest or above ``TRAINING_ABOVE x`` the largest. Fingerprints that
#: only know the mean use :data:`MEAN_FACTOR` either way.
TRAINING_BELOW, TRAINING_ABOVE, MEAN_FACTOR = 0.5, 2.0, 5.0
#: Against the batch: flagged at a robust z-score (median and MAD) beyond this, in batches of at
#: least :data:`BATCH_MIN_CASES`; the MAD counts as at least :data:`BATCH_MIN_SPREAD` of the median.
BATCH_Z, BATCH_MIN_CASES, BATCH_MIN_SPREAD = 3.5, 5, 0.05
#: Names of the patient directions (LPS: +x left, +y posterior, +z superior), as edges of a scan.
_SIDES = {(0, 1): "left", (0, -1): "right", (1, 1): "back", (1, -1): "front", (2, 1): "upper", (2, -1): "lower"}


@dataclass(frozen=True)
class LabelQuality:
    """One label's quality signals.

    Attributes:
        name: the label's name.
        volume_ml: its volume.
        components: connected pieces (26-connected; specks under 1% of the volume not counted).
        largest_share: the largest piece's share of the volume (1.0 for an empty label).
        expected_share: the share held by as many of the largest pieces as training scans had at
            most (1.0 for an empty label; the largest piece's share without training counts).
        touches: scan edges it is cut by, in patient terms (``upper``, ``lower``, ``left``, ...).
        confidence: mean confidence inside it (None when empty or not measured).
        boundary_confidence: mean confidence on its boundary voxels (None when empty or not measured).
        empty: no voxel carries it.
    """

    name: str
    volume_ml: float
    components: int
    largest_share: float
    expected_share: float
    touches: tuple[str, ...]
    confidence: float | None
    boundary_confidence: float | None
    empty: bool


@dataclass(frozen=True)
class CaseQuality:
    """A case's quality signals: per label, the case's mean confidence, and its flags."""

    labels: dict[str, LabelQuality]
    confidence: float | None
    flags: tuple[str, ...]
    batch_flags: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (as ``run.json`` keeps it)."""
        return {
            "labels": {name: {k: v for k, v in asdict(q).items() if k != "name"} for name, q in self.labels.items()},
            "confidence": self.confidence,
            "flags": list(self.flags),
            "batch_flags": list(self.batch_flags),
        }

    @property
    def volumes_ml(self) -> dict[str, float]:
        """Each label's volume, by name."""
        return {name: q.volume_ml for name, q in self.labels.items()}


def assess_case(
    labels: Volume, confidence: np.ndarray | None = None, *, fingerprint: Mapping[str, Any] | None = None
) -> CaseQuality:
    """Quality signals of one predicted label map.

    Args:
        labels: the label map, with its segments (every segment is assessed, empty or not).
        confidence: ``uint8`` winning-class probability x 255 on the same grid, or None.
        fingerprint: the model's training fingerprint (``fingerprint.json`` data), for how often
            each label occurs and its volumes in training.

    Returns:
        The case's signals and flags.
    """
    array = labels.channel(0)
    voxel_ml = labels.geometry.voxel_volume_ml
    names = {s.number: s.name for s in labels.segments}
    boxes = ndimage.find_objects(array) if array.size else []
    if confidence is not None and confidence.shape != array.shape:
        raise ValueError(f"confidence map {confidence.shape} is not on the label map's grid {array.shape}")
    sides = _edge_names(labels)
    found: dict[str, LabelQuality] = {}
    flags: list[str] = []
    sums: list[tuple[float, int]] = []
    for number, name in sorted(names.items()):
        box = boxes[number - 1] if number <= len(boxes) else None
        mask = array[box] == number if box is not None else None
        inside = boundary = None
        if confidence is not None and mask is not None and mask.any():
            inside, boundary = _confidence_sums(confidence[box], mask)
            sums.append(inside)
        expected = _training_pieces(number, fingerprint)
        quality = _label_quality(mask, box, array.shape, name, voxel_ml, sides, expected, inside, boundary)
        found[name] = quality
        flags.extend(_flags(quality, number, fingerprint))
    voxels = sum(n for _, n in sums)
    case_confidence = sum(total for total, _ in sums) / voxels if voxels else None
    return CaseQuality(found, None if case_confidence is None else round(case_confidence, 4), tuple(flags))


def batch_flags(volumes: Mapping[str, Mapping[str, float]]) -> dict[str, list[str]]:
    """Flags for cases whose label volumes stand far from the rest of the batch.

    Args:
        volumes: per case, each label's volume in mL.

    Returns:
        Per case, its batch flags (an entry for every case, most of them empty).
    """
    flags: dict[str, list[str]] = {case: [] for case in volumes}
    names = sorted({name for found in volumes.values() for name in found})
    for name in names:
        cases = [case for case, found in volumes.items() if name in found]
        if len(cases) < BATCH_MIN_CASES:
            continue
        values = np.array([volumes[case][name] for case in cases], dtype=np.float64)
        median = float(np.median(values))
        spread = max(1.4826 * float(np.median(np.abs(values - median))), BATCH_MIN_SPREAD * median, 1e-9)
        for case, value in zip(cases, values):
            z = (value - median) / spread
            if abs(z) > BATCH_Z:
                where = "above" if z > 0 else "below"
                flags[case].append(f"{name}: {value:.0f} mL, far {where} this batch (median {median:.0f} mL)")
    return flags


# -- internals ----------------------------------------------------------------------------------


def _label_quality(
    mask: np.ndarray | None,
    box: tuple[slice, ...] | None,
    shape: tuple[int, ...],
    name: str,
    voxel_ml: float,
    sides: Mapping[tuple[int, int], str],
    expected_pieces: int,
    inside: tuple[float, int] | None,
    boundary: tuple[float, int] | None,
) -> LabelQuality:
    """One label's signals from its mask within its bounding box ``box`` of a label map of ``shape``."""
    sizes = piece_sizes(mask) if mask is not None else np.zeros(0, dtype=np.int64)
    voxels = int(sizes.sum())
    if voxels == 0 or mask is None or box is None:
        return LabelQuality(name, 0.0, 0, 1.0, 1.0, (), None, None, True)
    touches = []
    for axis in range(3):
        for end, index in ((-1, 0), (1, shape[axis] - 1)):
            at = index - box[axis].start
            if not 0 <= at < mask.shape[axis]:
                continue
            face = int(np.take(mask, at, axis=axis).sum())
            if face >= max(EDGE_MIN_VOXELS, EDGE_SHARE * voxels):
                touches.append(sides[(axis, end)])
    return LabelQuality(
        name=name,
        volume_ml=round(voxels * voxel_ml, 1),
        components=significant_pieces(sizes),
        largest_share=round(float(sizes[0]) / voxels, 4),
        expected_share=round(float(sizes[:expected_pieces].sum()) / voxels, 4),
        touches=tuple(dict.fromkeys(touches)),
        confidence=None if not inside or not inside[1] else round(inside[0] / inside[1], 4),
        boundary_confidence=None if not boundary or not boundary[1] else round(boundary[0] / boundary[1], 4),
        empty=False,
    )


def _flags(quality: LabelQuality, number: int, fingerprint: Mapping[str, Any] | None) -> list[str]:
    name = quality.name
    if quality.empty:
        share = _training_share(number, fingerprint)
        if share is None:
            return [f"{name}: not found"]
        if share >= EXPECTED_SHARE:
            return [f"{name}: not found (in {share:.0%} of the training scans)"]
        return []
    flags = []
    if quality.expected_share < LARGEST_SHARE:
        flags.append(f"{name}: {quality.components} pieces, largest {quality.largest_share:.0%}")
    for side in quality.touches:
        flags.append(f"{name} touches the {side} edge of the scan")
    if quality.confidence is not None and quality.confidence < LOW_CONFIDENCE:
        flags.append(f"{name}: low confidence ({quality.confidence:.2f})")
    flags.extend(_training_volume(quality, number, fingerprint))
    return flags


def _training_pieces(number: int, fingerprint: Mapping[str, Any] | None) -> int:
    """The most pieces the label had in a training scan (1 when the fingerprint does not say)."""
    seen = ((fingerprint or {}).get("label_pieces") or {}).get(str(number))
    return max(1, max(int(n) for n in seen)) if seen else 1


def _training_share(number: int, fingerprint: Mapping[str, Any] | None) -> float | None:
    if not fingerprint or not fingerprint.get("num_cases"):
        return None
    cases = (fingerprint.get("label_cases") or {}).get(str(number))
    return None if cases is None else int(cases) / int(fingerprint["num_cases"])


def _training_volume(quality: LabelQuality, number: int, fingerprint: Mapping[str, Any] | None) -> list[str]:
    if not fingerprint:
        return []
    seen = (fingerprint.get("label_volumes_ml") or {}).get(str(number))
    volume = quality.volume_ml
    if seen:
        low, high = min(seen), max(seen)
        if volume < TRAINING_BELOW * low:
            return [f"{quality.name}: {volume:.0f} mL, below anything in training ({low:.0f}-{high:.0f} mL)"]
        if volume > TRAINING_ABOVE * high:
            return [f"{quality.name}: {volume:.0f} mL, above anything in training ({low:.0f}-{high:.0f} mL)"]
        return []
    mean = _training_mean(number, fingerprint)
    if mean and not mean / MEAN_FACTOR <= volume <= mean * MEAN_FACTOR:
        where = "below" if volume < mean else "above"
        return [f"{quality.name}: {volume:.0f} mL, far {where} the training mean ({mean:.0f} mL)"]
    return []


def _training_mean(number: int, fingerprint: Mapping[str, Any]) -> float | None:
    """Mean volume per training scan holding the label, from a fingerprint that has no per-scan volumes."""
    voxels = (fingerprint.get("label_voxels") or {}).get(str(number))
    cases = (fingerprint.get("label_cases") or {}).get(str(number))
    spacings = fingerprint.get("spacings") or []
    if not voxels or not cases or not spacings:
        return None
    voxel_ml = float(np.mean([np.prod(s) for s in spacings])) / 1000.0
    return float(voxels) * voxel_ml / int(cases)


def _confidence_sums(confidence: np.ndarray, mask: np.ndarray) -> tuple[tuple[float, int], tuple[float, int]]:
    """(sum of confidence, voxels) inside a label's mask and on its boundary (voxels with a face-neighbour outside),
    both within the label's box."""
    edge = mask & ~ndimage.binary_erosion(mask, border_value=0)
    inside, on_edge = confidence[mask], confidence[edge]
    return (
        (float(inside.sum(dtype=np.float64)) / 255.0, int(inside.size)),
        (float(on_edge.sum(dtype=np.float64)) / 255.0, int(on_edge.size)),
    )


def _edge_names(labels: Volume) -> dict[tuple[int, int], str]:
    """``(axis, -1 | 1)`` -> the patient side that end of the scan faces (``upper`` for the superior end, ...)."""
    direction = np.asarray(labels.geometry.direction, dtype=np.float64)
    names = {}
    for axis in range(3):
        column = direction[:, axis]
        dominant = int(np.argmax(np.abs(column)))
        sign = 1 if column[dominant] > 0 else -1
        names[(axis, 1)] = _SIDES[(dominant, sign)]
        names[(axis, -1)] = _SIDES[(dominant, -sign)]
    return names
