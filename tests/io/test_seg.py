"""DICOM SEG: written on the scan's own instances, read back voxel for voxel, valid per dciodvfy."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from highdicom.legacy import LegacyConvertedEnhancedCTImage
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from medseg.errors import GeometryError, InputError
from medseg.geometry import Geometry
from medseg.io.dicom import DicomReadOptions, read_dicom
from medseg.io.dicom_outputs import AlgorithmIdentity
from medseg.io.nifti import read_nifti, write_nifti
from medseg.io.seg import check_seg, read_seg, write_seg
from medseg.volume import Segment, Volume, VolumeKind
from tests import factories

DCIODVFY = shutil.which("dciodvfy")
ALGORITHM = AlgorithmIdentity("abdomen-ct", "0.1.0+sha256:1a2b3c4d")

LIVER = (("91723000", "SCT", "Anatomical Structure"), ("10200004", "SCT", "Liver"))
LUNG = (("91723000", "SCT", "Anatomical Structure"), ("39607008", "SCT", "Lung"))
TISSUE = ("85756007", "SCT", "Tissue")
#: The segment table: label 4 is absent from the array, label 6 is in the array but not here.
SEGMENTS = (
    Segment(1, "sphere", (221, 130, 101), *LIVER),
    Segment(2, "ring", (10, 200, 30)),
    Segment(3, "border", None, *LUNG),
    Segment(4, "absent", (250, 250, 210)),
)
#: label -> SEG segment number (BINARY SEG numbers segments 1..N).
SEG_NUMBERS = {1: 1, 2: 2, 3: 3, 6: 5}
EMPTY_SLICE = 2

SCANS = {  # name -> (geometry, read options)
    "oblique": (factories.oblique_geometry(), None),
    "feet-first": (factories.axial_geometry((28, 22, 8), feet_first=True), None),
    "tilted": (factories.tilted_geometry(15.0, shape=(24, 20, 8)), DicomReadOptions(tilt="keep")),
}


def write_scan(name: str, folder: Path) -> Volume:
    """Write one of :data:`SCANS` as a CT series and read it back as the pipeline does."""
    geometry, options = SCANS[name]
    factories.write_series(factories.ramp_volume(geometry), folder)
    return read_dicom(folder, options=options)


def label_map(image: Volume) -> Volume:
    """Several labels on ``image``'s grid: a sphere, a ring with a hole, a block on the border with a pixel
    touching it only at a corner, a stray label 6 on the last slice, and an empty slice."""
    size_i, size_j, size_k = image.spatial_shape
    i, j, k = np.indices(image.spatial_shape).astype(np.float64)
    labels = np.zeros(image.spatial_shape, dtype=np.uint8)
    sphere = ((i - 0.3 * size_i) / (0.18 * size_i)) ** 2 + ((j - 0.35 * size_j) / (0.2 * size_j)) ** 2
    labels[sphere + ((k - 0.5 * size_k) / (0.4 * size_k)) ** 2 <= 1] = 1
    radius = np.hypot(i - 0.7 * size_i, j - 0.6 * size_j)
    labels[(radius >= 1.5) & (radius <= 3.5) & (k >= 1) & (k <= size_k - 3)] = 2
    labels[:3, size_j - 4 :, 1 : size_k - 1] = 3
    labels[3, size_j - 5, 1 : size_k - 1] = 3  # meets the block at a corner only
    labels[size_i - 2 :, :2, size_k - 1] = 6
    labels[size_i - 5, 4, size_k - 1] = 6
    labels[:, :, EMPTY_SLICE] = 0
    return image.with_array(labels, kind=VolumeKind.LABEL, segments=SEGMENTS)


def dciodvfy_errors(path: Path) -> list[str]:
    """dciodvfy's "Error" lines for a file (it reports on stderr)."""
    result = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def _seg_numbers(labels: Volume) -> np.ndarray:
    lookup = np.zeros(256, dtype=np.uint8)
    for label, number in SEG_NUMBERS.items():
        lookup[label] = number
    return lookup[labels.channel(0)]


@pytest.fixture(scope="module", params=list(SCANS))
def written(request, tmp_path_factory):
    """(image, labels, SEG path) for each scan."""
    folder = tmp_path_factory.mktemp(request.param)
    image = write_scan(request.param, folder / "ct")
    labels = label_map(image)
    path = write_seg(labels, folder / "out" / "labels.seg.dcm", algorithm=ALGORITHM)
    return image, labels, path


