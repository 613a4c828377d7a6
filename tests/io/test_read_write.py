"""read_image / write_image: format from the path, and conversions that keep voxels and geometry."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medseg.errors import DicomError, InputError
from medseg.io import IMAGE_SUFFIXES, image_format, read_image, write_image
from medseg.volume import VolumeKind
from tests.factories import oblique_geometry, phantom_pair, ramp_volume, write_series

TOL_MM = 1e-4


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("ct.nii", "nifti"),
        ("ct.nii.gz", "nifti"),
        ("CT.NII.GZ", "nifti"),
        ("a.b/ct.v2.nii.gz", "nifti"),
        ("ct.nrrd", "itk"),
        ("ct.nhdr", "itk"),
        ("ct.mha", "itk"),
        ("ct.MHD", "itk"),
        ("ct.gz", None),
        ("ct.nii.bak", None),
        ("dicom_folder", None),
        ("ct.dcm", None),
    ],
)
def test_image_format(name, fmt):
    assert image_format(name) == fmt


def test_every_known_suffix_has_a_format():
    assert all(image_format(f"x{suffix}") for suffix in IMAGE_SUFFIXES)


@pytest.mark.parametrize("name", ["ct.nii", "ct.nii.gz", "ct.nrrd", "ct.mha", "CT.NII.GZ"])
def test_write_then_read_in_each_format(tmp_path, name):
    volume = ramp_volume()
    path = write_image(volume, tmp_path / name)
    assert path == tmp_path / name
    assert [p.name for p in tmp_path.iterdir()] == [name]
    back = read_image(path)
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.geometry.shape == volume.geometry.shape
    assert back.geometry.max_distance_to(volume.geometry) < TOL_MM


def test_format_is_chosen_by_suffix_not_guessed(tmp_path):
    volume = ramp_volume()
    write_image(volume, tmp_path / "ct.nii.gz")
    write_image(volume, tmp_path / "ct.nrrd")
    assert nib.load(tmp_path / "ct.nii.gz").shape == (23, 17, 9)
    assert (tmp_path / "ct.nrrd").read_bytes().startswith(b"NRRD")
    assert (tmp_path / "ct.nii.gz").read_bytes()[:2] == b"\x1f\x8b"  # gzip
    assert sitk.ReadImage(str(tmp_path / "ct.nrrd")).GetSize() == (23, 17, 9)


def test_labels_through_every_format(tmp_path):
    image, labels = phantom_pair()
    current = labels
    for name in ["a.nii.gz", "b.nrrd", "c.mha", "d.nii"]:
        current = read_image(write_image(current, tmp_path / name), kind="label")
        assert current.kind is VolumeKind.LABEL
        assert current.dtype == np.uint8
        np.testing.assert_array_equal(current.array, labels.array)
        assert current.geometry.max_distance_to(labels.geometry) < TOL_MM
    assert set(np.unique(current.array).tolist()) == {0, 1, 2, 3}
    back_image = read_image(write_image(image, tmp_path / "ct.nrrd"))
    back_image.geometry.require_same_grid(current.geometry, tolerance_mm=TOL_MM, what="image and labels")


def test_an_unknown_output_format_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match=r"ct\.png.*\.nii"):
        write_image(ramp_volume(), tmp_path / "ct.png")
    assert not list(tmp_path.iterdir())


def test_a_missing_path_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        read_image(tmp_path / "nowhere")
    with pytest.raises(InputError, match=r"nowhere\.nii\.gz"):
        read_image(tmp_path / "nowhere.nii.gz")
    with pytest.raises(InputError, match=r"nowhere\.nrrd"):
        read_image(tmp_path / "nowhere.nrrd")


def test_a_folder_without_dicom_is_a_dicom_error(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(DicomError):
        read_image(tmp_path)


def test_a_dicom_folder_is_read_as_a_series(tmp_path):
    ramp = ramp_volume(oblique_geometry(shape=(12, 10, 5)))
    volume = ramp.with_array(ramp.array.astype(np.int16))
    write_series(volume, tmp_path / "series")
    back = read_image(tmp_path / "series")
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.geometry.max_distance_to(volume.geometry) < 1e-3
    assert back.source.modality == "CT"
    assert len(back.source.sop_instance_uids) == 5
