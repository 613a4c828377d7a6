"""nnU-Net v2's preprocessing steps, as its plans describe them, so its models see what they were trained on.

These follow nnU-Net's ``DefaultPreprocessor`` and ``default_resampling`` to the voxel (the
agreement tests run ``nnUNetv2_predict`` beside them), written for bounded memory:

* :func:`nonzero_box`: the box of voxels non-zero in any channel, holes filled (nnU-Net's crop);
* :func:`normalise_channel`: the ``CTNormalization``, ``ZScoreNormalization``, ``NoNormalization``,
  ``RescaleTo01Normalization`` and ``RGBTo01Normalization`` schemes;
* :func:`resample_channel`: skimage-style resizing (``scipy.ndimage.zoom`` on the pixel grid, edge mode,
  output clipped to the input's range), done slice by slice in-plane with nearest or linear steps
  along the coarse axis when the spacing is anisotropic (``separate z``), as nnU-Net decides it.
  nnU-Net builds a full coordinate map for that last step (three float64 values per output voxel);
  here it is an index along one axis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from medseg.errors import ModelError

#: Spacing ratio above which nnU-Net resamples the coarse axis on its own (``ANISO_THRESHOLD``).
ANISOTROPY_THRESHOLD = 3.0
SCHEMES = (
    "CTNormalization",
    "ZScoreNormalization",
    "NoNormalization",
    "RescaleTo01Normalization",
    "RGBTo01Normalization",
)


def nonzero_box(data: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray]:
    """nnU-Net's crop: the box around voxels non-zero in any channel of ``(C, *spatial)``, and the mask in it.

    The mask has its holes filled (as ``create_nonzero_mask``); an all-zero image keeps its whole extent.
    """
    mask = data[0] != 0
    for channel in data[1:]:
        mask |= channel != 0
    mask = ndimage.binary_fill_holes(mask)
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1) if hits.size else slice(0, mask.shape[axis]))
    box = tuple(box)
    return box, mask[box]


def normalise_channel(
    image: np.ndarray, scheme: str, *, properties: Mapping[str, Any] | None, mask: np.ndarray | None
) -> np.ndarray:
    """One channel normalised (float32, in place where it can) by an nnU-Net scheme.

    Args:
        image: the channel, float32.
        scheme: the plans' ``normalization_schemes`` entry.
        properties: the plans' ``foreground_intensity_properties_per_channel`` entry (CT).
        mask: where to compute and apply z-scores (``use_mask_for_norm``), else None.

    Raises:
        ModelError: an unknown scheme, or CT normalisation without intensity properties.
    """
    eps = 1e-8
    if scheme == "CTNormalization":
        if not properties or not {"mean", "std", "percentile_00_5", "percentile_99_5"} <= set(properties):
            raise ModelError("plans.json: CTNormalization without foreground intensity properties")
        np.clip(image, properties["percentile_00_5"], properties["percentile_99_5"], out=image)
        image -= properties["mean"]
        image /= max(properties["std"], eps)
        return image
    if scheme == "ZScoreNormalization":
        if mask is not None:
            values = image[mask]
            mean, std = values.mean(), values.std()
            image[mask] = (values - mean) / max(std, eps)
        else:
            mean, std = image.mean(), image.std()
            image -= mean
            image /= max(std, eps)
        return image
    if scheme == "NoNormalization":
        return image
    if scheme == "RescaleTo01Normalization":
        image -= image.min()
        image /= max(float(image.max()), eps)
        return image
    if scheme == "RGBTo01Normalization":
        image /= 255.0
        return image
    raise ModelError(f"plans.json: normalisation scheme {scheme!r} is not one medseg knows ({', '.join(SCHEMES)})")


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


def resample_channel(
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
