"""Voxel orders: every stored order reaches the canonical LPS one, and comes back bit for bit."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from medseg.orientation import VoxelOrder, to_canonical
from medseg.volume import Volume, VolumeKind
from tests import factories


ORDERS = [
    (axes, flips)
    for axes in itertools.permutations(range(3))
    for flips in itertools.product((False, True), repeat=3)
]


@pytest.mark.parametrize(("axes", "flips"), ORDERS, ids=lambda v: "".join(map(str, map(int, v))))
def test_every_stored_order_reaches_the_same_canonical_volume(axes, flips):
    canonical = factories.ramp_volume(factories.axial_geometry())  # an LPS grid: its own canonical order
    stored = factories.stored_as(canonical, axes, flips)
    assert stored.geometry.orientation_code == VoxelOrder.of(stored.geometry).code
    back, order = to_canonical(stored)
    assert order.is_identity == (axes == (0, 1, 2) and not any(flips))
    assert back.geometry.orientation_code == "LPS"
    assert back.geometry.is_close(canonical.geometry, tolerance_mm=1e-9)
    np.testing.assert_array_equal(back.array, canonical.array)
    np.testing.assert_array_equal(order.undo(back.array), stored.array)  # the way back is exact
    np.testing.assert_array_equal(order.apply(stored.array), canonical.array)


def test_the_same_voxel_keeps_its_place_in_the_patient():
    geometry = factories.axial_geometry(feet_first=True)  # x and z reversed: RPI
    stored = Volume(np.arange(np.prod(geometry.shape), dtype=np.int32).reshape(geometry.shape), geometry)
    canonical, order = to_canonical(stored)
    assert order.code == "RPI" and canonical.geometry.orientation_code == "LPS"
    for index in [(0, 0, 0), (3, 5, 7), (39, 31, 11)]:
        value = stored.array[(0, *index)]
        where = np.argwhere(canonical.array[0] == value)
        assert len(where) == 1
        np.testing.assert_allclose(
            canonical.geometry.index_to_physical(where[0]), stored.geometry.index_to_physical(index), atol=1e-9
        )


def test_an_oblique_grid_takes_the_order_of_its_nearest_axes():
    direction = factories.rotation("z", 17) @ factories.rotation("x", -23) @ np.diag([-1.0, 1.0, -1.0])
    stored = factories.ramp_volume(factories.oblique_geometry(direction=direction))
    canonical, order = to_canonical(stored)
    assert not order.is_identity
    assert canonical.geometry.orientation_code == "LPS"
    assert np.all(np.diag(canonical.geometry.direction) > 0.5)  # each axis now points along its own patient axis
    np.testing.assert_allclose(canonical.geometry.corners().mean(0), stored.geometry.corners().mean(0), atol=1e-9)
    np.testing.assert_array_equal(order.undo(canonical.array), stored.array)


def test_a_canonical_volume_is_returned_as_it_is_and_labels_stay_labels():
    image = factories.ramp_volume(factories.axial_geometry())
    assert to_canonical(image)[0] is image
    labels = Volume((image.array % 3).astype(np.uint8), image.geometry, kind=VolumeKind.LABEL)
    turned, order = to_canonical(factories.stored_as(labels, (1, 0, 2), (True, False, False)))
    assert turned.kind is VolumeKind.LABEL and turned.dtype == np.uint8
    np.testing.assert_array_equal(turned.array, labels.array)
