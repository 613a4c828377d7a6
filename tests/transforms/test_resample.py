"""Resampling to the pipeline's spacing and back: voxel centres land where the geometry says."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.errors import GeometryError
from medseg.geometry import Geometry
from medseg.synthetic import make_phantom
from medseg.transforms import prepare_case, resample, restore_to_source, target_grid
from medseg.volume import Volume
from tests.factories import rotation
from tests.transforms.helpers import make_pipeline, physical_centroid

#: A 1.5 x 2 x 4 mm grid, oblique about two axes, away from the origin.
SOURCE = Geometry.from_spacing(
    (60, 48, 20), (1.5, 2.0, 4.0), (-41.3, -52.9, -37.0), rotation("z", 17) @ rotation("x", -23), "1.2.3.9"
)
BLOB_CENTRE = SOURCE.index_to_physical([31.3, 22.7, 9.6])
BLOB_SIGMA_MM = 8.0


def blob(geometry: Geometry) -> np.ndarray:
    """A bright Gaussian blob defined in patient space, sampled at ``geometry``'s voxel centres."""
    points = geometry.index_to_physical(np.indices(geometry.shape).reshape(3, -1).T)
    distance2 = np.sum((points - BLOB_CENTRE) ** 2, axis=1)
    return (1000.0 * np.exp(-distance2 / (2 * BLOB_SIGMA_MM**2))).reshape(geometry.shape).astype(np.float32)


def linear_field(geometry: Geometry) -> np.ndarray:
    """A linear function of LPS position: trilinear interpolation must reproduce it exactly."""
    points = geometry.index_to_physical(np.indices(geometry.shape).reshape(3, -1).T)
    return (points @ np.array([0.7, -1.3, 2.1]) + 5.0).reshape(geometry.shape)


@pytest.fixture(scope="module")
def prepared_blob():
    pipeline = make_pipeline(spacing=(2.0, 2.0, 2.0), normalization={"scheme": "none"})
    image, labels = make_phantom(11, geometry=SOURCE)
    image = Volume(blob(SOURCE), SOURCE)
    return image, labels, prepare_case(image, labels, pipeline, case_id="blob")


def test_new_grid_keeps_origin_and_axes_with_the_target_spacing(prepared_blob):
    _, _, case = prepared_blob
    assert case.geometry.spacing == pytest.approx((2.0, 2.0, 2.0))
    np.testing.assert_allclose(case.geometry.origin, SOURCE.origin, atol=1e-9)
    np.testing.assert_allclose(case.geometry.direction, SOURCE.direction, atol=1e-12)
    assert case.geometry.frame_of_reference_uid == SOURCE.frame_of_reference_uid
    # extent / spacing rounded: 60*1.5/2 = 45, 48*2/2 = 48, 20*4/2 = 40
    assert case.geometry.shape == (45, 48, 40)
    assert case.image.shape == (1, 45, 48, 40) and case.image.dtype == np.float32
    assert case.source_geometry == SOURCE


def test_a_blob_defined_in_patient_space_stays_where_it_is(prepared_blob):
    image, _, case = prepared_blob
    before = physical_centroid(image.array[0], SOURCE)
    after = physical_centroid(case.image[0], case.geometry)
    assert np.linalg.norm(before - BLOB_CENTRE) < 0.05
    # Half a voxel would be 1 mm; a half-voxel convention slip moves it by 0.25-1 mm.
    assert np.linalg.norm(after - BLOB_CENTRE) < 0.1
    # and the values are the blob's own values at the new voxel centres (up to the interpolation
    # error of a Gaussian sampled every 4 mm; a 1 mm shift would add up to 76)
    np.testing.assert_allclose(case.image[0], blob(case.geometry), atol=50.0)


def test_linear_resampling_reproduces_a_linear_field_exactly():
    target = target_grid(SOURCE, (2.0, 2.0, 2.0))
    values = resample(linear_field(SOURCE).astype(np.float32), SOURCE, target, order="linear")
    inside = target.physical_to_index(SOURCE.index_to_physical(np.array(SOURCE.shape) - 1))
    i, j, k = (int(np.floor(v)) for v in inside)  # target voxels within the source's outer centres
    np.testing.assert_allclose(values[:i, :j, :k], linear_field(target)[:i, :j, :k], atol=2e-3)


def test_labels_stay_integers_and_match_the_anatomy_drawn_on_the_new_grid(prepared_blob):
    _, labels, case = prepared_blob
    assert case.label.dtype == np.uint8 and case.label.shape == (1, *case.geometry.shape)
    assert set(np.unique(case.label)) == set(np.unique(labels.array))
    _, truth = make_phantom(11, geometry=case.geometry)  # the same anatomy, drawn on the prepared grid
    assert np.mean(case.label == truth.array) > 0.98


