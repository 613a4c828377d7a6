"""Preprocessing as MONAI dictionary transforms: composable, and the same as prepare_case."""

from __future__ import annotations

import numpy as np
import pytest
from monai.transforms import Compose, ScaleIntensityd

from medseg.transforms import prepare_case
from medseg.transforms.preprocess import (
    CropToBodyd,
    CropToNonzerod,
    NormalizeChannelsd,
    ResampleToSpacingd,
    preprocessing,
)
from tests.transforms.helpers import CT, make_pipeline, phantom


def test_the_composed_steps_are_prepare_case():
    image, labels = phantom(5)
    pipeline = make_pipeline(spacing=(2.0, 2.5, 5.0), normalization=CT, crop_to_nonzero=True)
    steps = preprocessing(pipeline)
    assert [type(s) for s in steps.transforms] == [CropToNonzerod, ResampleToSpacingd, NormalizeChannelsd]
    item = steps({"image": image.array, "label": labels.array, "geometry": image.geometry})
    case = prepare_case(image, labels, pipeline)
    np.testing.assert_array_equal(item["image"], case.image)
    np.testing.assert_array_equal(item["label"], case.label)
    assert item["geometry"] == case.geometry and item["geometry"].spacing == pytest.approx((2.0, 2.5, 5.0))


def test_a_monai_step_added_after_them_sees_the_prepared_item():
    image, labels = phantom(5)
    pipeline = make_pipeline(spacing=(3.0, 3.0, 4.0), normalization=CT)
    steps = Compose([*preprocessing(pipeline).transforms, ScaleIntensityd(keys="image", minv=0.0, maxv=1.0)])
    item = steps({"image": image.array, "geometry": image.geometry})
    assert float(item["image"].min()) == pytest.approx(0.0) and float(item["image"].max()) == pytest.approx(1.0)
    assert "label" not in item  # inference: no label, nothing invented


def test_the_crop_moves_the_origin_to_the_first_kept_voxel():
    image, _ = phantom(5)
    array = np.zeros_like(image.array)
    array[:, 3:9, 4:10, 2:6] = 1
    item = CropToNonzerod(keys=("image",))({"image": array, "geometry": image.geometry})
    assert item["image"].shape == (1, 6, 6, 4)
    np.testing.assert_allclose(item["geometry"].index_to_physical([0, 0, 0]), image.geometry.index_to_physical([3, 4, 2]))


def test_the_body_crop_keeps_the_box_of_voxels_above_minus_500_hu_and_cuts_the_label_alike():
    image, labels = phantom(5)
    array = np.full(image.array.shape, -1000, dtype=np.int16)  # air ...
    array[:, 10:70, 8:60, 3:37] = -700  # ... lung, inside the body's box but not above the threshold ...
    array[:, 12:68, 20:50, 5:35] = 40  # ... and soft tissue
    array[:, 10, 8, 3] = -400  # a voxel of the table, above the threshold
    item = CropToBodyd()({"image": array, "label": labels.array, "geometry": image.geometry})
    assert item["image"].shape == (1, 58, 42, 32)  # i 10..67, j 8..49, k 3..34
    assert item["label"].shape == (1, 58, 42, 32)
    np.testing.assert_array_equal(item["label"], labels.array[:, 10:68, 8:50, 3:35])
    np.testing.assert_allclose(item["geometry"].index_to_physical([0, 0, 0]), image.geometry.index_to_physical([10, 8, 3]))
    steps = preprocessing(make_pipeline(crop_to_body=True))
    assert [type(s) for s in steps.transforms] == [CropToBodyd, ResampleToSpacingd, NormalizeChannelsd]


def test_an_image_without_a_body_is_left_whole():
    image, _ = phantom(5)
    air = np.full(image.array.shape, -1000, dtype=np.int16)
    item = CropToBodyd(keys=("image",))({"image": air, "geometry": image.geometry})
    assert item["image"].shape == air.shape and item["geometry"] == image.geometry


def test_a_2d_resampling_keeps_the_slices():
    image, _ = phantom(5)
    step = ResampleToSpacingd(keys=("image",), spacing=(1.5, 1.5, 1.0), keep_slices=True, dtypes=(np.float32,))
    item = step({"image": image.array.astype(np.float32), "geometry": image.geometry})
    assert item["geometry"].spacing[2] == pytest.approx(image.geometry.spacing[2])
    assert item["image"].shape[3] == image.array.shape[3]
