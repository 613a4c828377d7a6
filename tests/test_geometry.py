"""Geometry: validation, LPS/RAS conventions, index<->physical mapping and grid comparison."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.errors import GeometryError
from medseg.geometry import LPS_TO_RAS, Geometry
from tests.factories import axial_geometry, oblique_geometry, rotation

# -- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [(0, 4, 5), (3, -1, 5), (3, 4), (3, 4, 5, 6), (), (2.5, 4, 5), ("a", 4, 5), None],
    ids=["zero", "negative", "two", "four", "empty", "fractional", "text", "none"],
)
def test_bad_shape_is_a_geometry_error(shape):
    with pytest.raises(GeometryError, match="shape"):
        Geometry(shape, np.eye(4))


def test_integral_shapes_of_any_type_are_accepted():
    assert Geometry((np.int64(3), 4.0, 5), np.eye(4)).shape == (3, 4, 5)


@pytest.mark.parametrize(
    "affine, message",
    [
        (np.eye(3), "4x4"),
        (np.diag([1.0, 1.0, 0.0, 1.0]), "singular"),
        (np.array([[1, 0, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1]], float), "singular"),
        (np.array([[1, 2, 0, 0], [0, 0, 1, 0], [1, 2, 0, 0], [0, 0, 0, 1]], float), "singular"),
        (np.diag([1.0, np.nan, 1.0, 1.0]), "non-finite"),
        (np.diag([1.0, 1.0, np.inf, 1.0]), "non-finite"),
        (np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]], float), "last row"),
    ],
    ids=["3x3", "zero-axis", "coplanar-axes", "parallel-axes", "nan", "inf", "last-row"],
)
def test_bad_affine_is_a_geometry_error_and_a_value_error(affine, message):
    with pytest.raises(GeometryError, match=message):
        Geometry((3, 4, 5), affine)
    with pytest.raises(ValueError):
        Geometry((3, 4, 5), affine)


def test_affine_is_read_only_and_affine_lps_is_a_copy():
    g = oblique_geometry()
    with pytest.raises(ValueError):
        g.affine[0, 3] = 1.0
    copy = g.affine_lps
    copy[0, 3] += 5.0
    assert g.affine[0, 3] == pytest.approx(-31.7)


def test_from_spacing_rejects_bad_spacing_and_direction():
    with pytest.raises(GeometryError, match="spacing"):
        Geometry.from_spacing((3, 4, 5), (1.0, 0.0, 1.0))
    with pytest.raises(GeometryError, match="direction"):
        Geometry.from_spacing((3, 4, 5), (1.0, 1.0, 1.0), direction=np.eye(2))


# -- views --------------------------------------------------------------------------------


def test_spacing_origin_direction_round_trip_on_an_oblique_grid():
    direction = rotation("z", 17) @ rotation("x", -23)
    g = Geometry.from_spacing((23, 17, 9), (1.3, 0.9, 2.5), (-31.7, 12.25, 87.5), direction, "1.2.3")
    assert g.shape == (23, 17, 9)
    np.testing.assert_allclose(g.spacing, (1.3, 0.9, 2.5), atol=1e-12)
    np.testing.assert_allclose(g.origin, (-31.7, 12.25, 87.5), atol=1e-12)
    np.testing.assert_allclose(g.direction, direction, atol=1e-12)
    assert g.frame_of_reference_uid == "1.2.3"
    # Column n of the affine is the step in mm along axis n.
    np.testing.assert_allclose(g.affine[:3, 1], direction[:, 1] * 0.9, atol=1e-12)
    assert g.voxel_volume_ml == pytest.approx(1.3 * 0.9 * 2.5 / 1000)


def test_affine_ras_flips_x_and_y_of_affine_lps():
    g = oblique_geometry()
    np.testing.assert_array_equal(g.affine_ras, np.diag([-1.0, -1.0, 1.0, 1.0]) @ g.affine_lps)
    np.testing.assert_array_equal(g.affine_ras[2], g.affine_lps[2])
    np.testing.assert_array_equal(g.affine_ras[:2], -g.affine_lps[:2])


def test_from_ras_affine_inverts_affine_ras():
    g = oblique_geometry()
    back = Geometry.from_ras_affine(g.shape, g.affine_ras, g.frame_of_reference_uid)
    assert back == g
    np.testing.assert_array_equal(back.affine, g.affine)
    # A RAS origin at (+10, +20, +30) is at (-10, -20, +30) in LPS.
    ras = np.eye(4)
    ras[:3, 3] = (10.0, 20.0, 30.0)
    assert Geometry.from_ras_affine((2, 2, 2), ras).origin == (-10.0, -20.0, 30.0)
    np.testing.assert_array_equal(LPS_TO_RAS @ LPS_TO_RAS, np.eye(4))


def _from_dicom_orientation(row, column, shape=(8, 6, 4), spacing=(0.8, 0.7, 3.0)):
    """A grid as a DICOM reader builds it: i along the row, j down the column, k along row x column."""
    row, column = np.asarray(row, float), np.asarray(column, float)
    return Geometry.from_spacing(shape, spacing, (5.0, -7.0, 11.0), np.column_stack([row, column, np.cross(row, column)]))


@pytest.mark.parametrize(
    "row, column, code",
    [
        ((1, 0, 0), (0, 1, 0), "LPS"),  # axial, head first
        ((0, 1, 0), (0, 0, -1), "PIR"),  # sagittal
        ((1, 0, 0), (0, 0, -1), "LIP"),  # coronal
    ],
    ids=["axial", "sagittal", "coronal"],
)
def test_orientation_code_of_dicom_orientations(row, column, code):
    assert _from_dicom_orientation(row, column).orientation_code == code


def test_orientation_code_of_feet_first_and_slightly_oblique_grids():
    assert axial_geometry().orientation_code == "LPS"
    assert axial_geometry(feet_first=True).orientation_code == "RPI"
    assert oblique_geometry(direction=rotation("z", 20)).orientation_code == "LPS"
    assert oblique_geometry(direction=rotation("z", 160)).orientation_code == "RAS"


def test_is_orthogonal():
    assert oblique_geometry().is_orthogonal
    assert axial_geometry(feet_first=True).is_orthogonal
    sheared = oblique_geometry().affine_lps
    sheared[:3, 2] += 0.3 * sheared[:3, 1]  # gantry tilt: slices slide along j
    assert not Geometry((4, 5, 6), sheared).is_orthogonal


# -- mapping ------------------------------------------------------------------------------


def test_index_to_physical_uses_columns_in_index_order():
    g = Geometry.from_spacing((5, 6, 7), (2.0, 3.0, 4.0), (10.0, 20.0, 30.0))
    np.testing.assert_allclose(g.index_to_physical((1, 0, 0)), (12.0, 20.0, 30.0))
    np.testing.assert_allclose(g.index_to_physical((0, 1, 0)), (10.0, 23.0, 30.0))
    np.testing.assert_allclose(g.index_to_physical((0, 0, 1)), (10.0, 20.0, 34.0))
    np.testing.assert_allclose(g.index_to_physical([[0, 0, 0], [4, 5, 6]]), [[10, 20, 30], [18, 35, 54]])


def test_physical_to_index_inverts_index_to_physical():
    g = oblique_geometry()
    rng = np.random.default_rng(0)
    index = rng.uniform(-3, 30, size=(50, 3))
    np.testing.assert_allclose(g.physical_to_index(g.index_to_physical(index)), index, atol=1e-9)
    point = np.array([1.5, -2.25, 90.0])
    np.testing.assert_allclose(g.index_to_physical(g.physical_to_index(point)), point, atol=1e-9)
    assert g.physical_to_index(point).shape == (3,)


def test_corners_and_distances():
    g = axial_geometry()
    corners = g.corners()
    assert corners.shape == (8, 3)
    np.testing.assert_allclose(corners[0], g.origin)
    np.testing.assert_allclose(corners[-1], g.index_to_physical(np.array(g.shape) - 1))
    shifted = Geometry.from_spacing(g.shape, g.spacing, np.add(g.origin, (0.0, 0.0, 0.5)))
    assert g.max_distance_to(shifted) == pytest.approx(0.5)
    assert g.max_distance_to(g.with_shape((40, 32, 13))) == float("inf")
    assert g.is_close(shifted, tolerance_mm=0.6)
    assert not g.is_close(shifted, tolerance_mm=0.4)


def test_with_shape_keeps_origin_axes_and_frame_of_reference():
    g = oblique_geometry()
    h = g.with_shape((3, 4, 5))
    assert h.shape == (3, 4, 5)
    np.testing.assert_array_equal(h.affine, g.affine)
    assert h.frame_of_reference_uid == g.frame_of_reference_uid


# -- comparison ---------------------------------------------------------------------------


def test_require_same_grid_names_the_size_difference():
    g = axial_geometry()
    g.require_same_grid(Geometry.from_spacing(g.shape, g.spacing, np.add(g.origin, 5e-4)))  # within 1e-3 mm
    with pytest.raises(GeometryError, match=r"image and mask differ in size: \[40, 32, 12\] vs \[40, 32, 11\]"):
        g.require_same_grid(g.with_shape((40, 32, 11)), what="image and mask")


def test_require_same_grid_names_origin_spacing_and_orientation():
    g = axial_geometry()
    moved = Geometry.from_spacing(g.shape, g.spacing, (-30.0, -19.5, 42.0))
    with pytest.raises(GeometryError) as caught:
        g.require_same_grid(moved, what="image and mask")
    message = str(caught.value)
    assert message.startswith("image and mask are 2 mm apart")
    assert "origin [-30, -19.5, 40] vs [-30, -19.5, 42]" in message

    flipped = axial_geometry(feet_first=True)
    with pytest.raises(GeometryError, match="orientation LPS vs RPI"):
        g.require_same_grid(flipped)

    finer = Geometry.from_spacing(g.shape, (1.5, 1.2, 2.5), g.origin)
    with pytest.raises(GeometryError, match=r"spacing \[1.5, 1.2, 3\] vs \[1.5, 1.2, 2.5\]"):
        g.require_same_grid(finer)
    g.require_same_grid(moved, tolerance_mm=2.5)  # a looser tolerance accepts it


def test_equality_and_hash():
    a = oblique_geometry()
    b = oblique_geometry()
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1
    assert a != oblique_geometry(origin=(-31.7, 12.25, 87.6))
    assert a != oblique_geometry(shape=(23, 17, 10))
    assert a != Geometry(a.shape, a.affine, "9.9.9")
    assert a != "not a geometry"


def test_equal_geometries_hash_alike_despite_negative_zeros():
    # rotation by 0 degrees has -0.0 entries (-sin 0); the affine equals the identity one.
    a = Geometry.from_spacing((2, 3, 4), (1.0, 1.0, 1.0), direction=rotation("z", 0))
    b = Geometry.from_spacing((2, 3, 4), (1.0, 1.0, 1.0), direction=np.eye(3))
    assert np.signbit(a.affine).any()
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1


def test_repr_shows_shape_spacing_origin_orientation():
    text = repr(axial_geometry())
    assert text == "Geometry(shape=[40, 32, 12], spacing=[1.5, 1.2, 3], origin=[-30, -19.5, 40], orientation='LPS')"