def test_read_back_on_the_scan_grid_is_voxel_identical(written):
    image, labels, path = written
    volume = read_seg(path, reference=image.geometry)

    assert volume.kind is VolumeKind.LABEL and volume.dtype == np.uint8
    assert volume.geometry.is_close(image.geometry, tolerance_mm=1e-6)
    expected = _seg_numbers(labels)
    assert set(np.unique(expected)) == {0, 1, 2, 3, 5}  # every label but the absent one made it
    np.testing.assert_array_equal(volume.channel(0), expected)
    assert check_seg(path, labels).ok


def test_segment_table_round_trips(written):
    image, _, path = written
    segments = read_seg(path, reference=image.geometry).segments

    assert [(s.number, s.name) for s in segments] == [
        (1, "sphere"),
        (2, "ring"),
        (3, "border"),
        (4, "absent"),
        (5, "label 6"),
    ]
    assert (segments[0].category, segments[0].type) == LIVER
    assert (segments[2].category, segments[2].type) == LUNG
    assert (segments[1].category, segments[1].type) == (TISSUE, TISSUE)  # generic where none was given
    assert (segments[4].category, segments[4].type) == (TISSUE, TISSUE)
    assert [s.color for s in segments] == [(221, 130, 101), (10, 200, 30), None, (250, 250, 210), None]


def test_without_a_reference_the_seg_spans_the_covered_slices(written):
    image, labels, path = written
    volume = read_seg(path)

    covered = np.flatnonzero(labels.channel(0).any(axis=(0, 1)))
    first, last = int(covered[0]), int(covered[-1])
    assert first < EMPTY_SLICE < last  # the empty slice is a gap inside the covered part
    affine = image.geometry.affine_lps
    affine[:3, 3] = image.geometry.index_to_physical([0, 0, first])
    part = Geometry((*image.spatial_shape[:2], last - first + 1), affine)
    assert volume.geometry.max_distance_to(part) < 1e-3
    assert volume.geometry.frame_of_reference_uid == image.geometry.frame_of_reference_uid
    np.testing.assert_array_equal(volume.channel(0), _seg_numbers(labels)[:, :, first : last + 1])


def test_every_frame_sits_on_and_references_its_source_slice(written):
    image, labels, path = written
    seg = pydicom.dcmread(path)
    source = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: f for f in image.source.files}

    assert seg.StudyInstanceUID == pydicom.dcmread(image.source.files[0]).StudyInstanceUID
    assert seg.FrameOfReferenceUID == image.geometry.frame_of_reference_uid
    (series,) = seg.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == image.source.series_instance_uid
    assert {item.ReferencedSOPInstanceUID for item in series.ReferencedInstanceSequence} == set(source)
    # One frame per (segment, slice) that holds it: empty frames are left out.
    array = labels.channel(0)
    expected = sum(int(np.any(array[:, :, k] == label)) for label in SEG_NUMBERS for k in range(array.shape[2]))
    assert int(seg.NumberOfFrames) == expected
    for frame in seg.PerFrameFunctionalGroupsSequence:
        (reference,) = frame.DerivationImageSequence[0].SourceImageSequence
        stored = pydicom.dcmread(source[reference.ReferencedSOPInstanceUID], stop_before_pixels=True)
        # The position is the source's own, not one derived from the grid.
        assert list(frame.PlanePositionSequence[0].ImagePositionPatient) == list(stored.ImagePositionPatient)


def test_algorithm_and_series_identification(written):
    _, _, path = written
    seg = pydicom.dcmread(path)

    assert seg.SegmentationType == "BINARY" and seg.Modality == "SEG"
    assert (seg.SeriesNumber, seg.SeriesDescription, seg.ContentLabel) == (9001, "medseg segmentation", "MEDSEG")
    assert seg.Manufacturer == "medseg"
    for item in seg.SegmentSequence:
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        (algorithm,) = item.SegmentationAlgorithmIdentificationSequence
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (ALGORITHM.name, ALGORITHM.version)
        family = algorithm.AlgorithmFamilyCodeSequence[0]
        assert (family.CodeValue, family.CodingSchemeDesignator) == ("123110", "DCM")  # Artificial Intelligence


