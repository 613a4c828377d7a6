"""One patient orientation for every scan: voxel orders and the exact way back.

The same anatomy reaches medseg in several voxel orders: head-first and feet-first
series, NIfTI files written in RAS or in LPS order, a left-right mirrored store. A
network trained on each scan's stored order sees the liver on the left of one array
and on the right of the next, and cannot learn sides (nor keep mirroring off along
the axis where a label always lies on one side). MONAI's ``Orientationd`` and
TotalSegmentator train in one orientation; so does a medseg pipeline with
``preprocessing.orientation: LPS``.

A :class:`VoxelOrder` is a permutation and flips of the three voxel axes, nothing
else: no voxel is interpolated, so going to the canonical order and back returns the
stored array bit for bit, and a mask made in the canonical order lands on the scan's
own grid. The canonical order is **LPS**: voxel ``i`` runs towards the patient's left,
``j`` towards posterior, ``k`` towards the head (medseg's patient coordinates, see
:mod:`medseg.geometry`). An oblique grid takes the order of its nearest axes.

    canonical, order = to_canonical(volume)      # a view: no copy when already LPS
    labels = order.undo(labels_on_canonical)     # back on volume's grid

This module imports neither torch nor MONAI.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medseg.geometry import Geometry
from medseg.volume import Volume

#: The orientation pipelines train and segment in (``preprocessing.orientation``).
CANONICAL = "LPS"


@dataclass(frozen=True)
class VoxelOrder:
    """How a stored grid's voxel axes become the canonical ones.

    Attributes:
        axes: canonical axis ``a`` is stored axis ``axes[a]``.
        flips: canonical axis ``a`` runs against stored axis ``axes[a]``.
        shape: the stored grid's shape (``i, j, k``), for the flips.
    """

    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    shape: tuple[int, int, int]

    @classmethod
    def of(cls, geometry: Geometry) -> VoxelOrder:
        """The order that turns ``geometry``'s voxel axes into LPS (each axis to its nearest patient axis)."""
        direction = geometry.direction
        weights = np.abs(direction)  # [patient axis, voxel axis]
        axes = [-1, -1, -1]
        flips = [False, False, False]
        for _ in range(3):  # the strongest remaining pairing first, as nibabel's io_orientation does
            patient, voxel = np.unravel_index(int(np.argmax(weights)), weights.shape)
            axes[patient] = int(voxel)
            flips[patient] = bool(direction[patient, voxel] < 0)
            weights[patient, :] = -1.0
            weights[:, voxel] = -1.0
        return cls(tuple(axes), tuple(flips), geometry.shape)  # type: ignore[arg-type]

    @property
    def is_identity(self) -> bool:
        """True when the stored order is already canonical."""
        return self.axes == (0, 1, 2) and not any(self.flips)

    @property
    def code(self) -> str:
        """The stored order as three letters (``"LPS"``, ``"RAS"``, ``"LPI"``, ...)."""
        letters = [""] * 3
        for patient, (voxel, flip) in enumerate(zip(self.axes, self.flips)):
            letters[voxel] = ("RL", "AP", "IS")[patient][0 if flip else 1]
        return "".join(letters)

    def apply(self, array: np.ndarray) -> np.ndarray:
        """``array`` (``(..., I, J, K)`` on the stored grid) in the canonical order: a view, no copy."""
        lead = array.ndim - 3
        view = np.transpose(array, (*range(lead), *(lead + a for a in self.axes)))
        flipped = tuple(lead + a for a, flip in enumerate(self.flips) if flip)
        return np.flip(view, axis=flipped) if flipped else view

    def undo(self, array: np.ndarray) -> np.ndarray:
        """``array`` (``(..., I, J, K)`` in the canonical order) back in the stored order: a view, no copy."""
        lead = array.ndim - 3
        flipped = tuple(lead + a for a, flip in enumerate(self.flips) if flip)
        view = np.flip(array, axis=flipped) if flipped else array
        inverse = np.argsort(self.axes)
        return np.transpose(view, (*range(lead), *(lead + int(a) for a in inverse)))

    def geometry(self, stored: Geometry) -> Geometry:
        """The canonical grid of ``stored``: the same voxel centres, in the canonical order."""
        affine = np.eye(4)
        first = [0, 0, 0]  # the stored index of the canonical grid's voxel (0, 0, 0)
        for a, (voxel, flip) in enumerate(zip(self.axes, self.flips)):
            column = stored.affine[:3, voxel]
            affine[:3, a] = -column if flip else column
            first[voxel] = stored.shape[voxel] - 1 if flip else 0
        affine[:3, 3] = stored.index_to_physical(first)
        shape = [stored.shape[voxel] for voxel in self.axes]
        return Geometry(shape, affine, stored.frame_of_reference_uid)


def to_canonical(volume: Volume) -> tuple[Volume, VoxelOrder]:
    """``volume`` in the canonical (LPS) voxel order, and the order that takes it back.

    The voxels are the same (a view of the stored array, made contiguous only when the
    order changes); source, kind and segments are kept.
    """
    order = VoxelOrder.of(volume.geometry)
    if order.is_identity:
        return volume, order
    array = np.ascontiguousarray(order.apply(volume.array))
    return volume.replace(array=array, geometry=order.geometry(volume.geometry)), order
