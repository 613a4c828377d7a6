"""Intensity normalisation per channel, and the boxes that cropping keeps (non-zero voxels, a CT's body).

One implementation of each serves medseg's pipelines and nnU-Net's models alike; where nnU-Net
computes differently (its crop fills holes in the non-zero mask, its z-scores accumulate in float32)
a value chooses its way (``fill_holes=True``, ``statistics="float32"``), not a parallel module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import ndimage

from medseg.config.schema import Normalization
from medseg.errors import InputError

#: Standard deviations below this count as a constant image (no division by ~0; nnU-Net's epsilon).
_MIN_STD = 1e-8
#: How a z-score's statistics are accumulated (:func:`normalize_channel`).
Statistics = Literal["float64", "float32"]


#: CT voxels above this many Hounsfield units are the body (and whatever lies on it: the table,
#: clothing); air is about -1000 HU, lung tissue -900 to -500 but inside the chest wall.
BODY_HU = -500.0


def nonzero_mask(data: np.ndarray, *, fill_holes: bool = False) -> np.ndarray:
    """Where any channel of ``(C, *spatial)`` is non-zero; with ``fill_holes``, holes filled (nnU-Net's mask)."""
    mask = np.any(data != 0, axis=0)
    return ndimage.binary_fill_holes(mask) if fill_holes else mask


def nonzero_box(data: np.ndarray, *, fill_holes: bool = False) -> tuple[slice, ...] | None:
    """The bounding box of voxels that are non-zero in any channel of ``(C, *spatial)``.

    Args:
        fill_holes: as nnU-Net's crop (the same box: a hole is inside its border).

    Returns:
        One slice per spatial axis, or None when every voxel is zero.
    """
    return mask_box(nonzero_mask(data, fill_holes=fill_holes))


def body_box(image: np.ndarray, threshold: float = BODY_HU) -> tuple[slice, ...] | None:
    """The bounding box of a CT's body: voxels above ``threshold`` (HU) in channel 0 of ``(C, I, J, K)``.

    Returns:
        One slice per spatial axis, or None when no voxel is above the threshold.
    """
    return mask_box(np.asarray(image[0]) > threshold)


def mask_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The bounding box of the true voxels of a mask (None when there are none)."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(np.any(mask, axis=other))
        if present.size == 0:
            return None
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)


def normalize(
    image: np.ndarray,
    settings: Sequence[Normalization],
    *,
    mask: np.ndarray | None = None,
    statistics: Statistics = "float64",
) -> np.ndarray:
    """Normalise each channel of a float32 ``(C, *spatial)`` array in place, as its settings say.

    See :func:`normalize_channel`.

    Raises:
        InputError: the number of channels differs from the number of settings.
    """
    if image.shape[0] != len(settings):
        raise InputError(
            f"image has {image.shape[0]} channel(s) but preprocessing.channels lists {len(settings)}; "
            "the pipeline must name one normalisation per input channel"
        )
    for channel, setting in zip(image, settings):
        normalize_channel(channel, setting, mask=mask, statistics=statistics)
    return image


def normalize_channel(
    channel: np.ndarray,
    setting: Normalization,
    *,
    mask: np.ndarray | None = None,
    statistics: Statistics = "float64",
) -> np.ndarray:
    """Normalise one float32 channel in place.

    ``ct``: clip to ``clip``, then ``(x - mean) / std`` with the pipeline's numbers.
    ``zscore``: clip first if ``clip`` is given, then the image's own mean and standard
    deviation over ``mask`` (everywhere when None); voxels outside the mask are set to 0,
    as nnU-Net's crop leaves them. ``none``: unchanged (clipped if ``clip``).
    ``rescale01``: minus the minimum, over the range (nnU-Net's ``RescaleTo01Normalization``).
    ``rgb01``: over 255 (``RGBTo01Normalization``).

    Args:
        channel: float32 values, changed in place.
        setting: the channel's normalisation.
        mask: booleans of the channel's shape, the region the z-score statistics come from.
        statistics: ``float64`` accumulates the z-score's mean and standard deviation in float64 (medseg's
            own models); ``float32`` computes them as nnU-Net does, so its models see the values they were
            trained on, to the last bit.

    Returns:
        ``channel``.
    """
    if setting.clip is not None:
        np.clip(channel, setting.clip[0], setting.clip[1], out=channel)
    if setting.scheme == "ct":
        channel -= np.float32(setting.mean)
        channel /= np.float32(max(setting.std, _MIN_STD))
    elif setting.scheme == "zscore":
        region = channel if mask is None else channel[mask]
        if region.size == 0:
            return channel
        accumulate = np.float64 if statistics == "float64" else None
        mean = np.float32(region.mean(dtype=accumulate))
        std = np.float32(max(region.std(dtype=accumulate), _MIN_STD))
        if mask is None:
            channel -= mean
            channel /= std
        else:
            channel[mask] = (region - mean) / std
            channel[~mask] = 0.0
    elif setting.scheme == "rescale01":
        channel -= channel.min()
        channel /= max(float(channel.max()), _MIN_STD)
    elif setting.scheme == "rgb01":
        channel /= 255.0
    return channel
