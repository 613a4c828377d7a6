"""Slices land where the scanner put them, whatever the orientation, file names or numbering."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from medseg.geometry import Geometry
from medseg.io.dicom import read_dicom, read_series, scan
from tests import factories

# name -> direction (columns: i, j, k axes in LPS)
DIRECTIONS = {
    "axial-head-first": np.eye(3),
    "axial-feet-first": np.diag([-1.0, 1.0, -1.0]),
    "axial-prone": np.diag([-1.0, -1.0, 1.0]),
    "oblique": factories.rotation("z", 17) @ factories.rotation("x", -23),
    "double-oblique-sagittal": factories.rotation("y", 11)
    @ factories.rotation("x", 7)
    @ np.array([[0.0, 0, -1], [1, 0, 0], [0, -1, 0]]),
    "coronal": np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]]),
    # k runs against row x column: files written head to feet with a head-first orientation.
    "axial-k-reversed": np.diag([1.0, 1.0, -1.0]),
}


def _truth(name: str) -> Geometry:
    return Geometry.from_spacing((21, 17, 9), (1.3, 0.9, 2.5), (-31.7, 12.25, 87.5), DIRECTIONS[name], "1.2.3.4.8")


def _sitk_series(folder) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_geometry_matches_written_positions_and_simpleitk(tmp_path, name):
    truth = factories.ramp_volume(_truth(name))
    factories.write_series(truth, tmp_path)

    volume = read_dicom(tmp_path)

    # Against the truth: every voxel holds the value written at its physical position.
    np.testing.assert_array_equal(factories.aligned_to(volume, truth.geometry), truth.channel(0))
    right_handed = np.linalg.det(truth.geometry.direction) > 0
    if right_handed:  # the reader keeps k along row x column, so a right-handed grid comes back as written
        assert volume.geometry.max_distance_to(truth.geometry) < 1e-3
        np.testing.assert_array_equal(volume.channel(0), truth.channel(0))
    else:
        assert np.linalg.det(volume.geometry.direction) > 0
        np.testing.assert_array_equal(volume.channel(0), truth.channel(0)[:, :, ::-1])
    assert volume.geometry.frame_of_reference_uid == "1.2.3.4.8"

    # Against SimpleITK's ImageSeriesReader (GDCM), which sorts and measures independently.
    image = _sitk_series(tmp_path)
    assert image.GetSize() == volume.geometry.shape
    np.testing.assert_allclose(image.GetOrigin(), volume.geometry.origin, atol=1e-3)
    np.testing.assert_allclose(image.GetSpacing(), volume.geometry.spacing, atol=1e-3)
    np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)), volume.geometry.direction, atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image).transpose(2, 1, 0), volume.channel(0))


def test_orientation_codes_name_the_axes(tmp_path):
    """Head-first axial is LPS, feet-first axial RPI: the codes follow the written directions."""
    for feet_first, code in ((False, "LPS"), (True, "RPI")):
        folder = tmp_path / str(feet_first)
        factories.write_series(factories.ramp_volume(factories.axial_geometry(feet_first=feet_first)), folder)
        assert read_dicom(folder).geometry.orientation_code == code


@pytest.mark.parametrize("numbering", ["reversed", "scrambled"])
def test_shuffled_names_and_instance_numbers_are_ignored(tmp_path, numbering):
    truth = factories.ramp_volume(factories.oblique_geometry(shape=(19, 15, 11)))
    written = factories.write_series(truth, tmp_path / "staging")
    sop_uids = [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in written]
    rng = np.random.default_rng(3)
    numbers = list(range(len(written), 0, -1)) if numbering == "reversed" else list(rng.permutation(len(written)) + 1)
    for path, number in zip(written, numbers):
        factories.edit_dicom(path, InstanceNumber=int(number))
    paths = factories.move_shuffled(written, tmp_path / "scan", seed=11)
    assert all(p.suffix == "" for p in paths)
    assert sorted(paths) != paths  # the name order is not the slice order

    found = scan(tmp_path / "scan")
    assert len(found.series) == 1 and not found.skipped
    volume = read_series(found.series[0])

    np.testing.assert_array_equal(volume.channel(0), truth.channel(0))
    assert volume.geometry.max_distance_to(truth.geometry) < 1e-3
    assert list(volume.source.sop_instance_uids) == sop_uids
    assert list(volume.source.files) == [str(p) for p in paths]
