"""Where every voxel of a volume lies in the patient.

Convention, chosen once for all of medseg:

* Arrays are indexed ``[i, j, k]`` (after the channel axis, see
  :class:`medseg.volume.Volume`). For a DICOM image, ``i`` runs along a row
  (the column index, left to right on screen), ``j`` down the columns (the row
  index) and ``k`` from slice to slice, in increasing position along the slice
  normal ``row x column``.
* The affine maps an index ``(i, j, k, 1)`` to a point in millimetres in the
  DICOM patient coordinate system, **LPS**: +x towards the patient's left,
  +y towards posterior, +z towards head.
* NIfTI's RAS is derived on demand (:attr:`Geometry.affine_ras`) and accepted
  in one place (:meth:`Geometry.from_ras_affine`).

This module imports neither torch nor MONAI.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medseg.errors import GeometryError

#: Flips x and y: LPS <-> RAS. Its own inverse.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

_AXIS_LABELS = (("R", "L"), ("A", "P"), ("I", "S"))  # (negative, positive) per LPS axis


class Geometry:
    """An immutable voxel grid: shape plus a 4x4 index-to-LPS affine.

    Args:
        shape: number of voxels along ``i, j, k``.
        affine: 4x4 matrix mapping ``(i, j, k, 1)`` to LPS millimetres.
        frame_of_reference_uid: the DICOM Frame of Reference the affine lives in,
            when known.

    Raises:
        GeometryError: the shape is not three positive integers, or the affine
            is not a finite, invertible 4x4 affine.
    """

    __slots__ = ("_affine", "_frame_of_reference_uid", "_shape")

    def __init__(
        self,
        shape: Sequence[int],
        affine: Any,
        frame_of_reference_uid: str | None = None,
    ) -> None:
        try:
            sizes = tuple(shape)
            shape = tuple(int(n) for n in sizes)
        except (TypeError, ValueError):
            raise GeometryError(f"shape must be three positive sizes (i, j, k), got {shape!r}") from None
        if len(shape) != 3 or min(shape) < 1 or shape != sizes:
            raise GeometryError(f"shape must be three positive sizes (i, j, k), got {sizes}")
        matrix = np.array(affine, dtype=np.float64)
        if matrix.shape != (4, 4):
            raise GeometryError(f"affine must be 4x4, got shape {matrix.shape}")
        if not np.all(np.isfinite(matrix)):
            raise GeometryError(f"affine has non-finite values:\n{matrix}")
        if not np.allclose(matrix[3], [0, 0, 0, 1]):
            raise GeometryError(f"affine's last row must be [0, 0, 0, 1], got {matrix[3]}")
        spacing = np.linalg.norm(matrix[:3, :3], axis=0)
        if np.any(spacing <= 0) or abs(np.linalg.det(matrix[:3, :3] / spacing)) < 1e-6:
            raise GeometryError(f"affine is singular (axes are zero or parallel):\n{matrix}")
        matrix.flags.writeable = False
        self._shape = shape
        self._affine = matrix
        self._frame_of_reference_uid = frame_of_reference_uid or None

    # -- construction -----------------------------------------------------------------

    @classmethod
    def from_spacing(
        cls,
        shape: Sequence[int],
        spacing: Sequence[float],
        origin: Sequence[float] = (0.0, 0.0, 0.0),
        direction: Any = None,
        frame_of_reference_uid: str | None = None,
    ) -> Geometry:
        """Build from spacing (mm), origin (LPS mm of voxel 0) and a 3x3 direction.

        The direction's columns are the unit vectors of the ``i, j, k`` axes (as in
        SimpleITK/ITK, whose images are LPS too); identity when omitted.
        """
        spacing = np.asarray(spacing, dtype=np.float64)
        if spacing.shape != (3,) or np.any(spacing <= 0):
            raise GeometryError(f"spacing must be three positive numbers, got {spacing.tolist()}")
        direction = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
        if direction.shape != (3, 3):
            raise GeometryError(f"direction must be 3x3, got shape {direction.shape}")
        affine = np.eye(4)
        affine[:3, :3] = direction * spacing
        affine[:3, 3] = np.asarray(origin, dtype=np.float64)
        return cls(shape, affine, frame_of_reference_uid)

    @classmethod
    def from_ras_affine(
        cls, shape: Sequence[int], affine_ras: Any, frame_of_reference_uid: str | None = None
    ) -> Geometry:
        """Build from a NIfTI-style affine (index to RAS mm); the only RAS entry point."""
        return cls(shape, LPS_TO_RAS @ np.asarray(affine_ras, dtype=np.float64), frame_of_reference_uid)

    def with_shape(self, shape: Sequence[int]) -> Geometry:
        """The same origin and axes with another number of voxels."""
        return Geometry(shape, self._affine, self._frame_of_reference_uid)

    # -- views ------------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int, int]:
        """Voxels along ``i, j, k``."""
        return self._shape  # type: ignore[return-value]

    @property
    def affine(self) -> np.ndarray:
        """Index to LPS mm (read-only)."""
        return self._affine

    @property
    def affine_lps(self) -> np.ndarray:
        """Index to LPS mm (a writable copy)."""
        return self._affine.copy()

    @property
    def affine_ras(self) -> np.ndarray:
        """Index to RAS mm, as NIfTI and nibabel want it (a writable copy)."""
        return LPS_TO_RAS @ self._affine

    @property
    def frame_of_reference_uid(self) -> str | None:
        """DICOM Frame of Reference UID, when known."""
        return self._frame_of_reference_uid

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Distance in mm between neighbouring voxels along ``i, j, k``."""
        return tuple(float(s) for s in np.linalg.norm(self._affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def origin(self) -> tuple[float, float, float]:
        """LPS position in mm of the centre of voxel ``(0, 0, 0)``."""
        return tuple(float(v) for v in self._affine[:3, 3])  # type: ignore[return-value]

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix whose columns are the unit vectors of ``i, j, k`` in LPS."""
        return self._affine[:3, :3] / np.linalg.norm(self._affine[:3, :3], axis=0)

    @property
    def is_orthogonal(self) -> bool:
        """True unless the axes are sheared (e.g. a gantry-tilted CT kept as acquired)."""
        d = self.direction
        return bool(np.allclose(d.T @ d, np.eye(3), atol=1e-4))

    @property
    def orientation_code(self) -> str:
        """Three letters naming where ``i, j, k`` point, e.g. ``"LPS"`` for a plain axial CT."""
        d = self.direction
        letters = []
        for axis in range(3):
            dominant = int(np.argmax(np.abs(d[:, axis])))
            letters.append(_AXIS_LABELS[dominant][int(d[dominant, axis] > 0)])
        return "".join(letters)

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres."""
        return float(abs(np.linalg.det(self._affine[:3, :3]))) / 1000.0

    def to_dict(self) -> dict[str, Any]:
        """Size, spacing, origin, direction and orientation as plain lists.

        ``direction`` is the 3x3 matrix row by row, exactly as SimpleITK's
        ``GetDirection()`` lists it (its columns are the unit vectors of i, j, k).
        """
        return {
            "size": list(self._shape),
            "spacing": [round(v, 6) for v in self.spacing],
            "origin": [round(v, 6) for v in self.origin],
            "direction": [round(float(v), 6) for v in self.direction.flatten()],
            "orientation": self.orientation_code,
        }

    # -- mapping ----------------------------------------------------------------------

    def index_to_physical(self, index: Any) -> np.ndarray:
        """LPS mm of voxel indices; ``index`` is ``(3,)`` or ``(n, 3)``."""
        index = np.asarray(index, dtype=np.float64)
        return index @ self._affine[:3, :3].T + self._affine[:3, 3]

    def physical_to_index(self, point: Any) -> np.ndarray:
        """Continuous voxel indices of LPS points; ``point`` is ``(3,)`` or ``(n, 3)``."""
        point = np.asarray(point, dtype=np.float64)
        return (point - self._affine[:3, 3]) @ np.linalg.inv(self._affine[:3, :3]).T

    def corners(self) -> np.ndarray:
        """LPS mm of the centres of the eight corner voxels, ``(8, 3)``."""
        hi = np.array(self._shape) - 1
        idx = np.array([[a, b, c] for a in (0, hi[0]) for b in (0, hi[1]) for c in (0, hi[2])])
        return self.index_to_physical(idx)

    def max_distance_to(self, other: Geometry) -> float:
        """Largest distance in mm between matching corner voxels (inf if shapes differ)."""
        if self._shape != other._shape:
            return float("inf")
        return float(np.max(np.linalg.norm(self.corners() - other.corners(), axis=1)))

    def is_close(self, other: Geometry, *, tolerance_mm: float = 1e-3) -> bool:
        """Same shape, and every voxel within ``tolerance_mm`` of its counterpart."""
        return self.max_distance_to(other) <= tolerance_mm

    def require_same_grid(self, other: Geometry, *, tolerance_mm: float = 1e-3, what: str = "grids") -> None:
        """Raise :class:`GeometryError` naming the difference unless the grids coincide."""
        if self._shape != other._shape:
            raise GeometryError(f"{what} differ in size: {list(self._shape)} vs {list(other._shape)}")
        distance = self.max_distance_to(other)
        if distance > tolerance_mm:
            raise GeometryError(
                f"{what} are {distance:.4g} mm apart (tolerance {tolerance_mm} mm): "
                f"origin {_fmt(self.origin)} vs {_fmt(other.origin)}, "
                f"spacing {_fmt(self.spacing)} vs {_fmt(other.spacing)}, "
                f"orientation {self.orientation_code} vs {other.orientation_code}"
            )

    # -- dunder -----------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Geometry):
            return NotImplemented
        return (
            self._shape == other._shape
            and np.array_equal(self._affine, other._affine)
            and self._frame_of_reference_uid == other._frame_of_reference_uid
        )

    def __hash__(self) -> int:
        # + 0.0 turns -0.0 into 0.0: equal affines (per __eq__) must hash alike.
        return hash((self._shape, (self._affine + 0.0).tobytes(), self._frame_of_reference_uid))

    def __repr__(self) -> str:
        return (
            f"Geometry(shape={list(self._shape)}, spacing={_fmt(self.spacing)}, "
            f"origin={_fmt(self.origin)}, orientation={self.orientation_code!r})"
        )


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"
