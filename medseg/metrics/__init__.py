"""Segmentation metrics per label, in physical units, and label statistics.

:func:`score_labels` compares a predicted label map with a reference on the
same grid and gives one :class:`LabelScores` per label: Dice, IoU, HD95, average
symmetric surface distance, normalised surface Dice and the volume difference.
Each label is cropped to the bounding box of its voxels in either map first, so
a 512x512x600 scan costs no more than its organs.

Edge cases, chosen so that every value fits in CSV and JSON (no infinities):

==================  =========  ==========  ================  =====================
``status``          Dice, IoU  NSD         HD95, ASSD        volume difference
==================  =========  ==========  ================  =====================
``ok`` (in both)    defined    defined     defined           defined
``missed``          0          0           NaN               -reference, -100 %
``spurious``        0          0           NaN               +prediction, NaN %
``absent``          NaN        NaN         NaN               0 mL, NaN %
==================  =========  ==========  ================  =====================

``missed``: the label is in the reference only (a false negative);
``spurious``: in the prediction only (a false positive); ``absent``: in
neither. NaN values are left out of means and medians; the status says why a
distance is missing, so a summary can count misses instead of hiding them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

import numpy as np
from scipy import ndimage

from medseg.errors import InputError
from medseg.metrics.overlap import OverlapCounts, dice, iou, overlap_counts
from medseg.metrics.surface import SurfaceDistances, surface_distances, surface_mask, widen
from medseg.volume import Volume

#: Default tolerance of the normalised surface Dice, in mm.
DEFAULT_TOLERANCE_MM = 2.0

#: The per-label metrics, in the order tables and files list them.
METRICS = ("dice", "iou", "hd95_mm", "assd_mm", "nsd", "volume_difference_ml", "volume_difference_pct")


class LabelStatus(str, Enum):
    """Where a label occurs: decides which metrics are defined (see the module docs)."""

    OK = "ok"
    MISSED = "missed"
    SPURIOUS = "spurious"
    ABSENT = "absent"


@dataclass(frozen=True)
class LabelScores:
    """The metrics of one label of one case; NaN where undefined (see :class:`LabelStatus`)."""

    label: int
    status: LabelStatus
    dice: float
    iou: float
    hd95_mm: float
    assd_mm: float
    nsd: float
    prediction_ml: float
    reference_ml: float
    volume_difference_ml: float
    volume_difference_pct: float
    tolerance_mm: float

    @classmethod
    def absent(cls, label: int, tolerance_mm: float = DEFAULT_TOLERANCE_MM) -> LabelScores:
        """The scores of a label found in neither map."""
        nan = math.nan
        return cls(label, LabelStatus.ABSENT, nan, nan, nan, nan, nan, 0.0, 0.0, 0.0, nan, tolerance_mm)

    def as_dict(self) -> dict[str, Any]:
        """Plain values (the status as its string)."""
        values = asdict(self)
        values["status"] = self.status.value
        return values


def score_labels(
    prediction: Volume,
    reference: Volume,
    *,
    labels: Sequence[int] | None = None,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
    grid_tolerance_mm: float = 0.01,
) -> list[LabelScores]:
    """Compare two label maps on one grid, label by label.

    Args:
        prediction: the predicted label map.
        reference: the reference (ground truth) label map.
        labels: label numbers to score; default: every non-zero label in either map.
        tolerance_mm: tolerance of the normalised surface Dice.
        grid_tolerance_mm: how far apart (mm) matching voxels of the two grids may be.

    Raises:
        GeometryError: the grids differ.
        InputError: a volume is not a label map, or a label number is below 1.
    """
    for volume, what in ((prediction, "prediction"), (reference, "reference")):
        if not np.issubdtype(volume.dtype, np.integer) or volume.num_channels != 1:
            raise InputError(f"{volume.path or what}: the {what} must be a label map (one channel of integers)")
    prediction.geometry.require_same_grid(
        reference.geometry,
        tolerance_mm=grid_tolerance_mm,
        what=f"{prediction.path or 'the prediction'} and {reference.path or 'the reference'}",
    )
    pred, ref = prediction.channel(0), reference.channel(0)
    boxes_p, boxes_r = _boxes(pred), _boxes(ref)
    if labels is None:
        labels = sorted({n for n, box in enumerate(boxes_p, 1) if box} | {n for n, box in enumerate(boxes_r, 1) if box})
    elif any(int(n) < 1 for n in labels):
        raise InputError(f"label numbers start at 1 (0 is the background), got {list(labels)}")
    geometry = reference.geometry
    linear, voxel_ml = geometry.affine[:3, :3], geometry.voxel_volume_ml
    scores = []
    for label in (int(n) for n in labels):
        box = _union(_box(boxes_p, label), _box(boxes_r, label))
        if box is None:
            scores.append(LabelScores.absent(label, tolerance_mm))
            continue
        box = widen(box, pred.shape, 1)
        scores.append(_score(pred[box] == label, ref[box] == label, label, linear, voxel_ml, tolerance_mm))
    return scores


def _score(
    pred: np.ndarray, ref: np.ndarray, label: int, linear: np.ndarray, voxel_ml: float, tolerance_mm: float
) -> LabelScores:
    counts = overlap_counts(pred, ref)
    distances = surface_distances(pred, ref, spacing=linear)
    status = (
        LabelStatus.OK
        if counts.prediction and counts.reference
        else LabelStatus.MISSED
        if counts.reference
        else LabelStatus.SPURIOUS
    )
    difference_ml, difference_pct = counts.volume_difference(voxel_ml)
    return LabelScores(
        label=label,
        status=status,
        dice=counts.dice,
        iou=counts.iou,
        hd95_mm=distances.hausdorff(95.0),
        assd_mm=distances.mean(),
        nsd=distances.surface_dice(tolerance_mm),
        prediction_ml=counts.prediction * voxel_ml,
        reference_ml=counts.reference * voxel_ml,
        volume_difference_ml=difference_ml,
        volume_difference_pct=difference_pct,
        tolerance_mm=tolerance_mm,
    )


Box = tuple[slice, slice, slice]


def _boxes(array: np.ndarray) -> list[Box | None]:
    """Bounding box of every label 1..max in one pass (``find_objects``), no mask per label."""
    if array.size == 0 or not array.any():
        return []
    if array.min() < 0:
        raise InputError(f"label maps hold non-negative integers, found {int(array.min())}")
    return ndimage.find_objects(array)


def _box(boxes: list[Box | None], label: int) -> Box | None:
    return boxes[label - 1] if 0 < label <= len(boxes) else None


def _union(a: Box | None, b: Box | None) -> Box | None:
    if a is None or b is None:
        return a or b
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))  # type: ignore[return-value]


__all__ = [
    "DEFAULT_TOLERANCE_MM",
    "METRICS",
    "LabelScores",
    "LabelStatus",
    "OverlapCounts",
    "SurfaceDistances",
    "dice",
    "iou",
    "overlap_counts",
    "score_labels",
    "surface_distances",
    "surface_mask",
]
