"""prepare_case: normalisation per channel, cropping to the non-zero region, foreground locations."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.errors import InputError
from medseg.geometry import Geometry
from medseg.transforms import class_locations, nonzero_box, prepare_case
from medseg.volume import Volume, VolumeKind
from tests.factories import oblique_geometry
from tests.transforms.helpers import CT, make_pipeline, phantom

SAME = (3.0, 3.0, 4.0)  # the phantom's own spacing: resampling is the identity


@pytest.fixture(scope="module")
def ct_phantom():
    return phantom(5)


def test_ct_normalisation_clips_then_scales(ct_phantom):
    image, labels = ct_phantom
    case = prepare_case(image, labels, make_pipeline(spacing=SAME, normalization=CT))
    low, high = (-160.0 - 60.0) / 50.0, (240.0 - 60.0) / 50.0
    assert case.image.min() == pytest.approx(low) and case.image.max() == pytest.approx(high)  # air and bone
    expected = (np.clip(image.array.astype(np.float32), -160, 240) - 60) / 50
    np.testing.assert_allclose(case.image, expected, rtol=1e-6, atol=1e-6)


def test_none_leaves_the_values(ct_phantom):
    image, labels = ct_phantom
    case = prepare_case(image, labels, make_pipeline(spacing=SAME, normalization={"scheme": "none"}))
    np.testing.assert_array_equal(case.image, image.array.astype(np.float32))


def mr_like(image: Volume) -> Volume:
    """Zero outside the body, positive inside (like a skull-stripped MR)."""
    array = image.array.astype(np.float32) + 1000.0
    array[image.array <= -1000] = 0.0
    return image.with_array(array)


def test_zscore_over_everything(ct_phantom):
    image, labels = ct_phantom
    case = prepare_case(mr_like(image), labels, make_pipeline(spacing=SAME, normalization={"scheme": "zscore"}))
    assert abs(float(case.image.mean())) < 1e-4 and float(case.image.std()) == pytest.approx(1.0, abs=1e-4)


def test_zscore_over_the_nonzero_region_when_cropping(ct_phantom):
    image, labels = ct_phantom
    source = mr_like(image)
    pipeline = make_pipeline(spacing=SAME, normalization={"scheme": "zscore"}, crop_to_nonzero=True)
    case = prepare_case(source, labels, pipeline)
    box = nonzero_box(source.array)
    inside = source.array[(slice(None), *box)] != 0
    values = case.image[inside]
    assert abs(float(values.mean())) < 1e-4 and float(values.std()) == pytest.approx(1.0, abs=1e-4)
    assert np.all(case.image[~inside] == 0)  # outside the region: 0, like the padding
    assert inside.mean() < 0.95  # the region is a real subset, or this test would prove nothing


def test_several_channels_are_normalised_each_by_its_own_scheme(ct_phantom):
    image, labels = ct_phantom
    two = image.with_array(np.concatenate([image.array, image.array]).astype(np.float32))
    case = prepare_case(two, labels, make_pipeline(spacing=SAME, normalization=[CT, {"scheme": "zscore"}]))
    assert case.image.shape[0] == 2
    assert case.image[0].max() == pytest.approx(3.6)
    assert float(case.image[1].std()) == pytest.approx(1.0, abs=1e-4)


def test_wrong_channel_count_is_refused(ct_phantom):
    image, labels = ct_phantom
    with pytest.raises(InputError, match="1 channel.*lists 2"):
        prepare_case(image, labels, make_pipeline(normalization=[CT, CT]), case_id="x")


def test_crop_to_nonzero_crops_image_and_label_and_moves_the_origin():
    geometry = oblique_geometry(shape=(23, 17, 9))
    array = np.zeros(geometry.shape, np.float32)
    array[5:20, 3:15, 2:8] = 100.0
    array[7, 4, 3] = 0.0  # holes inside the box do not matter
    labels = np.zeros(geometry.shape, np.uint8)
    labels[9:12, 6:9, 4:6] = 2
    pipeline = make_pipeline(spacing=geometry.spacing, normalization={"scheme": "none"}, crop_to_nonzero=True)
    case = prepare_case(Volume(array, geometry), Volume(labels, geometry, kind=VolumeKind.LABEL), pipeline)
    assert case.geometry.shape == (15, 12, 6)
    np.testing.assert_allclose(case.geometry.origin, geometry.index_to_physical([5, 3, 2]), atol=1e-9)
    np.testing.assert_allclose(case.geometry.direction, geometry.direction, atol=1e-12)
    np.testing.assert_array_equal(case.image[0], array[5:20, 3:15, 2:8])
    np.testing.assert_array_equal(case.label[0], labels[5:20, 3:15, 2:8])
    # every prepared voxel is where its source voxel was
    np.testing.assert_allclose(case.geometry.index_to_physical([4, 3, 2]), geometry.index_to_physical([9, 6, 4]))


def test_labels_beyond_255_become_int16():
    geometry = Geometry.from_spacing((8, 8, 4), (3.0, 3.0, 4.0))
    labels = np.zeros(geometry.shape, np.int32)
    labels[2:4, 2:4, 1:3] = 300
    image = Volume(np.ones(geometry.shape, np.float32), geometry)
    case = prepare_case(image, Volume(labels, geometry, kind=VolumeKind.LABEL), make_pipeline())
    assert case.label.dtype == np.int16 and set(np.unique(case.label)) == {0, 300}


def test_class_locations_list_voxels_of_each_class():
    labels = np.zeros((1, 20, 10, 6), np.uint8)
    labels[0, 2:4, 3, 1] = 1
    labels[0, 10:15, 0:10, :] = 3
    found = class_locations(labels)
    assert sorted(found) == [1, 3]
    np.testing.assert_array_equal(found[1], [[2, 3, 1], [3, 3, 1]])
    assert found[3].shape == (300, 3) and found[3].dtype == np.int32
    assert np.all(labels[0][tuple(found[3].T)] == 3)


def test_class_locations_sample_large_classes(monkeypatch):
    monkeypatch.setattr("medseg.transforms.prepare.MAX_LOCATIONS", 50)
    labels = np.ones((1, 30, 20, 10), np.uint8)
    found = class_locations(labels, seed=3)
    assert found[1].shape == (60, 3)  # 1% of 6000 beats 50
    assert len(np.unique(found[1], axis=0)) == 60
    np.testing.assert_array_equal(found[1], class_locations(labels, seed=3)[1])


def test_an_lps_pipeline_prepares_every_stored_order_to_the_same_arrays(ct_phantom):
    from tests.factories import stored_as

    image, labels = ct_phantom
    pipeline = make_pipeline(spacing=(4.0, 3.5, 5.0), orientation="LPS", crop_to_body=True)
    reference = prepare_case(image, labels, pipeline)
    for axes, flips in [((0, 1, 2), (True, True, False)), ((0, 1, 2), (False, False, True)), ((1, 0, 2), (True, False, False))]:
        case = prepare_case(stored_as(image, axes, flips), stored_as(labels, axes, flips), pipeline)
        np.testing.assert_array_equal(case.image, reference.image)
        np.testing.assert_array_equal(case.label, reference.label)
        assert case.geometry.is_close(reference.geometry, tolerance_mm=1e-6)
    flipped = prepare_case(stored_as(image, (0, 1, 2), (True, False, False)), None, make_pipeline(spacing=(4.0, 3.5, 5.0)))
    assert not np.array_equal(flipped.image, prepare_case(image, None, make_pipeline(spacing=(4.0, 3.5, 5.0))).image)