@pytest.mark.integration
@pytest.mark.skipif(DCIODVFY is None, reason="dicom3tools' dciodvfy is not installed")
def test_dciodvfy_finds_no_errors(written):
    _, _, path = written
    assert dciodvfy_errors(path) == []


def test_check_seg_reports_a_changed_array(written):
    image, labels, path = written
    changed = np.array(labels.channel(0))
    changed[np.nonzero(changed == 2)[0][0], np.nonzero(changed == 2)[1][0], np.nonzero(changed == 2)[2][0]] = 0

    good = check_seg(path, labels)
    assert good.ok and good.message.endswith("voxel-identical") and "5 segments" in good.message
    bad = check_seg(path, labels.with_array(changed))
    assert not bad.ok and "1 voxels differ" in bad.message
    renamed = labels.with_array(labels.array, segments=(Segment(1, "other"), *SEGMENTS[1:]))
    assert not check_seg(path, renamed).ok
    missing = check_seg(path.with_name("nothing.dcm"), labels)
    assert not missing.ok and "no such file" in missing.message


def test_a_grid_off_the_frames_is_refused(written):
    image, _, path = written
    affine = image.geometry.affine_lps
    affine[:3, 3] += 0.5 * affine[:3, 2]  # half a slice along k
    with pytest.raises(GeometryError, match=str(path.name)):
        read_seg(path, reference=Geometry(image.spatial_shape, affine, image.geometry.frame_of_reference_uid))
    with pytest.raises(GeometryError, match="frame of reference"):
        read_seg(path, reference=Geometry(image.spatial_shape, image.geometry.affine, "1.2.3.999"))
    shorter = image.geometry.with_shape((*image.spatial_shape[:2], image.spatial_shape[2] - 1))
    with pytest.raises(GeometryError, match="outside"):  # label 6 lies on the last slice
        read_seg(path, reference=shorter)


# -- refusals and other sources ---------------------------------------------------------------------


def test_labels_from_nifti_are_refused(tmp_path):
    image = write_scan("oblique", tmp_path / "ct")
    write_nifti(image, tmp_path / "ct.nii.gz")
    labels = label_map(read_nifti(tmp_path / "ct.nii.gz"))
    with pytest.raises(InputError, match="no DICOM source"):
        write_seg(labels, tmp_path / "x.dcm", algorithm=ALGORITHM)
    assert not (tmp_path / "x.dcm").exists()


def test_a_resampled_source_is_refused(tmp_path):
    geometry, _ = SCANS["oblique"]
    paths = factories.write_series(factories.ramp_volume(geometry), tmp_path / "ct")
    paths[4].unlink()
    image = read_dicom(tmp_path / "ct", options=DicomReadOptions(irregular="resample"))
    with pytest.raises(InputError, match="resampled"):
        write_seg(label_map(image), tmp_path / "x.dcm", algorithm=ALGORITHM)


