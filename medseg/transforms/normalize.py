"""Intensity normalisation per channel, and the boxes that cropping keeps (non-zero voxels, a CT's body)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medseg.config.schema import Normalization
from medseg.errors import InputError

#: Standard deviations below this count as a constant image (no division by ~0).
_MIN_STD = 1e-8


#: CT voxels above this many Hounsfield units are the body (and whatever lies on it: the table,
#: clothing); air is about -1000 HU, lung tissue -900 to -500 but inside the chest wall.
BODY_HU = -500.0


def nonzero_box(image: np.ndarray) -> tuple[slice, slice, slice] | None:
    """The bounding box of voxels that are non-zero in any channel of ``(C, I, J, K)``.

    Returns:
        One slice per spatial axis, or None when every voxel is zero.
    """
    return mask_box(np.any(image != 0, axis=0))


def body_box(image: np.ndarray, threshold: float = BODY_HU) -> tuple[slice, slice, slice] | None:
    """The bounding box of a CT's body: voxels above ``threshold`` (HU) in channel 0 of ``(C, I, J, K)``.

    Returns:
        One slice per spatial axis, or None when no voxel is above the threshold.
    """
    return mask_box(np.asarray(image[0]) > threshold)


def mask_box(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    """The bounding box of the true voxels of an ``(I, J, K)`` mask (None when there are none)."""
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(np.any(mask, axis=other))
        if present.size == 0:
            return None
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return box[0], box[1], box[2]


def normalize(image: np.ndarray, settings: Sequence[Normalization], *, mask: np.ndarray | None = None) -> np.ndarray:
    """Normalise each channel of a float32 ``(C, I, J, K)`` array in place, as its settings say.

    ``ct``: clip to ``clip``, then ``(x - mean) / std`` with the pipeline's numbers.
    ``zscore``: clip first if ``clip`` is given, then the image's own mean and
    standard deviation over ``mask`` (everywhere when None); voxels outside the
    mask are set to 0, as nnU-Net does. ``none``: unchanged (clipped if ``clip``).

    Args:
        image: float32 values, changed in place.
        settings: one normalisation per channel.
        mask: ``(I, J, K)`` booleans, the region the z-score statistics come from.

    Returns:
        ``image``.

    Raises:
        InputError: the number of channels differs from the number of settings.
    """
    if image.shape[0] != len(settings):
        raise InputError(
            f"image has {image.shape[0]} channel(s) but preprocessing.channels lists {len(settings)}; "
            "the pipeline must name one normalisation per input channel"
        )
    for channel, scheme in zip(image, settings):
        if scheme.clip is not None:
            np.clip(channel, scheme.clip[0], scheme.clip[1], out=channel)
        if scheme.scheme == "ct":
            channel -= np.float32(scheme.mean)
            channel /= np.float32(scheme.std)
        elif scheme.scheme == "zscore":
            region = channel if mask is None else channel[mask]
            if region.size == 0:
                continue
            mean = float(region.mean(dtype=np.float64))
            std = float(region.std(dtype=np.float64))
            channel -= np.float32(mean)
            channel /= np.float32(max(std, _MIN_STD))
            if mask is not None:
                channel[~mask] = 0.0
    return image
