"""Stacks that are not a plain regular grid: refused by default, repaired only when asked."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from medseg.errors import DicomError
from medseg.io.dicom import DicomReadOptions, read_series, scan
from medseg.volume import Volume
from tests import factories

RESAMPLE = DicomReadOptions(irregular="resample")


def _only_series(folder):
    found = scan(folder)
    assert len(found.series) == 1, found.series
    return found.series[0]


def _codes(series) -> list[str]:
    return [p.code for p in series.problems]


# -- missing slice --------------------------------------------------------------------------


def test_missing_slice_is_reported_and_refused(tmp_path, phantom):
    image, _ = phantom
    paths = factories.write_series(image, tmp_path, series_description="abdomen")
    paths[6].unlink()
    series = _only_series(tmp_path)

    assert _codes(series) == ["missing_slices"]
    # 8 mm slices: one gap of 16 mm.
    assert series.problems[0].message == "1 slice(s) missing: 1 gap(s) up to 16 mm in a stack spaced 8 mm"
    with pytest.raises(DicomError) as error:
        read_series(series)
    message = str(error.value)
    assert "abdomen" in message and series.series_uid in message and "1 slice(s) missing" in message
    assert "resample" in message  # says how to accept it


def test_missing_slice_resampled_onto_the_regular_grid(tmp_path, phantom):
    image, _ = phantom
    paths = factories.write_series(image, tmp_path)
    paths[6].unlink()

    volume = read_series(_only_series(tmp_path), options=RESAMPLE)

    assert volume.geometry.max_distance_to(image.geometry) < 1e-3  # the full grid, 14 slices
    truth = image.channel(0)
    kept = [k for k in range(truth.shape[2]) if k != 6]
    np.testing.assert_array_equal(volume.channel(0)[:, :, kept], truth[:, :, kept])
    # Its slices are no longer the stored instances: no per-slice references are claimed.
    assert volume.source.resampled and volume.source.sop_instance_uids == () and volume.source.files == ()
    filled = volume.channel(0)[:, :, 6].astype(np.float64)
    below, above = truth[:, :, 5].astype(np.float64), truth[:, :, 7].astype(np.float64)
    assert np.all(np.minimum(below, above) <= filled) and np.all(filled <= np.maximum(below, above))
    assert np.max(np.abs(filled - (below + above) / 2)) <= 0.5
    assert not np.array_equal(filled, truth[:, :, 6])  # it really is an interpolation (the phantom is noisy)


@pytest.mark.parametrize("feet_first", [False, True], ids=["head-first", "feet-first"])
def test_two_adjacent_missing_slices_on_an_oblique_stack(tmp_path, feet_first):
    direction = factories.rotation("z", 17) @ factories.rotation("x", -23)
    if feet_first:
        direction = direction @ np.diag([-1.0, 1.0, -1.0])
    truth = factories.ramp_volume(factories.oblique_geometry(direction=direction))  # 9 slices, 2.5 mm apart
    paths = factories.write_series(truth, tmp_path)
    paths[3].unlink()
    paths[4].unlink()

    series = _only_series(tmp_path)
    assert series.problems[0].message == "2 slice(s) missing: 1 gap(s) up to 7.5 mm in a stack spaced 2.5 mm"
    volume = read_series(series, options=RESAMPLE)
    assert volume.geometry.max_distance_to(truth.geometry) < 1e-3
    np.testing.assert_array_equal(volume.channel(0), truth.channel(0))  # the ramp is linear in k: exact


# -- uneven spacing -------------------------------------------------------------------------


def _uneven_series(tmp_path, extra_mm: float = 0.8):
    """An axial stack, 3 mm apart, whose slices from the fifth on sit ``extra_mm`` further up.

    Every voxel holds 100*i + 10*j + 10*z (z in mm from the first slice): linear along z, so the
    value any slice should have at a physical position is known exactly.
    """
    geometry = factories.axial_geometry(shape=(20, 16, 9), spacing=(1.5, 1.2, 3.0))
    z = 3.0 * np.arange(9) + np.where(np.arange(9) >= 4, extra_mm, 0.0)
    i, j = np.meshgrid(np.arange(20), np.arange(16), indexing="ij")
    values = 100 * i[..., None] + 10 * j[..., None] + np.rint(10 * z)[None, None, :]
    paths = factories.write_series(Volume(values.astype(np.int16), geometry), tmp_path)
    origin = np.array(geometry.origin)
    for k, path in enumerate(paths):
        factories.edit_dicom(path, ImagePositionPatient=[f"{v:.6f}" for v in origin + [0, 0, z[k]]])
    return geometry, i, j


def test_uneven_spacing_is_reported_refused_and_resampled(tmp_path):
    geometry, i, j = _uneven_series(tmp_path)
    series = _only_series(tmp_path)
    assert _codes(series) == ["uneven_spacing"]
    assert series.problems[0].message == "uneven slice spacing: 1 step(s) differ from 3 mm (range 3 to 3.8 mm)"
    with pytest.raises(DicomError, match="uneven slice spacing"):
        read_series(series)

    volume = read_series(series, options=RESAMPLE)
    # 24.8 mm from first to last slice at the 3 mm step: 9 slices, the last at 24 mm.
    assert volume.geometry.max_distance_to(geometry) < 1e-3
    for k in range(9):  # the value written at each new slice's physical height
        np.testing.assert_array_equal(volume.channel(0)[:, :, k], 100 * i + 10 * j + 30 * k, err_msg=f"slice {k}")


def test_small_position_jitter_is_not_uneven(tmp_path):
    """Positions rounded by the scanner (a few micrometres) are a regular stack."""
    _uneven_series(tmp_path, extra_mm=0.004)
    assert _codes(_only_series(tmp_path)) == []


# -- duplicates -----------------------------------------------------------------------------


def test_two_instances_at_one_position_are_refused(tmp_path, phantom):
    image, _ = phantom
    paths = factories.write_series(image, tmp_path)
    extra = tmp_path / "extra"
    shutil.copy(paths[3], extra)
    factories.edit_dicom(extra, SOPInstanceUID=(uid := generate_uid()), file_meta__MediaStorageSOPInstanceUID=uid)

    series = _only_series(tmp_path)
    assert "duplicate_positions" in _codes(series)
    assert len(series.frames) == 15
    with pytest.raises(DicomError, match="share a position") as error:
        read_series(series, options=RESAMPLE)  # no policy repairs this
    assert series.series_uid in str(error.value)


def test_copied_file_is_read_once(tmp_path, phantom):
    image, _ = phantom
    paths = factories.write_series(image, tmp_path)
    shutil.copy(paths[3], tmp_path / "copy of 0004.dcm")

    series = _only_series(tmp_path)
    assert _codes(series) == ["duplicate_files"]
    assert "1 file(s)" in series.problems[0].message
    volume = read_series(series)
    np.testing.assert_array_equal(volume.channel(0), image.channel(0))
    assert len(set(volume.source.sop_instance_uids)) == 14


# -- gantry tilt ----------------------------------------------------------------------------

SPHERE_CENTER = (1.3, 2.1, 44.2)  # LPS mm
SPHERE_RADIUS = 6.5


TILTS = {  # name -> (degrees, feet first, origin)
    "head-first-15deg": (15.0, False, (-23.0, -17.5, 31.0)),
    "feet-first-minus-20deg": (-20.0, True, (23.4, -10.0, 58.0)),
}


@pytest.fixture(params=list(TILTS))
def tilted_folder(request, tmp_path):
    degrees, feet_first, origin = TILTS[request.param]
    geometry = factories.tilted_geometry(degrees, origin=origin, feet_first=feet_first)
    truth = factories.sphere_volume(geometry, SPHERE_CENTER, SPHERE_RADIUS)
    factories.write_series(truth, tmp_path)
    # As a tilted CT writes it: axial orientation, positions moving along y.
    first, last = (pydicom.dcmread(tmp_path / name) for name in ("0001.dcm", "0010.dcm"))
    flip = -1 if feet_first else 1
    assert [float(v) for v in first.ImageOrientationPatient] == [flip, 0, 0, 0, 1, 0]
    assert float(last.ImagePositionPatient[1]) - float(first.ImagePositionPatient[1]) == pytest.approx(
        27 * np.tan(np.deg2rad(degrees)), abs=1e-6
    )
    return tmp_path, truth, abs(degrees)


def test_tilt_is_reported_with_its_angle(tilted_folder):
    folder, _, degrees = tilted_folder
    series = _only_series(folder)
    assert _codes(series) == ["gantry_tilt"]
    angle = float(re.search(r"gantry tilt of ([\d.]+) degrees", series.problems[0].message).group(1))
    assert angle == pytest.approx(degrees, abs=0.01)
    with pytest.raises(DicomError, match="gantry tilt"):
        read_series(series, options=DicomReadOptions(tilt="refuse"))


def test_tilt_kept_as_a_sheared_grid(tilted_folder):
    folder, truth, _ = tilted_folder
    volume = read_series(_only_series(folder), options=DicomReadOptions(tilt="keep"))

    assert not volume.geometry.is_orthogonal
    index = np.indices(truth.spatial_shape).reshape(3, -1).T
    read_points = volume.geometry.index_to_physical(index)
    written_points = truth.geometry.index_to_physical(index)
    assert np.linalg.norm(read_points - written_points, axis=1).max() < 1e-3  # every voxel where it was written
    np.testing.assert_array_equal(volume.channel(0), truth.channel(0))


def test_tilt_resampled_keeps_the_sphere_in_place(tilted_folder):
    folder, truth, _ = tilted_folder
    volume = read_series(_only_series(folder))  # tilt="resample" is the default

    geometry = volume.geometry
    assert geometry.is_orthogonal
    # The new grid keeps the rows, columns and first slice, and steps 3 mm along the slice normal.
    np.testing.assert_allclose(geometry.direction[:, :2], truth.geometry.direction[:, :2], atol=1e-9)
    np.testing.assert_allclose(geometry.spacing, truth.geometry.spacing[:2] + (3.0,), atol=1e-6)
    np.testing.assert_allclose(geometry.origin, truth.geometry.origin, atol=1e-6)

    # The truth comes from physical space, not from the reader: where is each new voxel?
    index = np.indices(geometry.shape).reshape(3, -1).T
    distance = np.linalg.norm(geometry.index_to_physical(index) - SPHERE_CENTER, axis=1)
    values = volume.channel(0).reshape(-1)
    margin = max(truth.geometry.spacing[:2])  # one voxel in-plane
    assert np.all(values[distance < SPHERE_RADIUS - margin] > 0)
    assert np.all(values[distance > SPHERE_RADIUS + margin] < 0)
    bright = index[values > 0]
    centroid = geometry.index_to_physical(bright.mean(axis=0))
    assert np.linalg.norm(centroid - SPHERE_CENTER) < 1.0

    # The sheared truth, read as if it were orthogonal, would put the sphere elsewhere: the test can tell.
    naive = np.linalg.norm(geometry.index_to_physical(np.argwhere(truth.channel(0) > 0).mean(axis=0)) - SPHERE_CENTER)
    assert naive > 2.0