def test_restore_to_source_round_trips_a_label_map(prepared_blob):
    _, labels, case = prepared_blob
    back = restore_to_source(case.label, case.geometry, SOURCE, order="nearest")
    assert back.shape == labels.array.shape and back.dtype == np.uint8
    assert np.mean(back == labels.array) > 0.98
    foreground = labels.array > 0
    assert np.mean(back[foreground] == labels.array[foreground]) > 0.95


def test_restore_to_source_round_trips_probabilities_linearly(prepared_blob):
    image, _, case = prepared_blob
    back = restore_to_source(case.image, case.geometry, SOURCE, order="linear")
    assert back.shape == image.array.shape and back.dtype == np.float32
    assert np.max(np.abs(back - image.array)) < 0.05 * 1000.0


def test_the_prepared_grid_covers_every_source_voxel_centre():
    for spacing in [(2.0, 2.0, 2.0), (3.0, 5.0, 0.7), (1.5, 2.0, 4.0)]:
        target = target_grid(SOURCE, spacing)
        index = target.physical_to_index(SOURCE.corners())
        assert np.all(index >= -0.5 - 1e-9) and np.all(index <= np.array(target.shape) - 0.5 + 1e-9), spacing
        filled = resample(np.ones((1, *target.shape), np.float32), target, SOURCE, order="linear", fill=0.0)
        assert np.all(filled == 1.0), spacing


def test_identical_spacing_is_an_exact_copy():
    image, labels = make_phantom(2, geometry=SOURCE)
    target = target_grid(SOURCE, SOURCE.spacing)
    assert target.is_close(SOURCE, tolerance_mm=1e-9)
    np.testing.assert_array_equal(resample(image.array, SOURCE, target, order="linear"), image.array)
    np.testing.assert_array_equal(resample(labels.array, SOURCE, target, order="nearest"), labels.array)


def test_restore_fills_outside_the_prepared_grid():
    inner = Geometry(
        (10, 12, 5),
        SOURCE.affine_lps @ np.array([[1, 0, 0, 20], [0, 1, 0, 10], [0, 0, 1, 5], [0, 0, 0, 1]]),
        SOURCE.frame_of_reference_uid,
    )
    values = np.full((2, *inner.shape), 7, dtype=np.int16)
    back = restore_to_source(values, inner, SOURCE, order="nearest", fill=-1)
    assert back.shape == (2, *SOURCE.shape) and back.dtype == np.int16
    expected = np.full(SOURCE.shape, -1)
    expected[20:30, 10:22, 5:10] = 7
    np.testing.assert_array_equal(back[1], expected)


def test_grids_that_are_not_parallel_are_resampled_through_patient_space():
    turned = Geometry.from_spacing(
        (30, 25, 18),
        (2.5, 2.5, 2.5),
        SOURCE.index_to_physical([15, 12, 5]),
        rotation("y", 30),
        SOURCE.frame_of_reference_uid,
    )
    values = resample(linear_field(SOURCE).astype(np.float32), SOURCE, turned, order="linear", fill=np.nan)
    index = SOURCE.physical_to_index(turned.index_to_physical(np.indices(turned.shape).reshape(3, -1).T))
    within = np.all((index >= 0) & (index <= np.array(SOURCE.shape) - 1), axis=1).reshape(turned.shape)
    assert within.mean() > 0.3
    np.testing.assert_allclose(values[within], linear_field(turned)[within], atol=2e-3)
    outside = np.all((index < -0.5) | (index > np.array(SOURCE.shape) - 0.5), axis=1).reshape(turned.shape)
    assert np.all(np.isnan(values[outside]))


def test_a_2d_pipeline_keeps_the_slices():
    image, labels = make_phantom(4, geometry=SOURCE)
    case = prepare_case(image, labels, make_pipeline(dimensions=2, spacing=(2.0, 2.0, 1.0), patch=(32, 32)))
    assert case.geometry.shape == (45, 48, 20)
    assert case.geometry.spacing == pytest.approx((2.0, 2.0, 4.0))
    np.testing.assert_allclose(case.geometry.affine[:3, 2], SOURCE.affine[:3, 2], atol=1e-12)


def test_other_frames_of_reference_are_refused():
    other = Geometry(SOURCE.shape, SOURCE.affine, "9.9.9")
    with pytest.raises(GeometryError, match="frames of reference"):
        restore_to_source(np.zeros((1, *SOURCE.shape), np.uint8), other, SOURCE, order="nearest")
    with pytest.raises(GeometryError, match="does not lie on"):
        restore_to_source(np.zeros((1, 3, 3, 3), np.uint8), SOURCE, SOURCE, order="nearest")
