"""NRRD and MetaImage through SimpleITK, checked against SimpleITK, nibabel and the NRRD header text."""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medseg.errors import GeometryError, InputError
from medseg.geometry import Geometry
from medseg.io.itk import read_itk, write_itk
from medseg.io.nifti import read_nifti
from medseg.volume import Volume, VolumeKind
from tests.factories import axial_geometry, oblique_geometry, ramp_volume, rotation

TOL_MM = 1e-4


def assert_same_grid(actual: Geometry, expected: Geometry, tol: float = 1e-9) -> None:
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual.affine, expected.affine, atol=tol)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_oblique_image_round_trip(tmp_path, suffix):
    volume = ramp_volume()
    path = write_itk(volume, tmp_path / f"ct{suffix}")
    assert path.exists()
    back = read_itk(path)
    assert back.dtype == np.int32
    assert back.path == str(path)
    np.testing.assert_array_equal(back.array, volume.array)
    assert_same_grid(back.geometry, volume.geometry)  # text formats keep 17 digits


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_feet_first_float_image_round_trip(tmp_path, suffix):
    g = axial_geometry(feet_first=True)
    data = np.random.default_rng(2).normal(size=g.shape).astype(np.float32)
    back = read_itk(write_itk(Volume(data, g), tmp_path / f"f{suffix}"))
    assert back.geometry.orientation_code == "RPI"
    assert_same_grid(back.geometry, g)
    np.testing.assert_array_equal(back.array[0], data)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_multi_channel_round_trip(tmp_path, suffix):
    g = oblique_geometry()
    ramp = ramp_volume(g).array[0]
    data = np.stack([ramp, 2 * ramp, -ramp]).astype(np.float32)
    path = write_itk(Volume(data, g, kind="probabilities"), tmp_path / f"p{suffix}")
    raw = sitk.ReadImage(str(path))
    assert raw.GetNumberOfComponentsPerPixel() == 3 and raw.GetSize() == (23, 17, 9)
    back = read_itk(path, kind="probabilities")
    assert back.num_channels == 3
    np.testing.assert_array_equal(back.array, data)
    assert_same_grid(back.geometry, g)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_label_round_trip_in_the_smallest_unsigned_type(tmp_path, suffix):
    g = oblique_geometry()
    labels = (np.arange(np.prod(g.shape)) % 301).reshape(g.shape).astype(np.int64)
    path = write_itk(Volume(labels, g, kind="label"), tmp_path / f"l{suffix}")
    assert sitk.ReadImage(str(path)).GetPixelID() == sitk.sitkUInt16
    back = read_itk(path, kind="label")
    assert back.kind is VolumeKind.LABEL and back.dtype == np.uint16
    np.testing.assert_array_equal(back.array[0], labels)


def test_simpleitk_sees_the_same_voxels_at_the_same_places(tmp_path):
    volume = ramp_volume()
    g = volume.geometry
    image = sitk.ReadImage(str(write_itk(volume, tmp_path / "ct.mha")))
    assert image.GetSize() == g.shape
    for index in [(0, 0, 0), (22, 0, 0), (0, 16, 0), (0, 0, 8), (5, 9, 2)]:
        np.testing.assert_allclose(image.TransformIndexToPhysicalPoint(index), g.index_to_physical(index), atol=1e-9)
        assert image[index] == 100 * index[0] + 10 * index[1] + index[2]


def test_nrrd_header_states_lps_origin_and_axis_steps(tmp_path):
    g = oblique_geometry()
    path = write_itk(ramp_volume(g), tmp_path / "ct.nrrd")
    header = path.read_bytes().split(b"\n\n", 1)[0].decode("ascii")
    assert "space: left-posterior-superior" in header
    assert "sizes: 23 17 9" in header
    numbers = lambda text: [float(v) for v in re.findall(r"[-+0-9.eE]+", text)]  # noqa: E731
    origin = numbers(re.search(r"space origin: (.*)", header).group(1))
    directions = np.reshape(numbers(re.search(r"space directions: (.*)", header).group(1)), (3, 3))
    np.testing.assert_allclose(origin, g.origin, atol=1e-9)
    # NRRD lists one vector per axis: the step in mm along i, then j, then k.
    np.testing.assert_allclose(directions, g.affine[:3, :3].T, atol=1e-9)


