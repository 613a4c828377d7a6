"""Distances between the surfaces of two binary masks, in millimetres.

The surface of a mask is its voxels with a face neighbour outside it (the mask
minus its erosion by the 6-connected cross; voxels on the array's border count
as surface), as MONAI and most challenge code define it. Distances are exact
Euclidean distances between voxel centres in patient space: surface voxels are
mapped through the grid's 3x3 index-to-mm matrix, so anisotropic, oblique and
even sheared grids are measured correctly, and nearest neighbours come from a
k-d tree over the (sparse) surface points rather than a dense distance map.

Only the bounding box of the two masks (plus one voxel) is ever eroded, so a
small organ in a large scan costs little time or memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from medseg.errors import ConfigError, GeometryError

_CROSS = ndimage.generate_binary_structure(3, 1)


@dataclass(frozen=True)
class SurfaceDistances:
    """Directed distances (mm) from each surface voxel of one mask to the other mask's surface.

    An array is empty when its mask is empty; metrics that need both surfaces are
    then NaN (see each metric).
    """

    prediction_to_reference: np.ndarray
    reference_to_prediction: np.ndarray

    @property
    def defined(self) -> bool:
        """Whether both masks have a surface, so that distances exist."""
        return bool(self.prediction_to_reference.size and self.reference_to_prediction.size)

    def hausdorff(self, percentile: float = 95.0) -> float:
        """The larger of the two directed ``percentile``-th distances (100: the Hausdorff distance).

        This is MONAI's ``compute_hausdorff_distance(percentile=...)`` and the DeepMind
        ``surface-distance`` package's robust Hausdorff distance. NaN unless both masks
        have a surface.
        """
        if not 0 <= percentile <= 100:
            raise ConfigError(f"percentile must be within 0..100, got {percentile}")
        if not self.defined:
            return math.nan
        forward = np.percentile(self.prediction_to_reference, percentile)
        backward = np.percentile(self.reference_to_prediction, percentile)
        return float(max(forward, backward))

    def mean(self) -> float:
        """Average symmetric surface distance: the mean over both directions' distances; NaN unless defined."""
        if not self.defined:
            return math.nan
        total = self.prediction_to_reference.sum() + self.reference_to_prediction.sum()
        return float(total / (self.prediction_to_reference.size + self.reference_to_prediction.size))

    def surface_dice(self, tolerance_mm: float) -> float:
        """Normalised surface Dice: the share of both surfaces within ``tolerance_mm`` of the other.

        Nikolov et al. 2021, counting surface voxels (not areas), as MONAI's
        ``compute_surface_dice`` does by default. 0 when exactly one mask is
        empty, NaN when both are.
        """
        if tolerance_mm < 0:
            raise ConfigError(f"tolerance must be 0 mm or more, got {tolerance_mm}")
        count = self.prediction_to_reference.size + self.reference_to_prediction.size
        if not count:
            return math.nan
        if not self.defined:
            return 0.0
        within = np.count_nonzero(self.prediction_to_reference <= tolerance_mm) + np.count_nonzero(
            self.reference_to_prediction <= tolerance_mm
        )
        return float(within / count)


def surface_mask(mask: np.ndarray) -> np.ndarray:
    """The surface voxels of a binary mask (``mask`` and not its 6-connected erosion)."""
    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask, structure=_CROSS, border_value=0)


def surface_distances(
    prediction: np.ndarray,
    reference: np.ndarray,
    *,
    spacing: Sequence[float] | np.ndarray = (1.0, 1.0, 1.0),
) -> SurfaceDistances:
    """Directed surface distances between two binary masks on one grid.

    Args:
        prediction: boolean ``(I, J, K)`` mask.
        reference: boolean mask of the same shape.
        spacing: voxel size in mm along ``i, j, k``, or the grid's 3x3 index-to-mm
            matrix (``Geometry.affine[:3, :3]``), which also accounts for oblique
            or sheared axes.

    Raises:
        GeometryError: the masks differ in shape, or the spacing is not 3 positive
            numbers or a 3x3 matrix.
    """
    prediction, reference = np.asarray(prediction, dtype=bool), np.asarray(reference, dtype=bool)
    if prediction.shape != reference.shape or prediction.ndim != 3:
        raise GeometryError(
            f"masks must be 3D and alike, got shapes {list(prediction.shape)} and {list(reference.shape)}"
        )
    linear = _linear_map(spacing)
    box = bounding_box(prediction | reference, margin=1)
    if box is None:
        empty = np.zeros(0)
        return SurfaceDistances(empty, empty)
    points_p = np.argwhere(surface_mask(prediction[box])) @ linear.T
    points_r = np.argwhere(surface_mask(reference[box])) @ linear.T
    return SurfaceDistances(_nearest(points_p, points_r), _nearest(points_r, points_p))


def bounding_box(mask: np.ndarray, *, margin: int = 0) -> tuple[slice, slice, slice] | None:
    """Slices around a mask's true voxels, widened by ``margin`` within the array; None if empty."""
    slices = ndimage.find_objects(np.asarray(mask, dtype=np.uint8))
    if not slices or slices[0] is None:
        return None
    return widen(slices[0], mask.shape, margin)


def widen(box: Sequence[slice], shape: Sequence[int], margin: int) -> tuple[slice, slice, slice]:
    """A box grown by ``margin`` voxels on every side, clipped to ``shape``."""
    grown = (slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(box, shape))
    return tuple(grown)  # type: ignore[return-value]


def _nearest(points: np.ndarray, targets: np.ndarray) -> np.ndarray:
    if not len(points) or not len(targets):
        return np.zeros(0) if not len(points) else np.full(len(points), np.inf)
    distances, _ = cKDTree(targets, leafsize=32).query(points, k=1)
    return np.asarray(distances, dtype=np.float64)


def _linear_map(spacing: Sequence[float] | np.ndarray) -> np.ndarray:
    values = np.asarray(spacing, dtype=np.float64)
    if values.shape == (3,) and np.all(values > 0):
        return np.diag(values)
    if values.shape == (3, 3) and np.all(np.isfinite(values)) and abs(np.linalg.det(values)) > 0:
        return values
    raise GeometryError(f"spacing must be 3 positive numbers (mm) or a 3x3 index-to-mm matrix, got {values.tolist()}")
