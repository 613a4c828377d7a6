"""medseg's nnU-Net preprocessing and window steps against nnU-Net's own functions (nnunetv2, test-only)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.config.schema import Normalization
from medseg.inference.nnunet import _gaussian, _pad_to, _steps
from medseg.transforms.normalize import nonzero_box, nonzero_mask, normalize_channel
from medseg.transforms.resample import new_shape, resize_channel, separate_axis

pytest.importorskip("nnunetv2")

from nnunetv2.inference.sliding_window_prediction import (
    compute_gaussian,
    compute_steps_for_sliding_window,
)
from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
from nnunetv2.preprocessing.normalization.default_normalization_schemes import (
    CTNormalization,
    ZScoreNormalization,
)
from nnunetv2.preprocessing.resampling.default_resampling import (
    compute_new_shape,
    determine_do_sep_z_and_axis,
    resample_data_or_seg_to_shape,
)

RNG = np.random.default_rng(7)


def _image(shape=(14, 40, 33)) -> np.ndarray:
    image = RNG.normal(40, 300, size=shape).astype(np.float32)
    image[:2] = 0
    image[:, :, -5:] = 0
    image[5:9, 15:20, 10:14] = 0  # a hole inside the body: filled, so not cropped
    return image


def test_the_crop_is_nnunets():
    data = _image()[None]
    cropped, seg, bbox = crop_to_nonzero(data.copy())
    box = nonzero_box(data, fill_holes=True)
    mask = nonzero_mask(data, fill_holes=True)[box]
    assert [(s.start, s.stop) for s in box] == [tuple(b) for b in bbox]
    np.testing.assert_array_equal(mask, seg[0] >= 0)
    np.testing.assert_array_equal(data[(slice(None), *box)], cropped)


def test_normalisation_is_nnunets():
    image = _image()
    properties = {"mean": 55.0, "std": 210.0, "percentile_00_5": -700.0, "percentile_99_5": 900.0}
    expected = CTNormalization(False, properties).run(image.copy())
    ct = Normalization(scheme="ct", clip=(-700.0, 900.0), mean=55.0, std=210.0)
    np.testing.assert_array_equal(normalize_channel(image.copy(), ct, statistics="float32"), expected)
    box = nonzero_box(image[None], fill_holes=True)
    mask = nonzero_mask(image[None], fill_holes=True)[box]
    seg = np.where(mask, 0, -1)
    inner = np.ascontiguousarray(image[box])
    expected = ZScoreNormalization(True, {}).run(inner.copy(), seg)
    zscore = Normalization(scheme="zscore")
    np.testing.assert_array_equal(normalize_channel(inner.copy(), zscore, mask=mask, statistics="float32"), expected)
    expected = ZScoreNormalization(False, {}).run(inner.copy(), seg)
    np.testing.assert_array_equal(normalize_channel(inner.copy(), zscore, statistics="float32"), expected)


@pytest.mark.parametrize(
    ("shape", "current", "new", "order", "order_z"),
    [
        ((12, 40, 33), (3.0, 0.8, 0.8), (2.0, 1.1, 1.1), 3, 0),  # anisotropic: in-plane cubic, nearest along z
        ((12, 40, 33), (3.0, 0.8, 0.8), (1.5, 1.1, 1.1), 1, 0),  # probabilities' linear resize
        ((12, 40, 33), (3.0, 0.8, 0.8), (1.5, 1.1, 1.1), 3, 1),  # linear along z
        ((12, 40, 33), (1.2, 1.0, 0.9), (1.5, 0.7, 1.3), 3, 0),  # isotropic enough: one 3D resize
        ((12, 40, 33), (1.2, 1.0, 0.9), (1.2, 1.0, 0.9), 3, 0),  # nothing to do
        ((12, 40, 33), (0.8, 3.0, 0.8), (1.0, 2.5, 1.0), 3, 0),  # the coarse axis in the middle
    ],
)
def test_resampling_is_nnunets(shape, current, new, order, order_z):
    data = RNG.normal(size=(1, *shape)).astype(np.float32)
    target = compute_new_shape(shape, current, new)
    assert new_shape(shape, current, new) == tuple(target)
    expected = resample_data_or_seg_to_shape(
        data, target, current, new, is_seg=False, order=order, order_z=order_z, force_separate_z=None
    )
    separate, axis = determine_do_sep_z_and_axis(None, current, new)
    assert separate_axis(current, new) == (axis if separate else None)
    got = resize_channel(data[0], target, axis=separate_axis(current, new), order=order, order_z=order_z)
    assert got.dtype == expected.dtype and got.shape == expected.shape[1:]
    np.testing.assert_allclose(got, expected[0], rtol=1e-6, atol=1e-6)


def test_float16_scores_resample_to_the_same_float16_values():
    scores = RNG.normal(size=(1, 10, 30, 30)).astype(np.float16)
    expected = resample_data_or_seg_to_shape(
        scores, (25, 41, 41), (3.0, 1.0, 1.0), (1.2, 0.73, 0.73), order=1, order_z=0, force_separate_z=None
    )
    got = resize_channel(scores[0], (25, 41, 41), axis=separate_axis((3.0, 1.0, 1.0), (1.2, 0.73, 0.73)), order=1)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, expected[0])


@pytest.mark.parametrize("size", [48, 64, 65, 110, 200])
def test_window_steps_and_weights_are_nnunets(size):
    assert [_steps(size, 48, 0.5)] == compute_steps_for_sliding_window((size,), (48,), 0.5)
    assert [_steps(size, 48, 0.75)] == compute_steps_for_sliding_window((size,), (48,), 0.75)
    patch = (20, 32, 24)
    expected = compute_gaussian(patch, 1 / 8, 10, device=torch.device("cpu"))
    torch.testing.assert_close(_gaussian(patch, torch.device("cpu")), expected, rtol=0, atol=0)


def test_small_images_are_padded_as_nnunet_pads_them():
    from acvl_utils.cropping_and_padding.padding import pad_nd_image

    data = torch.arange(2 * 5 * 7 * 9, dtype=torch.float32).reshape(2, 5, 7, 9)
    expected, slicer = pad_nd_image(data, (8, 7, 12), "constant", {"value": 0}, True, None)
    padded, unpad = _pad_to(data, (8, 7, 12))
    torch.testing.assert_close(padded, expected)
    assert unpad == tuple(slicer[1:])
