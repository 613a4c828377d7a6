"""The CT phantom: deterministic, plausible, and the same anatomy on any grid."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.geometry import Geometry
from medseg.synthetic import PHANTOM_SEGMENTS, PhantomSpec, make_phantom
from medseg.volume import VolumeKind
from tests.factories import rotation


@pytest.fixture(scope="module")
def default_phantom():
    return make_phantom(3)


def test_same_seed_gives_identical_phantoms(default_phantom):
    image, labels = default_phantom
    again_image, again_labels = make_phantom(3)
    np.testing.assert_array_equal(image.array, again_image.array)
    np.testing.assert_array_equal(labels.array, again_labels.array)
    assert image.geometry == again_image.geometry


def test_different_seeds_give_different_anatomy(default_phantom):
    image, labels = default_phantom
    other_image, other_labels = make_phantom(4)
    assert not np.array_equal(labels.array, other_labels.array)
    assert not np.array_equal(image.array, other_image.array)


def test_types_kinds_grid_and_segments(default_phantom):
    image, labels = default_phantom
    spec = PhantomSpec()
    assert image.kind is VolumeKind.IMAGE and image.dtype == np.int16
    assert labels.kind is VolumeKind.LABEL and labels.dtype == np.uint8
    assert image.geometry is labels.geometry
    assert image.spatial_shape == spec.shape
    np.testing.assert_allclose(image.geometry.spacing, spec.spacing)
    np.testing.assert_allclose(image.geometry.origin, spec.origin)
    assert [s.number for s in labels.segments] == [1, 2, 3]
    assert labels.segments == PHANTOM_SEGMENTS


@pytest.mark.parametrize("seed", [0, 3, 11])
def test_every_label_is_present_and_hu_values_are_plausible(seed):
    image, labels = make_phantom(seed)
    hu, lab = image.array[0], labels.array[0]
    assert set(np.unique(lab).tolist()) == {0, 1, 2, 3}
    for number, low, high in [(1, 85, 135), (2, 50, 100), (3, 165, 215)]:  # liver, spleen, kidney
        assert low <= np.median(hu[lab == number]) <= high, PHANTOM_SEGMENTS[number - 1].name
    # Air outside the body: the grid's corners are far outside a ~250x190 mm ellipse.
    corners = hu[[0, -1]][:, [0, -1]][:, :, [0, -1]]
    assert np.all(corners == -1000)
    assert hu.min() >= -1024 and hu.max() <= 3071
    # Organs are a few per cent of the volume, inside the body.
    fraction = (lab > 0).mean()
    assert 0.01 < fraction < 0.3
    assert np.all(hu[lab > 0] > -200)
    # Bone (the spine) is present and far brighter than soft tissue.
    assert np.percentile(hu, 99.9) > 300


def _centroid_and_volume(labels, number):
    index = np.argwhere(labels.array[0] == number)
    points = labels.geometry.index_to_physical(index)
    return points.mean(axis=0), len(index) * labels.geometry.voxel_volume_ml


def test_same_anatomy_in_patient_space_on_another_grid(default_phantom):
    _, labels = default_phantom
    # An oblique, feet-first, differently spaced grid covering the same abdomen.
    direction = rotation("z", 12) @ rotation("x", 7) @ np.diag([-1.0, 1.0, -1.0])
    shape, spacing = (110, 80, 60), np.array([2.5, 3.5, 4.5])
    centre = np.array([-5.0, -20.0, 0.0])
    origin = centre - direction @ (spacing * (np.array(shape) - 1) / 2)
    other_grid = Geometry.from_spacing(shape, spacing, origin, direction)
    assert other_grid.orientation_code == "RPI"
    _, other = make_phantom(3, geometry=other_grid)
    assert other.geometry is other_grid
    for number in (1, 2, 3):
        centroid, volume = _centroid_and_volume(labels, number)
        other_centroid, other_volume = _centroid_and_volume(other, number)
        assert np.linalg.norm(centroid - other_centroid) < 2.0, PHANTOM_SEGMENTS[number - 1].name
        assert other_volume == pytest.approx(volume, rel=0.05)
    # The liver lies on the patient's right (negative LPS x), the spleen on the left.
    assert _centroid_and_volume(other, 1)[0][0] < -20
    assert _centroid_and_volume(other, 2)[0][0] > 20