def test_nifti_converted_to_nrrd_keeps_the_geometry_nibabel_reads(tmp_path):
    # An oblique NIfTI written by nibabel alone (RAS), the way other tools make them.
    direction = rotation("z", -21) @ rotation("y", 11)
    lps = np.eye(4)
    lps[:3, :3] = direction * [0.78, 0.91, 3.3]
    lps[:3, 3] = (-101.5, 48.25, -360.0)
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    data = np.arange(19 * 13 * 7, dtype=np.int16).reshape(19, 13, 7)
    nifti = nib.Nifti1Image(data, ras)
    nifti.set_qform(ras, code=1)
    nifti.set_sform(ras, code=1)
    nib.save(nifti, tmp_path / "in.nii.gz")

    write_itk(read_nifti(tmp_path / "in.nii.gz"), tmp_path / "out.nrrd")

    truth = nib.load(tmp_path / "in.nii.gz")
    nrrd = sitk.ReadImage(str(tmp_path / "out.nrrd"))
    assert nrrd.GetSize() == truth.shape
    truth_data = np.asanyarray(truth.dataobj)
    for index in [(0, 0, 0), (18, 0, 0), (0, 12, 0), (0, 0, 6), (18, 12, 6), (9, 4, 3)]:
        ras_point = (truth.affine @ [*index, 1])[:3]
        lps_point = np.asarray(nrrd.TransformIndexToPhysicalPoint(index))
        np.testing.assert_allclose(lps_point, ras_point * [-1, -1, 1], atol=TOL_MM)
        assert nrrd[index] == truth_data[index]


def test_a_sheared_grid_is_refused(tmp_path):
    affine = oblique_geometry().affine_lps
    affine[:3, 2] += 0.35 * affine[:3, 1]
    volume = ramp_volume(Geometry((23, 17, 9), affine))
    with pytest.raises(GeometryError, match="sheared"):
        write_itk(volume, tmp_path / "tilt.nrrd")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("suffix, instead", [(".mhd", ".mha"), (".nhdr", ".nrrd"), (".MHD", ".mha")])
def test_header_only_formats_are_refused_for_writing(tmp_path, suffix, instead):
    # Their data lands in a second file the atomic rename cannot move with the header.
    with pytest.raises(InputError, match=re.escape(instead)):
        write_itk(ramp_volume(), tmp_path / f"ct{suffix}")
    assert not list(tmp_path.iterdir())


def test_header_only_formats_are_read(tmp_path):
    volume = ramp_volume()
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array[0].transpose(2, 1, 0)))
    image.SetSpacing(volume.geometry.spacing)
    image.SetOrigin(volume.geometry.origin)
    image.SetDirection(tuple(volume.geometry.direction.flatten()))
    sitk.WriteImage(image, str(tmp_path / "ct.mhd"))
    sitk.WriteImage(image, str(tmp_path / "ct.nhdr"))
    for name in ("ct.mhd", "ct.nhdr"):
        back = read_itk(tmp_path / name)
        np.testing.assert_array_equal(back.array, volume.array)
        assert_same_grid(back.geometry, volume.geometry)


def test_a_2d_image_reads_as_one_slice(tmp_path):
    image = sitk.GetImageFromArray(np.arange(12, dtype=np.uint8).reshape(3, 4))  # (j, i)
    sitk.WriteImage(image, str(tmp_path / "slice.mha"))
    back = read_itk(tmp_path / "slice.mha")
    assert back.spatial_shape == (4, 3, 1)
    assert back.array[0, 1, 2, 0] == 9  # row 2, column 1


def test_an_unreadable_file_is_an_input_error_naming_the_path(tmp_path):
    path = tmp_path / "broken.nrrd"
    path.write_bytes(b"NRRD0004\nthis is not a header\n")
    with pytest.raises(InputError, match=r"broken\.nrrd"):
        read_itk(path)
    with pytest.raises(InputError, match=r"absent\.mha"):
        read_itk(tmp_path / "absent.mha")
