"""Overlap of two binary masks: Dice, IoU and the difference in volume.

Masks are boolean (or 0/1) arrays on one grid. Counts, not masks, are what the
metrics need, so :func:`overlap_counts` is the one pass over the voxels and the
metrics are read off its result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medseg.errors import GeometryError


@dataclass(frozen=True)
class OverlapCounts:
    """Voxels in the prediction, in the reference, and in both."""

    prediction: int
    reference: int
    intersection: int

    @property
    def union(self) -> int:
        """Voxels in either mask."""
        return self.prediction + self.reference - self.intersection

    @property
    def dice(self) -> float:
        """``2 |P n R| / (|P| + |R|)``; NaN when both masks are empty."""
        total = self.prediction + self.reference
        return 2.0 * self.intersection / total if total else math.nan

    @property
    def iou(self) -> float:
        """``|P n R| / |P u R|`` (Jaccard); NaN when both masks are empty."""
        union = self.union
        return self.intersection / union if union else math.nan

    def volume_difference(self, voxel_volume_ml: float) -> tuple[float, float]:
        """Prediction minus reference volume, in mL and in % of the reference (NaN if it is empty)."""
        difference = (self.prediction - self.reference) * voxel_volume_ml
        percent = 100.0 * (self.prediction - self.reference) / self.reference if self.reference else math.nan
        return difference, percent


def overlap_counts(prediction: np.ndarray, reference: np.ndarray) -> OverlapCounts:
    """Count the voxels of two binary masks of the same shape and of their intersection.

    Raises:
        GeometryError: the masks differ in shape.
    """
    prediction, reference = np.asarray(prediction, dtype=bool), np.asarray(reference, dtype=bool)
    if prediction.shape != reference.shape:
        raise GeometryError(f"masks differ in shape: {list(prediction.shape)} vs {list(reference.shape)}")
    return OverlapCounts(
        prediction=int(np.count_nonzero(prediction)),
        reference=int(np.count_nonzero(reference)),
        intersection=int(np.count_nonzero(prediction & reference)),
    )


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Dice similarity coefficient of two binary masks; NaN when both are empty."""
    return overlap_counts(prediction, reference).dice


def iou(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Intersection over union (Jaccard index) of two binary masks; NaN when both are empty."""
    return overlap_counts(prediction, reference).iou
