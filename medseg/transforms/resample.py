"""Moving voxels between grids that share their axes: to a target spacing, and back.

Where the voxels go, exactly:

* :func:`target_grid` keeps the source's origin (the centre of voxel ``(0, 0, 0)``)
  and its axes (direction, and shear if any); only the step along each axis
  changes, to the target spacing. Voxel ``n`` of the new grid along an axis
  therefore sits at ``origin + n * target`` mm along that axis, which is source
  index ``n * target / source``. Its size is the extent divided by the spacing,
  rounded (``round(n_source * source / target)``), plus one voxel where that
  would leave the centre of the source's last voxel outside the new grid's box.
* :func:`resample` samples an array at the centres of another grid's voxels:
  every target voxel centre is mapped into the source's index space through
  the two affines (physical space, no guessing), and the value there is taken
  by linear interpolation (separably along each axis, i.e. trilinear) or from
  the nearest voxel (ties round up). Points up to half a voxel beyond the outer
  voxel centres, which are still inside the source's field of view, take the
  edge value; points outside the source's voxels entirely get ``fill``, or the
  edge value when ``fill`` is None.

Only grids whose axes are parallel (the index mapping between them is a scaling
plus a shift) go through the separable path; any other pair is resampled with
``torch.nn.functional.grid_sample``. Both work in slabs along ``i`` (the slowest
varying spatial axis, so each slab is one contiguous block of the output) so that
memory stays bounded by the output.

nnU-Net's models were trained on arrays resized by shape, not by geometry: skimage-style
resizing on the pixel grid (edge mode, output clipped to the input's range), done slice by slice
in-plane with nearest or linear steps along the coarse axis when the spacing is anisotropic
(``separate z``), as nnU-Net decides it. :func:`resize_channel` does exactly that (the agreement
tests run ``nnUNetv2_predict`` beside it), with :func:`separate_axis` and :func:`new_shape`;
nnU-Net builds a full coordinate map for the coarse axis (three float64 values per output
voxel), here it is an index along one axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from scipy import ndimage

from medseg.errors import ConfigError, GeometryError
from medseg.geometry import Geometry

Order = Literal["nearest", "linear"]

#: Spacing ratio above which nnU-Net resamples the coarse axis on its own (``ANISO_THRESHOLD``).
ANISOTROPY_THRESHOLD = 3.0
#: Positions this close to a whole index are taken as that index (keeps identity mappings exact).
_SNAP = 1e-6
#: Output elements computed per slab; bounds the temporary memory of one pass.
_SLAB_ELEMENTS = 1 << 24


def target_grid(source: Geometry, spacing: tuple[float, float, float]) -> Geometry:
    """The grid with ``spacing`` (mm) that covers ``source``, keeping its origin and axes.

    Args:
        source: the grid to resample from.
        spacing: target distance between voxels along ``i, j, k``.

    Returns:
        A grid whose axis ``a`` is the source's scaled to ``spacing[a]``; its shape
        is ``round(extent / spacing)`` (one more where needed to cover the
        centre of the last source voxel).
    """
    old = np.asarray(source.spacing)
    new = np.asarray(spacing, dtype=np.float64)
    if new.shape != (3,) or np.any(new <= 0):
        raise GeometryError(f"target spacing must be three positive numbers, got {list(spacing)}")
    shape = []
    for n, s, t in zip(source.shape, old, new):
        rounded = int(np.floor(n * s / t + 0.5))
        covering = math.ceil((n - 1) * s / t + 0.5 - _SNAP)
        shape.append(max(1, rounded, covering))
    affine = source.affine_lps
    affine[:3, :3] = affine[:3, :3] * (new / old)
    return Geometry(shape, affine, source.frame_of_reference_uid)


def index_mapping(source: Geometry, target: Geometry) -> np.ndarray:
    """The 4x4 matrix taking target indices to source indices (through patient space)."""
    if (
        source.frame_of_reference_uid
        and target.frame_of_reference_uid
        and source.frame_of_reference_uid != target.frame_of_reference_uid
    ):
        raise GeometryError(
            f"grids are in different frames of reference ({source.frame_of_reference_uid} vs "
            f"{target.frame_of_reference_uid}); resampling between them would be meaningless"
        )
    return np.linalg.inv(source.affine) @ target.affine


def resample(
    array: np.ndarray,
    source: Geometry,
    target: Geometry,
    *,
    order: Order,
    fill: float | None = None,
    dtype: np.dtype | type | None = None,
) -> np.ndarray:
    """Sample a ``(C, I, J, K)`` array on ``source`` at the voxel centres of ``target``.

    Args:
        array: channels-first values on ``source``'s grid (a 3D array is one channel).
        source: the grid of ``array``.
        target: the grid to sample at.
        order: ``"linear"`` (trilinear; images, probabilities) or ``"nearest"`` (labels).
        fill: value for target voxels whose centre lies outside every source voxel;
            None takes the nearest edge value there too.
        dtype: output type; float32 for linear, the input's type for nearest when None.

    Returns:
        ``(C, *target.shape)`` (or ``target.shape`` for a 3D input).

    Raises:
        GeometryError: the array does not match ``source``, or the frames of reference differ.
    """
    array = np.asarray(array)
    squeeze = array.ndim == 3
    data = array[np.newaxis] if squeeze else array
    if data.ndim != 4 or tuple(data.shape[1:]) != source.shape:
        raise GeometryError(f"array of shape {list(array.shape)} does not lie on the source grid {list(source.shape)}")
    if order not in ("nearest", "linear"):
        raise ConfigError(f"order must be 'nearest' or 'linear', got {order!r}")
    out_dtype = np.dtype(dtype) if dtype is not None else (np.dtype(np.float32) if order == "linear" else data.dtype)
    mapping = index_mapping(source, target)
    linear_part = mapping[:3, :3]
    out = np.empty((data.shape[0], *target.shape), dtype=out_dtype)
    tensor = torch.from_numpy(_compute_copy(data, order))
    slab = max(1, _SLAB_ELEMENTS // max(1, data.shape[0] * target.shape[1] * target.shape[2]))
    aligned = np.allclose(linear_part - np.diag(np.diag(linear_part)), 0.0, atol=1e-9)
    for i0 in range(0, target.shape[0], slab):
        i1 = min(target.shape[0], i0 + slab)
        if aligned:
            values = _separable(tensor, mapping, target.shape, (i0, i1), order, fill)
        else:
            values = _general(tensor, mapping, target.shape, (i0, i1), order, fill)
        out[:, i0:i1] = _cast(values, out_dtype)
    return out[0] if squeeze else out


def _compute_copy(data: np.ndarray, order: Order) -> np.ndarray:
    """An array torch can index without copying again: float32 for linear, an integer type torch knows for nearest."""
    if order == "linear":
        wanted = np.dtype(np.float32)
    elif data.dtype == np.bool_ or data.dtype in (np.uint16, np.uint32, np.uint64):
        wanted = np.dtype(np.int64)
    else:
        wanted = data.dtype
    if data.dtype == wanted and data.flags.writeable and data.flags.c_contiguous:
        return data  # only read, never written
    return np.ascontiguousarray(data, dtype=wanted) if data.dtype != wanted else np.array(data, order="C", copy=True)


def _cast(values: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    result = values.numpy()
    if np.issubdtype(dtype, np.integer) and np.issubdtype(result.dtype, np.floating):
        result = np.rint(result)
    return result.astype(dtype, copy=False)


def _positions(mapping: np.ndarray, axis: int, count: int, start: int = 0) -> np.ndarray:
    """Source indices of target indices ``start .. start + count - 1`` along one (aligned) axis."""
    target = np.arange(start, start + count, dtype=np.float64)
    positions = mapping[axis, axis] * target + mapping[axis, 3]
    nearest = np.rint(positions)
    return np.where(np.abs(positions - nearest) < _SNAP, nearest, positions)


def _inside(positions: np.ndarray, size: int) -> np.ndarray:
    return (positions >= -0.5 - _SNAP) & (positions <= size - 0.5 + _SNAP)


def _select(tensor: torch.Tensor, dim: int, index: np.ndarray) -> torch.Tensor:
    # Advanced indexing: torch.index_select is many times slower on inner dimensions (torch 2.x, CPU).
    return tensor[(slice(None),) * dim + (torch.from_numpy(index.astype(np.int64)),)]


def _take(tensor: torch.Tensor, dim: int, positions: np.ndarray, order: Order) -> torch.Tensor:
    """Values along one dimension at continuous ``positions`` (edge values beyond the ends)."""
    size = tensor.shape[dim]
    if order == "nearest":
        return _select(tensor, dim, np.clip(np.floor(positions + 0.5), 0, size - 1))
    low = np.clip(np.floor(positions), 0, size - 1)
    weight = np.clip(positions - low, 0.0, 1.0)
    below = _select(tensor, dim, low)
    if not np.any(weight > 0):
        return below
    above = _select(tensor, dim, np.minimum(low + 1, size - 1))
    shape = [1] * tensor.dim()
    shape[dim] = len(positions)
    return torch.lerp(below, above, torch.from_numpy(weight.astype(np.float32)).reshape(shape))


def _separable(
    tensor: torch.Tensor,
    mapping: np.ndarray,
    shape: tuple[int, int, int],
    slab: tuple[int, int],
    order: Order,
    fill: float | None,
) -> torch.Tensor:
    i0, i1 = slab
    per_axis = [_positions(mapping, 0, i1 - i0, i0), _positions(mapping, 1, shape[1]), _positions(mapping, 2, shape[2])]
    # i first (the slab needs few source rows), then whichever of j, k shrinks the data more.
    rest = sorted((1, 2), key=lambda a: shape[a] / tensor.shape[a + 1])
    values = tensor
    for axis in (0, *rest):
        values = _take(values, axis + 1, per_axis[axis], order)
    if fill is not None:
        inside = [torch.from_numpy(_inside(p, tensor.shape[a + 1])) for a, p in enumerate(per_axis)]
        mask = inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :]
        if not bool(mask.all()):
            values = values.masked_fill(~mask, fill)
    return values


def _general(
    tensor: torch.Tensor,
    mapping: np.ndarray,
    shape: tuple[int, int, int],
    slab: tuple[int, int],
    order: Order,
    fill: float | None,
) -> torch.Tensor:
    """Any affine index mapping, with ``grid_sample`` (align_corners=True maps -1/+1 to the outer centres)."""
    i0, i1 = slab
    index = np.stack(np.meshgrid(np.arange(i0, i1), np.arange(shape[1]), np.arange(shape[2]), indexing="ij"), -1)
    points = index.reshape(-1, 3) @ mapping[:3, :3].T + mapping[:3, 3]
    sizes = np.array(tensor.shape[1:], dtype=np.float64)
    clamped = np.clip(points, 0.0, sizes - 1)
    normalised = 2.0 * clamped / np.maximum(sizes - 1, 1) - 1.0
    grid = torch.from_numpy(normalised[:, ::-1].astype(np.float32).copy()).reshape(1, i1 - i0, *shape[1:], 3)
    source = tensor.to(torch.float32)[np.newaxis]
    mode = "nearest" if order == "nearest" else "bilinear"
    values = torch.nn.functional.grid_sample(source, grid, mode=mode, padding_mode="border", align_corners=True)[0]
    if fill is not None:
        inside = np.all((points >= -0.5 - _SNAP) & (points <= sizes - 0.5 + _SNAP), axis=1)
        values = values.masked_fill(torch.from_numpy(~inside).reshape(1, i1 - i0, *shape[1:]), fill)
    return values


def restore_to_source(
    prediction: np.ndarray,
    prepared_geometry: Geometry,
    source_geometry: Geometry,
    *,
    order: Order,
    fill: float = 0.0,
) -> np.ndarray:
    """Map a ``(C, ...)`` array on the prepared grid back onto the source grid.

    Each source voxel takes the value at its centre's position in the prepared
    grid (found through both affines): nearest for label maps, linear for
    probabilities. Source voxels outside the prepared grid's voxels (the parts
    ``crop_to_nonzero`` cut away) get ``fill``. Works in slabs (along ``i``), so temporary
    memory stays a small fraction of the output.

    Args:
        prediction: ``(C, I, J, K)`` (or ``(I, J, K)``) on ``prepared_geometry``.
        prepared_geometry: the grid the prediction was made on (``PreparedCase.geometry``).
        source_geometry: the scan's own grid.
        order: ``"nearest"`` (labels: keeps the dtype) or ``"linear"`` (float32 out).
        fill: the value outside the prepared grid (0: background / no probability).

    Returns:
        The array on ``source_geometry``, with the same channels.

    Raises:
        GeometryError: the prediction does not match ``prepared_geometry``, or the
            grids are in different frames of reference.
    """
    return resample(prediction, prepared_geometry, source_geometry, order=order, fill=fill)


# -- resizing by shape, as nnU-Net's models were trained -----------------------------------------


def separate_axis(current: Sequence[float], new: Sequence[float], force: bool | None = None) -> int | None:
    """The coarse axis nnU-Net resamples on its own, or None (``determine_do_sep_z_and_axis``)."""

    def coarse(spacing: Sequence[float]) -> list[int]:
        spacing = np.asarray(spacing, dtype=float)
        return list(np.flatnonzero(spacing.max() / spacing == 1))

    if force is not None:
        axes = coarse(current) if force else []
    elif max(current) / min(current) > ANISOTROPY_THRESHOLD:
        axes = coarse(current)
    elif max(new) / min(new) > ANISOTROPY_THRESHOLD:
        axes = coarse(new)
    else:
        axes = []
    return int(axes[0]) if len(axes) == 1 else None


def new_shape(shape: Sequence[int], current: Sequence[float], new: Sequence[float]) -> tuple[int, ...]:
    """nnU-Net's ``compute_new_shape``: ``round(old spacing / new spacing x old shape)`` per axis."""
    return tuple(int(round(c / n * s)) for c, n, s in zip(current, new, shape))


