"""NIfTI: round trips, headers as other tools read them, and RAS<->LPS against the physical truth."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medseg.errors import InputError
from medseg.geometry import Geometry
from medseg.io.nifti import label_dtype, read_nifti, write_nifti
from medseg.volume import Volume, VolumeKind
from tests.factories import oblique_geometry, ramp_volume, rotation

#: NIfTI stores the affine as float32; a few micrometres is what survives.
TOL_MM = 1e-4


def _sheared_geometry() -> Geometry:
    affine = oblique_geometry().affine_lps
    affine[:3, 2] += 0.35 * affine[:3, 1]  # a gantry tilt kept as acquired
    return Geometry((23, 17, 9), affine)


def assert_same_grid(actual: Geometry, expected: Geometry, tol: float = TOL_MM) -> None:
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual.affine, expected.affine, atol=tol)


# -- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_oblique_int16_image_round_trip(tmp_path, suffix):
    g = oblique_geometry()
    data = (ramp_volume(g).array - 1200).astype(np.int16)
    volume = Volume(data, g)
    path = write_nifti(volume, tmp_path / f"ct{suffix}")
    assert path == tmp_path / f"ct{suffix}"
    back = read_nifti(path)
    assert back.dtype == np.int16
    assert back.kind is VolumeKind.IMAGE
    assert back.path == str(path)
    np.testing.assert_array_equal(back.array, data)
    assert_same_grid(back.geometry, g)
    assert nib.load(path).get_data_dtype() == np.int16


def test_float_images_round_trip_as_float32(tmp_path):
    g = oblique_geometry()
    data = np.random.default_rng(1).normal(size=g.shape)
    back = read_nifti(write_nifti(Volume(data, g), tmp_path / "f.nii.gz"))
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back.array[0], data.astype(np.float32))
    data32 = data.astype(np.float32)
    back32 = read_nifti(write_nifti(Volume(data32, g), tmp_path / "f32.nii.gz"))
    np.testing.assert_array_equal(back32.array[0], data32)


@pytest.mark.parametrize(
    "high, source_dtype, disk_dtype",
    [(3, np.int64, np.uint8), (255, np.int32, np.uint8), (300, np.int64, np.uint16), (70000, np.int64, np.uint32)],
)
def test_label_maps_are_stored_in_the_smallest_unsigned_type(tmp_path, high, source_dtype, disk_dtype):
    g = oblique_geometry()
    labels = (np.arange(np.prod(g.shape)) % (high + 1)).reshape(g.shape).astype(source_dtype)
    labels.flat[-1] = high
    path = write_nifti(Volume(labels, g, kind="label"), tmp_path / "labels.nii.gz")
    image = nib.load(path)
    assert image.get_data_dtype() == disk_dtype
    assert image.header.get_intent()[0] == "label"
    back = read_nifti(path, kind="label")
    assert back.kind is VolumeKind.LABEL
    assert back.dtype == disk_dtype
    np.testing.assert_array_equal(back.array[0], labels)
    assert back.array.max() == high
    if high <= 300:  # small enough for every label to occur in the 3519 voxels
        assert np.unique(back.array).tolist() == list(range(high + 1))


def test_label_dtype():
    assert label_dtype(np.array([0, 255])) == np.uint8
    assert label_dtype(np.array([0, 256])) == np.uint16
    assert label_dtype(np.zeros(0, np.int64)) == np.uint8
    with pytest.raises(InputError, match="-1"):
        label_dtype(np.array([0, -1, 3]))


def test_multi_channel_round_trip_as_4d(tmp_path):
    g = oblique_geometry()
    ramp = ramp_volume(g).array[0].astype(np.float32)
    data = np.stack([ramp, -ramp])
    path = write_nifti(Volume(data, g, kind="probabilities"), tmp_path / "two.nii.gz")
    assert nib.load(path).shape == (23, 17, 9, 2)
    back = read_nifti(path, kind="probabilities")
    assert back.num_channels == 2
    np.testing.assert_array_equal(back.array, data)
    assert_same_grid(back.geometry, g)


def test_bool_images_are_written_as_uint8(tmp_path):
    g = oblique_geometry()
    mask = ramp_volume(g).array[0] % 3 == 0
    path = write_nifti(Volume(mask, g), tmp_path / "mask.nii")
    assert nib.load(path).get_data_dtype() == np.uint8
    np.testing.assert_array_equal(read_nifti(path).array[0], mask.astype(np.uint8))


# -- headers ------------------------------------------------------------------------------


def test_qform_and_sform_are_both_set_to_the_ras_affine(tmp_path):
    volume = ramp_volume()
    image = nib.load(write_nifti(volume, tmp_path / "ct.nii.gz"))
    qform, qcode = image.get_qform(coded=True)
    sform, scode = image.get_sform(coded=True)
    expected = volume.geometry.affine_ras
    assert qcode == scode == 1  # scanner: the geometry names its frame of reference
    np.testing.assert_allclose(qform, expected, atol=TOL_MM)
    np.testing.assert_allclose(sform, expected, atol=TOL_MM)
    assert image.header.get_xyzt_units()[0] == "mm"


def test_without_a_frame_of_reference_the_codes_are_aligned(tmp_path):
    g = oblique_geometry()
    volume = ramp_volume(Geometry(g.shape, g.affine))  # no frame of reference
    image = nib.load(write_nifti(volume, tmp_path / "ct.nii"))
    assert image.get_qform(coded=True)[1] == image.get_sform(coded=True)[1] == 2


def test_a_left_handed_grid_survives_the_qform(tmp_path):
    # A feet-first style flip makes the determinant negative; the qform needs qfac = -1.
    g = oblique_geometry(direction=rotation("y", 9) @ np.diag([1.0, 1.0, -1.0]))
    assert np.linalg.det(g.affine) < 0
    image = nib.load(write_nifti(ramp_volume(g), tmp_path / "ff.nii.gz"))
    np.testing.assert_allclose(image.get_qform(), g.affine_ras, atol=TOL_MM)
    np.testing.assert_allclose(image.get_sform(), g.affine_ras, atol=TOL_MM)


def test_sheared_grid_lives_in_the_sform_only(tmp_path):
    g = _sheared_geometry()
    assert not g.is_orthogonal
    path = write_nifti(ramp_volume(g), tmp_path / "tilt.nii.gz")
    image = nib.load(path)
    sform, scode = image.get_sform(coded=True)
    assert scode > 0
    np.testing.assert_allclose(sform, g.affine_ras, atol=TOL_MM)
    assert image.get_qform(coded=True)[1] == 0
    assert int(image.header["qform_code"]) == 0
    assert image.affine is not None and np.allclose(image.affine, g.affine_ras, atol=TOL_MM)  # what tools use
    back = read_nifti(path)
    assert_same_grid(back.geometry, g)
    assert not back.geometry.is_orthogonal


# -- physical truth -----------------------------------------------------------------------


def test_a_voxel_is_where_nibabel_says_with_x_and_y_negated(tmp_path):
    volume = ramp_volume()
    g = volume.geometry
    image = nib.load(write_nifti(volume, tmp_path / "ct.nii.gz"))
    data = np.asanyarray(image.dataobj)
    for index in [(0, 0, 0), (22, 0, 0), (0, 16, 0), (0, 0, 8), (7, 11, 3), (22, 16, 8)]:
        ras = (image.affine @ [*index, 1])[:3]
        lps = g.index_to_physical(index)
        np.testing.assert_allclose(ras, lps * [-1, -1, 1], atol=TOL_MM)
        # The same voxel holds the same value: no transposes or flips on disk.
        assert data[index] == 100 * index[0] + 10 * index[1] + index[2]


def test_a_nifti_made_by_nibabel_reads_as_lps(tmp_path):
    # An FSL-style "LAS" NIfTI: i runs towards the patient's left, j anterior, k head.
    ras_affine = np.array([[-0.8, 0, 0, 90.0], [0, 0.8, 0, -126.0], [0, 0, 2.0, -72.0], [0, 0, 0, 1]])
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    nib.save(nib.Nifti1Image(data, ras_affine), tmp_path / "ext.nii.gz")
    back = read_nifti(tmp_path / "ext.nii.gz")
    assert back.geometry.origin == pytest.approx((-90.0, 126.0, -72.0))
    assert back.geometry.spacing == pytest.approx((0.8, 0.8, 2.0))
    assert back.geometry.orientation_code == "LAS"
    np.testing.assert_array_equal(back.array[0], data)


def test_reading_a_nifti_written_by_simpleitk_agrees_with_simpleitk(tmp_path):
    data = np.arange(7 * 6 * 5, dtype=np.int16).reshape(7, 6, 5)  # (k, j, i)
    image = sitk.GetImageFromArray(data)
    direction = rotation("z", 25) @ rotation("y", -14) @ np.diag([1.0, -1.0, 1.0])
    image.SetSpacing((1.3, 0.7, 2.2))
    image.SetOrigin((10.5, -20.25, 33.0))
    image.SetDirection(tuple(direction.flatten()))
    sitk.WriteImage(image, str(tmp_path / "sitk.nii.gz"))

    truth = sitk.ReadImage(str(tmp_path / "sitk.nii.gz"))
    back = read_nifti(tmp_path / "sitk.nii.gz")
    assert back.spatial_shape == truth.GetSize() == (5, 6, 7)
    np.testing.assert_allclose(back.geometry.origin, truth.GetOrigin(), atol=TOL_MM)
    np.testing.assert_allclose(back.geometry.spacing, truth.GetSpacing(), atol=TOL_MM)
    np.testing.assert_allclose(back.geometry.direction, np.reshape(truth.GetDirection(), (3, 3)), atol=TOL_MM)
    np.testing.assert_allclose(back.geometry.direction, direction, atol=TOL_MM)
    for index in [(0, 0, 0), (4, 0, 0), (0, 5, 0), (0, 0, 6), (3, 2, 5)]:
        np.testing.assert_allclose(
            back.geometry.index_to_physical(index), truth.TransformIndexToPhysicalPoint(index), atol=TOL_MM
        )
        assert back.array[(0, *index)] == truth[index]


# -- errors -------------------------------------------------------------------------------


def test_a_corrupt_file_is_an_input_error_naming_the_path(tmp_path):
    path = tmp_path / "junk.nii.gz"
    path.write_bytes(b"this is not a NIfTI file at all")
    with pytest.raises(InputError, match="junk.nii.gz"):
        read_nifti(path)


def test_a_truncated_file_is_an_input_error_naming_the_path(tmp_path):
    path = write_nifti(ramp_volume(), tmp_path / "cut.nii")
    path.write_bytes(path.read_bytes()[:2000])  # the header survives, the voxels do not
    with pytest.raises(InputError, match=r"cut\.nii"):
        read_nifti(path)
    gz = tmp_path / "cut.nii.gz"
    gz.write_bytes(gzip.compress(b"\x00" * 100))
    with pytest.raises(ValueError, match=r"cut\.nii\.gz"):
        read_nifti(gz)


def test_a_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="nothing.nii"):
        read_nifti(tmp_path / "nothing.nii")


def test_a_non_integral_label_map_is_an_input_error(tmp_path):
    g = oblique_geometry()
    data = np.zeros(g.shape, np.float32)
    data[3, 4, 5] = 1.5
    path = write_nifti(Volume(data, g), tmp_path / "soft.nii.gz")
    with pytest.raises(InputError, match=r"soft\.nii\.gz.*1\.5"):
        read_nifti(path, kind="label")
    assert read_nifti(path).dtype == np.float32  # as an image it is fine


def test_whole_floats_read_as_labels_become_unsigned_integers(tmp_path):
    g = oblique_geometry()
    data = np.zeros(g.shape, np.float32)
    data[1, 2, 3], data[4, 5, 6] = 2.0, 300.0
    back = read_nifti(write_nifti(Volume(data, g), tmp_path / "whole.nii.gz"), kind="label")
    assert back.dtype == np.uint16
    assert back.array[0, 1, 2, 3] == 2 and back.array[0, 4, 5, 6] == 300
    assert int(back.array.sum()) == 302


def test_negative_labels_are_refused_on_write(tmp_path):
    g = oblique_geometry()
    data = np.zeros(g.shape, np.int16)
    data[0, 0, 0] = -2
    with pytest.raises(InputError, match="non-negative"):
        write_nifti(Volume(data, g, kind="label"), tmp_path / "neg.nii.gz")
    assert not list(tmp_path.iterdir())
