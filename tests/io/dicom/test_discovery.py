"""What scan() finds in a folder: several series, localizers, junk, split and anonymised series."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, generate_uid

from medseg.errors import DicomError
from medseg.geometry import Geometry
from medseg.io.dicom import DicomReadOptions, read_dicom, read_series, scan
from medseg.volume import Volume
from tests import factories

LOCALIZER_PLANES = {  # direction columns for a 3-plane localizer: axial, sagittal, coronal
    "axial": np.eye(3),
    "sagittal": np.array([[0.0, 0, -1], [1, 0, 0], [0, -1, 0]]),
    "coronal": np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]]),
}


def _write_localizer(folder, planes, *, series_uid=None, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), **kwargs):
    """One single-slice image per plane, all in one series, marked as a localizer."""
    series_uid = series_uid or generate_uid()
    paths = []
    for index, plane in enumerate(planes):
        geometry = Geometry.from_spacing((32, 28, 1), (4.0, 4.0, 5.0), (-60.0, -50.0, 10.0), LOCALIZER_PLANES[plane])
        written = factories.write_series(
            factories.ramp_volume(geometry),
            folder,
            series_instance_uid=series_uid,
            file_names=[f"loc{index}.dcm"],
            **kwargs,
        )
        for path in written:
            factories.edit_dicom(path, ImageType=list(image_type), InstanceNumber=index + 1)
        paths += written
    return series_uid, paths


@pytest.fixture(scope="module")
def main_image():
    return factories.phantom_pair()[0]


@pytest.mark.parametrize("planes", [["sagittal"], ["axial", "sagittal", "coronal"]], ids=["1-plane", "3-plane"])
def test_localizer_and_second_series_in_one_folder(tmp_path, main_image, planes):
    main_uid, second_uid = generate_uid(), generate_uid()
    main_names = [f"a{k:03d}" for k in range(main_image.spatial_shape[2])]
    factories.write_series(main_image, tmp_path, series_instance_uid=main_uid, series_number=2, file_names=main_names)
    second = factories.ramp_volume(factories.oblique_geometry())
    second_names = [f"b{k:03d}" for k in range(9)]
    factories.write_series(
        second, tmp_path, series_instance_uid=second_uid, series_number=3, modality="MR", file_names=second_names
    )
    localizer_uid, _ = _write_localizer(tmp_path, planes, series_number=1, series_description="Scout")

    found = scan(tmp_path)
    assert not found.skipped
    localizers = [s for s in found.series if s.is_localizer]
    assert {s.series_uid for s in localizers} == {localizer_uid}
    assert len(localizers) == len(planes)  # one part per orientation
    assert all(s.to_dict()["is_localizer"] for s in localizers)
    volumes = found.volumes()
    assert [s.series_uid for s in volumes] == [main_uid, second_uid]  # ordered by series number
    assert not any(s.is_localizer for s in volumes)
    assert len(found.volumes(include_localizers=True)) == 2 + len(planes)

    # Two volumes: read_dicom must not guess, and names both; given a UID it reads that one.
    with pytest.raises(DicomError, match="2 image series") as error:
        read_dicom(tmp_path)
    assert main_uid in str(error.value) and second_uid in str(error.value)
    np.testing.assert_array_equal(read_dicom(tmp_path, series_uid=main_uid).channel(0), main_image.channel(0))
    np.testing.assert_array_equal(read_dicom(tmp_path, series_uid=second_uid).channel(0), second.channel(0))


def test_localizer_sharing_the_series_uid_is_split_off(tmp_path, main_image):
    uid = generate_uid()
    factories.write_series(main_image, tmp_path, series_instance_uid=uid)
    _write_localizer(tmp_path, ["coronal"], series_uid=uid)

    found = scan(tmp_path)
    assert [s.is_localizer for s in found.series].count(True) == 1
    (volume_series,) = found.volumes()
    assert volume_series.series_uid == uid and not volume_series.problems
    volume = read_dicom(tmp_path)
    np.testing.assert_array_equal(volume.channel(0), main_image.channel(0))


def test_localizer_recognised_by_description(tmp_path):
    _write_localizer(
        tmp_path, ["coronal"], image_type=("ORIGINAL", "PRIMARY", "AXIAL"), series_description="Topogram  0.6  T20f"
    )
    (series,) = scan(tmp_path).series
    assert series.is_localizer
    assert scan(tmp_path).volumes() == ()
    with pytest.raises(DicomError, match="no image series"):
        read_dicom(tmp_path)


def test_junk_and_truncated_files_are_skipped_with_reasons(tmp_path, main_image):
    intact_uid, damaged_uid = generate_uid(), generate_uid()
    factories.write_series(main_image, tmp_path / "intact", series_instance_uid=intact_uid)
    damaged = factories.ramp_volume(factories.oblique_geometry(shape=(40, 34, 9)))
    paths = factories.write_series(damaged, tmp_path / "damaged", series_instance_uid=damaged_uid)
    (tmp_path / "notes.txt").write_text("exported by the PACS viewer\n")
    (tmp_path / "intact" / "snapshot").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    factories.truncate_file(paths[4], 0.5)  # cut inside the pixel data
    factories.truncate_file(paths[0], 0.2)  # cut inside the header

    found = scan(tmp_path)

    reasons = {s.path: s.reason for s in found.skipped}
    expected = {tmp_path / "notes.txt", tmp_path / "intact" / "snapshot", paths[4], paths[0]}
    assert set(reasons) == {str(p) for p in expected}
    assert reasons[str(tmp_path / "notes.txt")] == "not a DICOM file"
    assert reasons[str(tmp_path / "intact" / "snapshot")] == "not a DICOM file"
    assert reasons[str(paths[4])].startswith("truncated"), reasons[str(paths[4])]
    assert "pixel data" in reasons[str(paths[4])]
    assert reasons[str(paths[0])].startswith("truncated"), reasons[str(paths[0])]

    by_uid = {s.series_uid: s for s in found.series}
    assert set(by_uid) == {intact_uid, damaged_uid}
    assert not by_uid[intact_uid].problems
    np.testing.assert_array_equal(read_series(by_uid[intact_uid]).channel(0), main_image.channel(0))

    # The damaged series lost its first slice (shorter, no problem) and its fifth (a gap).
    damaged_series = by_uid[damaged_uid]
    assert [p.code for p in damaged_series.problems] == ["missing_slices"]
    assert "1 slice(s) missing" in damaged_series.problems[0].message
    with pytest.raises(DicomError, match="missing"):
        read_series(damaged_series)
    volume = read_series(damaged_series, options=DicomReadOptions(irregular="resample"))
    np.testing.assert_array_equal(volume.channel(0), damaged.channel(0)[:, :, 1:])  # a linear ramp interpolates exactly


@pytest.mark.filterwarnings("ignore:End of file reached before delimiter")
def test_truncated_compressed_file_is_skipped(tmp_path, main_image):
    paths = factories.write_series(main_image, tmp_path, transfer_syntax=JPEG2000Lossless)
    factories.truncate_file(paths[6], 0.6)
    found = scan(tmp_path)
    assert [s.path for s in found.skipped] == [str(paths[6])]
    assert "truncated" in found.skipped[0].reason
    assert found.series[0].layout.problem_codes == {"missing_slices"}


def _write_two(tmp_path, first: Volume, second: Volume, edit_first: dict, edit_second: dict, **kwargs):
    uid, study = generate_uid(), generate_uid()
    count = first.spatial_shape[2]
    for volume, edits, prefix in ((first, edit_first, "x"), (second, edit_second, "y")):
        names = [f"{prefix}{k:02d}" for k in range(count)]
        paths = factories.write_series(
            volume, tmp_path, series_instance_uid=uid, study_instance_uid=study, file_names=names, **kwargs
        )
        for path in paths:
            factories.edit_dicom(path, **edits)
    return uid


def test_multi_echo_is_split_by_echo(tmp_path):
    geometry = factories.oblique_geometry()
    echo1 = factories.ramp_volume(geometry)
    echo2 = echo1.with_array(echo1.array // 3 + 5)
    first_echo, second_echo = {"EchoNumbers": 1, "EchoTime": "9.5"}, {"EchoNumbers": 2, "EchoTime": "38"}
    uid = _write_two(tmp_path, echo1, echo2, first_echo, second_echo, modality="MR")

    found = scan(tmp_path)
    assert [(s.series_uid, s.part) for s in found.series] == [(uid, "echo 1"), (uid, "echo 2")]
    for series, truth in zip(found.series, (echo1, echo2)):
        assert not series.problems
        volume = read_series(series)
        np.testing.assert_array_equal(volume.channel(0), truth.channel(0))
        assert volume.geometry.max_distance_to(geometry) < 1e-3


def test_repeated_acquisitions_are_split(tmp_path):
    geometry = factories.oblique_geometry()
    first = factories.ramp_volume(geometry)
    second = first.with_array(first.array + 1000)
    uid = _write_two(tmp_path, first, second, {"AcquisitionNumber": 1}, {"AcquisitionNumber": 2})

    found = scan(tmp_path)
    assert [(s.series_uid, s.part) for s in found.series] == [(uid, "acq 1"), (uid, "acq 2")]
    for series, truth in zip(found.series, (first, second)):
        np.testing.assert_array_equal(read_series(series).channel(0), truth.channel(0))


def test_repeated_positions_without_a_separating_attribute_are_refused(tmp_path):
    geometry = factories.oblique_geometry()
    first = factories.ramp_volume(geometry)
    _write_two(tmp_path, first, first.with_array(first.array + 1000), {}, {})
    (series,) = scan(tmp_path).series
    assert "duplicate_positions" in series.layout.problem_codes
    with pytest.raises(DicomError, match="share a position"):
        read_series(series)


def test_one_acquisition_number_per_slice_is_not_split(tmp_path):
    truth = factories.ramp_volume(factories.oblique_geometry())
    paths = factories.write_series(truth, tmp_path)
    for k, path in enumerate(paths):
        factories.edit_dicom(path, AcquisitionNumber=k + 1)
    (series,) = scan(tmp_path).series
    assert series.part is None and not series.problems
    np.testing.assert_array_equal(read_series(series).channel(0), truth.channel(0))


def test_anonymised_series_without_uids_groups_and_reads(tmp_path, main_image):
    truth = main_image
    other = factories.ramp_volume(factories.oblique_geometry())
    first = factories.write_series(truth, tmp_path / "a", series_number=4, series_description="abdomen")
    second = factories.write_series(other, tmp_path / "b", series_number=5, series_description="other")
    for path in first + second:
        factories.edit_dicom(
            path, SeriesInstanceUID="", SOPInstanceUID="", StudyInstanceUID="", file_meta__MediaStorageSOPInstanceUID=""
        )
    assert pydicom.dcmread(first[0]).SOPInstanceUID == ""
    paths = factories.move_shuffled(first + second, tmp_path / "flat", seed=5)

    found = scan(tmp_path / "flat")
    assert len(found.series) == 2 and not found.skipped
    for series, truth_volume, count in zip(found.series, (truth, other), (len(first), len(second))):
        assert series.series_uid is None
        assert [p.code for p in series.problems] == ["missing_series_uid"]
        assert len(series.frames) == count
        volume = read_series(series)
        np.testing.assert_array_equal(volume.channel(0), truth_volume.channel(0))
        assert volume.geometry.max_distance_to(truth_volume.geometry) < 1e-3
        json.dumps(series.to_dict())  # the listing still serialises
    assert set(found.series[0].files) == {str(p) for p in paths[: len(first)]}