def resize_channel(
    data: np.ndarray,
    shape: Sequence[int],
    *,
    axis: int | None,
    order: int,
    order_z: int = 0,
    out_dtype: np.dtype | type | None = None,
) -> np.ndarray:
    """One channel resized to ``shape`` as nnU-Net's ``resample_data_or_seg`` does (not for label maps).

    Args:
        data: the channel.
        shape: the new shape.
        axis: the coarse axis resampled on its own (:func:`separate_axis`), or None for one 3D resize.
        order: spline order of the resize (in-plane when ``axis`` is set).
        order_z: 0 (nearest) or 1 (linear) along ``axis``.
        out_dtype: the result's type (default: ``data``'s).
    """
    out_dtype = np.dtype(out_dtype or data.dtype)
    shape = tuple(int(n) for n in shape)
    if tuple(data.shape) == shape:
        return data.astype(out_dtype, copy=False)
    if axis is None:  # float64 arithmetic as nnU-Net's, without a float64 copy of the input (scipy pads it itself)
        return _resize(data, shape, order).astype(out_dtype, copy=False)
    in_plane = tuple(n for a, n in enumerate(shape) if a != axis)
    planes = np.moveaxis(data, axis, 0)
    count, target = planes.shape[0], shape[axis]
    if count == target:
        result = np.empty(shape, dtype=out_dtype)
        moved = np.moveaxis(result, axis, 0)
        for index in range(count):
            moved[index] = _resize(planes[index].astype(np.float64, copy=False), in_plane, order)
        return result
    resized = np.empty((count, *in_plane), dtype=np.float64)
    for index in range(count):
        resized[index] = _resize(planes[index].astype(np.float64, copy=False), in_plane, order)
    # along the coarse axis: scipy's map_coordinates on pixel centres (align_corners=False), edge mode
    position = (count / target) * (np.arange(target) + 0.5) - 0.5
    result = np.empty(shape, dtype=out_dtype)
    moved = np.moveaxis(result, axis, 0)
    if order_z == 0:
        nearest = np.clip(np.floor(position + 0.5).astype(np.int64), 0, count - 1)
        for index, source in enumerate(nearest):
            moved[index] = resized[source]
    else:
        low = np.floor(position).astype(np.int64)
        weight = position - low
        for index in range(target):
            a, b = np.clip(low[index], 0, count - 1), np.clip(low[index] + 1, 0, count - 1)
            moved[index] = resized[a] * (1 - weight[index]) + resized[b] * weight[index]
    return result


def _resize(image: np.ndarray, shape: tuple[int, ...], order: int) -> np.ndarray:
    """skimage's ``resize(image.astype(float), shape, order, mode="edge", anti_aliasing=False)``: float64 out."""
    if image.dtype not in (np.float32, np.float64):  # float16 scores: scipy takes neither them nor their halves
        image = image.astype(np.float64)
    factors = [n / s for n, s in zip(shape, image.shape)]
    out = ndimage.zoom(image, factors, output=np.float64, order=order, mode="nearest", grid_mode=True)
    if order > 0:
        np.clip(out, image.min(), image.max(), out=out)
    return out
