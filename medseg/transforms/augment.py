"""medseg's spatial augmentation: rotation and zoom in millimetres, as a MONAI transform.

Why not MONAI's ``RandAffined``: it rotates in voxel units, so on an anisotropic
grid (0.7 x 0.7 x 5 mm) a "rotation" shears the anatomy; and it works on the
patch it is given, so corners rotated in from outside the patch are padding.
:class:`RandAffineMmd` rotates in patient millimetres, and inside the patch
sampler it is drawn *before* the crop: a draw gives a matrix ``M`` (in voxel
units) that maps an output voxel's offset from the patch centre to the position,
relative to the same centre, where it is sampled in the case; the sampler cuts a
region just large enough for that (:func:`region_half_extent`, read from a
memory-mapped case without loading it) and :func:`warp` samples it: linearly for
images, nearest for labels, so labels keep their values. Used on its own (e.g. in
a user's ``Compose``), it warps the patch it is given about its centre.

Random numbers come from the transform's own ``RandomState`` (``self.R``), set by
``Compose.set_random_state``, so a seed fixes everything.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform, RandomizableTransform


def _rotation(axis: int, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    a, b = [x for x in range(3) if x != axis]
    matrix = np.eye(3)
    matrix[a, a], matrix[a, b], matrix[b, a], matrix[b, b] = c, -s, s, c
    return matrix


def _draw_around_one(rng: np.random.RandomState, low: float, high: float) -> float:
    """Half the draws below 1 and half above, where the range allows (nnU-Net's way for scale)."""
    if low < 1.0 and (high <= 1.0 or rng.random_sample() < 0.5):
        return float(rng.uniform(low, min(high, 1.0)))
    return float(rng.uniform(max(low, 1.0), high))


class RandAffineMmd(RandomizableTransform, MapTransform):
    """Random rotation and zoom in patient millimetres (nnU-Net's spatial augmentation).

    Rotation (each axis within ``rotation_degrees``; in 2D about the slice normal)
    and zoom (within ``scale``; above 1 magnifies; half the draws below 1) are
    each applied with probability ``prob``. The voxel size comes from the
    item's ``spacing`` entry (the patch sampler sets it), else isotropic.

    Args:
        keys: the items to warp.
        prob: probability of the rotation, and separately of the zoom.
        rotation_degrees: largest rotation about each axis (0-180).
        scale: zoom range ``(low, high)``.
        mode: ``bilinear`` or ``nearest`` per key (default: nearest for keys named like labels).
        allow_missing_keys: skip keys the item lacks.
    """

    def __init__(
        self,
        keys: Sequence[Hashable] = ("image", "label"),
        prob: float = 0.2,
        rotation_degrees: float = 15.0,
        scale: Sequence[float] = (0.85, 1.25),
        mode: Sequence[str] | str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if not 0 <= float(prob) <= 1:
            raise ValueError(f"prob must be within [0, 1], got {prob}")
        if not 0 <= float(rotation_degrees) <= 180:
            raise ValueError(f"rotation_degrees must be within [0, 180], got {rotation_degrees}")
        if len(scale) != 2 or not 0 < float(scale[0]) <= float(scale[1]):
            raise ValueError(f"scale must be [low, high] with 0 < low <= high, got {list(scale)}")
        modes = [mode] * len(self.keys) if isinstance(mode, str) else list(mode or [])
        if modes and len(modes) != len(self.keys):
            raise ValueError(f"mode needs one entry per key ({len(self.keys)}), got {modes}")
        if any(m not in ("bilinear", "nearest") for m in modes):
            raise ValueError(f"mode must be 'bilinear' or 'nearest', got {modes}")
        self.rotation_degrees = float(rotation_degrees)
        self.scale = (float(scale[0]), float(scale[1]))
        self.modes = modes or ["nearest" if "label" in str(k) or "seg" in str(k) else "bilinear" for k in self.keys]
        self.matrix: np.ndarray | None = None

    def randomize(self, spacing: Sequence[float]) -> None:  # type: ignore[override]
        """Draw the matrix for one patch with voxel size ``spacing`` (2 or 3 numbers); None for none."""
        dims = len(spacing)
        rotate = self.rotation_degrees > 0 and self.R.random_sample() < self.prob
        zoom = self.scale != (1.0, 1.0) and self.R.random_sample() < self.prob
        self.matrix = None
        if not rotate and not zoom:
            return
        physical = np.eye(3)
        if rotate:
            limit = math.radians(self.rotation_degrees)
            for axis in (2,) if dims == 2 else (0, 1, 2):
                physical = physical @ _rotation(axis, float(self.R.uniform(-limit, limit)))
        if zoom:
            physical = physical / _draw_around_one(self.R, *self.scale)
        physical = physical[:dims, :dims]
        sizes = np.asarray(spacing, dtype=np.float64)
        self.matrix = (physical * sizes[np.newaxis, :]) / sizes[:, np.newaxis]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        first = self.first_key(d)
        if first == []:
            return d
        shape = tuple(d[first].shape[1:])
        self.randomize(d.get("spacing") or (1.0,) * len(shape))
        if self.matrix is None:
            return d
        centre = (np.asarray(shape, dtype=np.float64) - 1) / 2
        for key, mode in self.key_iterator(d, self.modes):
            d[key] = warp(torch.as_tensor(d[key]), self.matrix, centre, shape, mode=mode)
        return d


def region_half_extent(matrix: np.ndarray, patch: tuple[int, ...]) -> np.ndarray:
    """How far (voxels) from the patch centre the warped patch reaches along each axis."""
    return np.abs(matrix) @ ((np.asarray(patch, dtype=np.float64) - 1) / 2)


def warp(
    region: torch.Tensor, matrix: np.ndarray, centre: np.ndarray, patch: Sequence[int], *, mode: str = "bilinear"
) -> torch.Tensor:
    """Sample a ``(C, *region)`` tensor at the warped patch's voxels, as ``(C, *patch)``.

    Output voxel ``x`` (offset from the patch centre) is read at ``centre + matrix @ x``;
    outside the region reads 0. ``nearest`` keeps label values and the tensor's type;
    ``bilinear`` gives float32.

    Args:
        region: the region around the patch (image or labels).
        matrix: from :meth:`RandAffineMmd.randomize`.
        centre: the patch centre, in the region's voxel indices (continuous).
        patch: the output size.
        mode: ``bilinear`` (images) or ``nearest`` (labels).
    """
    size = np.asarray(region.shape[1:], dtype=np.float64)
    patch = tuple(int(n) for n in patch)
    # align_corners=True: normalised -1/+1 are the outer voxel centres, in the output and in the region.
    to_region = 2.0 / np.maximum(size - 1, 1)
    linear = to_region[:, np.newaxis] * matrix * ((np.asarray(patch, dtype=np.float64) - 1) / 2)[np.newaxis, :]
    shift = to_region * np.asarray(centre, dtype=np.float64) - 1.0
    theta = np.concatenate([linear[::-1, ::-1], shift[::-1, np.newaxis]], axis=1)  # torch wants x, y(, z) order
    grid = torch.nn.functional.affine_grid(
        torch.from_numpy(theta.astype(np.float32))[np.newaxis], [1, 1, *patch], align_corners=True
    )
    values = region[np.newaxis].to(torch.float32)
    sampled = torch.nn.functional.grid_sample(values, grid, mode=mode, padding_mode="zeros", align_corners=True)[0]
    return sampled if mode == "bilinear" else sampled.round().to(region.dtype)