def test_a_source_whose_export_blanked_its_sop_uids_is_referenced_by_its_file_meta(tmp_path):
    """As the real Siemens series in ../shared/data: SOP Class and Instance UID empty, the file meta keeping them."""
    from medseg.io.rtstruct import read_rtstruct, write_rtstruct

    geometry, _ = SCANS["feet-first"]
    paths = factories.write_series(factories.ramp_volume(geometry), tmp_path / "ct")
    for path in paths:
        factories.edit_dicom(path, SOPInstanceUID="", SOPClassUID="")
    image = read_dicom(tmp_path / "ct")
    labels = label_map(image)
    meta_uids = [pydicom.dcmread(p, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID for p in paths]
    assert sorted(image.source.sop_instance_uids) == sorted(meta_uids)

    seg = write_seg(labels, tmp_path / "out" / "x.seg.dcm", algorithm=ALGORITHM)
    rtstruct = write_rtstruct(labels, tmp_path / "out" / "x.rtstruct.dcm", algorithm=ALGORITHM)

    np.testing.assert_array_equal(read_seg(seg, reference=image.geometry).channel(0) > 0, labels.channel(0) > 0)
    np.testing.assert_array_equal(read_rtstruct(rtstruct, reference=image.geometry).channel(0), labels.channel(0))
    frames = pydicom.dcmread(seg).PerFrameFunctionalGroupsSequence
    referenced = {f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID for f in frames}
    assert referenced <= set(meta_uids) and len(referenced) > 1
    for path in paths:  # the inputs are untouched
        assert pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID == ""


def test_an_image_or_a_resampled_grid_is_refused(tmp_path):
    image = write_scan("oblique", tmp_path / "ct")
    with pytest.raises(InputError, match="label map"):
        write_seg(image, tmp_path / "x.dcm", algorithm=ALGORITHM)
    moved = label_map(image).replace(geometry=Geometry(image.spatial_shape, np.diag([2.0, 2.0, 2.0, 1.0])))
    with pytest.raises(InputError, match="not on its source's grid"):
        write_seg(moved, tmp_path / "x.dcm", algorithm=ALGORITHM)
    with pytest.raises(InputError, match="content label"):
        write_seg(label_map(image), tmp_path / "x.dcm", algorithm=ALGORITHM, content_label="lower case")
    with pytest.raises(InputError, match="algorithm version"):
        AlgorithmIdentity("model", "x" * 65)


def test_enhanced_multiframe_source(tmp_path):
    geometry, _ = SCANS["oblique"]
    paths = factories.write_series(factories.ramp_volume(geometry), tmp_path / "single")
    enhanced = LegacyConvertedEnhancedCTImage(
        [pydicom.dcmread(p) for p in paths],
        series_instance_uid=generate_uid(),
        series_number=20,
        sop_instance_uid=generate_uid(),
        instance_number=1,
    )
    (tmp_path / "enhanced").mkdir()
    enhanced.save_as(tmp_path / "enhanced" / "ct.dcm")
    image = read_dicom(tmp_path / "enhanced")
    assert image.source.frame_numbers is not None
    labels = label_map(image)

    path = write_seg(labels, tmp_path / "seg.dcm", algorithm=ALGORITHM)

    np.testing.assert_array_equal(read_seg(path, reference=image.geometry).channel(0), _seg_numbers(labels))
    seg = pydicom.dcmread(path)
    for frame in seg.PerFrameFunctionalGroupsSequence:
        (reference,) = frame.DerivationImageSequence[0].SourceImageSequence
        assert reference.ReferencedSOPInstanceUID == enhanced.SOPInstanceUID
        stored = enhanced.PerFrameFunctionalGroupsSequence[int(reference.ReferencedFrameNumber) - 1]
        assert list(frame.PlanePositionSequence[0].ImagePositionPatient) == list(
            stored.PlanePositionSequence[0].ImagePositionPatient
        )
    if DCIODVFY:
        assert dciodvfy_errors(path) == []


def test_overlapping_segments_read_back_with_the_higher_number_on_top(tmp_path):
    image = write_scan("feet-first", tmp_path / "ct")
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in image.source.files]
    stacked = np.zeros((len(sources), *image.spatial_shape[1::-1], 2), dtype=np.uint8)  # (K, rows, columns, 2)
    stacked[1:4, 2:10, 3:12, 0] = 1
    stacked[2:6, 6:14, 8:20, 1] = 1
    descriptions = [
        hd.seg.SegmentDescription(n, f"s{n}", codes.SCT.Tissue, codes.SCT.Tissue, "MANUAL") for n in (1, 2)
    ]
    seg = hd.seg.Segmentation(
        sources, stacked, "BINARY", descriptions, generate_uid(), 1, generate_uid(), 1, "x", "x", "1", "1"
    )
    seg.save_as(tmp_path / "overlap.dcm")

    volume = read_seg(tmp_path / "overlap.dcm", reference=image.geometry)

    expected = np.where(stacked[..., 1] > 0, 2, np.where(stacked[..., 0] > 0, 1, 0)).transpose(2, 1, 0)
    np.testing.assert_array_equal(volume.channel(0), expected)


def test_an_empty_prediction_still_makes_a_valid_seg(tmp_path):
    image = write_scan("oblique", tmp_path / "ct")
    empty = image.with_array(np.zeros(image.spatial_shape, np.uint8), kind=VolumeKind.LABEL, segments=SEGMENTS[:1])

    path = write_seg(empty, tmp_path / "seg.dcm", algorithm=ALGORITHM)

    assert check_seg(path, empty).ok
    volume = read_seg(path, reference=image.geometry)
    assert not volume.channel(0).any() and [s.name for s in volume.segments] == ["sphere"]
    if DCIODVFY:
        assert dciodvfy_errors(path) == []
    with pytest.raises(InputError, match="nothing to write"):
        write_seg(empty.with_array(empty.array, segments=()), tmp_path / "none.dcm", algorithm=ALGORITHM)
