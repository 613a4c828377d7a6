"""RT Structure Sets: edge-traced contours on the scan's slices that fill back to the exact mask."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from highdicom.legacy import LegacyConvertedEnhancedCTImage
from pydicom.uid import generate_uid

from medseg.errors import GeometryError, InputError
from medseg.geometry import Geometry
from medseg.io.dicom import DicomReadOptions, read_dicom
from medseg.io.nifti import read_nifti, write_nifti
from medseg.io.rtstruct import fill_polygons, read_rtstruct, trace_polygons, write_rtstruct
from tests import factories
from tests.io.test_seg import (  # the same scans and label maps as the SEG tests
    ALGORITHM,
    DCIODVFY,
    SCANS,
    SEGMENTS,
    dciodvfy_errors,
    label_map,
    write_scan,
)

ROI_NAMES = {1: "sphere", 2: "ring", 3: "border", 4: "absent", 6: "label 6"}


@pytest.fixture(scope="module", params=list(SCANS))
def written(request, tmp_path_factory):
    """(image, labels, RTSTRUCT path) for each scan."""
    folder = tmp_path_factory.mktemp(request.param)
    image = write_scan(request.param, folder / "ct")
    labels = label_map(image)
    path = write_rtstruct(labels, folder / "out" / "labels.rtstruct.dcm", algorithm=ALGORITHM)
    return image, labels, path


# -- tracing ----------------------------------------------------------------------------------------


def test_traced_polygons_fill_back_to_the_mask():
    rng = np.random.default_rng(3)
    for _ in range(200):
        shape = tuple(int(n) for n in rng.integers(1, 14, size=2))
        mask = rng.random(shape) < rng.uniform(0.2, 0.8)  # many holes and corner-to-corner contacts
        np.testing.assert_array_equal(fill_polygons(trace_polygons(mask), shape), mask)


def test_a_ring_is_an_outer_polygon_and_a_hole_with_corners_only():
    mask = np.zeros((9, 8), dtype=bool)
    mask[1:7, 2:7] = True
    mask[3:5, 4:5] = False

    def area(p):  # signed, shoelace: > 0 counter-clockwise
        x, y = p[:, 0], p[:, 1]
        return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))

    outer, hole = sorted(trace_polygons(mask), key=lambda p: -abs(area(p)))

    assert sorted(map(tuple, outer)) == sorted([(0.5, 1.5), (6.5, 1.5), (6.5, 6.5), (0.5, 6.5)])
    assert sorted(map(tuple, hole)) == sorted([(2.5, 3.5), (4.5, 3.5), (4.5, 4.5), (2.5, 4.5)])
    assert area(outer) == 30 and area(hole) == -2  # the hole runs the other way round
    assert trace_polygons(np.zeros((3, 3), dtype=bool)) == []


def test_pixels_touching_at_a_corner_become_two_polygons():
    mask = np.array([[1, 0], [0, 1]], dtype=bool)
    polygons = trace_polygons(mask)
    assert len(polygons) == 2 and all(len(p) == 4 for p in polygons)
    np.testing.assert_array_equal(fill_polygons(polygons, mask.shape), mask)


# -- written files ----------------------------------------------------------------------------------


def test_contours_fill_back_to_the_exact_label_map(written):
    image, labels, path = written
    volume = read_rtstruct(path, reference=image.geometry)

    np.testing.assert_array_equal(volume.channel(0), labels.channel(0))
    assert volume.geometry.is_close(image.geometry, tolerance_mm=1e-6)
    assert {s.number: s.name for s in volume.segments} == ROI_NAMES
    by_number = {s.number: s for s in volume.segments}
    assert by_number[1].color == SEGMENTS[0].color and by_number[1].type == SEGMENTS[0].type
    assert by_number[3].color is None and by_number[3].type == SEGMENTS[2].type


def test_structure_set_modules(written):
    image, _, path = written
    ds = pydicom.dcmread(path)
    first = pydicom.dcmread(image.source.files[0], stop_before_pixels=True)

    assert ds.Modality == "RTSTRUCT" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3"
    for keyword in ("StudyInstanceUID", "StudyDate", "PatientID", "PatientName"):
        assert ds[keyword].value == first[keyword].value
    assert ds.SeriesInstanceUID != first.SeriesInstanceUID and ds.Manufacturer == "medseg"
    assert ds.StructureSetLabel == "MEDSEG" and ds.StructureSetDate
    assert [int(r.ROINumber) for r in ds.StructureSetROISequence] == sorted(ROI_NAMES)
    assert [r.ROIName for r in ds.StructureSetROISequence] == [ROI_NAMES[n] for n in sorted(ROI_NAMES)]
    for roi in ds.StructureSetROISequence:
        assert roi.ReferencedFrameOfReferenceUID == image.geometry.frame_of_reference_uid
        assert roi.ROIGenerationAlgorithm == "AUTOMATIC" and ALGORITHM.version in roi.ROIGenerationDescription
    for observation in ds.RTROIObservationsSequence:
        assert observation.RTROIInterpretedType == "ORGAN" and observation.ROIInterpreter == ""
    colors = {int(c.ReferencedROINumber): list(c.get("ROIDisplayColor", [])) for c in ds.ROIContourSequence}
    assert colors[1] == [221, 130, 101] and colors[2] == [10, 200, 30] and colors[3] == []
    absent = next(c for c in ds.ROIContourSequence if c.ReferencedROINumber == 4)
    assert "ContourSequence" not in absent  # an ROI the model did not find keeps its place, without contours

    (frame,) = ds.ReferencedFrameOfReferenceSequence
    assert frame.FrameOfReferenceUID == image.geometry.frame_of_reference_uid
    (study,) = frame.RTReferencedStudySequence
    assert study.ReferencedSOPInstanceUID == first.StudyInstanceUID
    (series,) = study.RTReferencedSeriesSequence
    assert series.SeriesInstanceUID == image.source.series_instance_uid
    assert [i.ReferencedSOPInstanceUID for i in series.ContourImageSequence] == list(image.source.sop_instance_uids)


def test_each_contour_lies_on_the_slice_it_references(written):
    image, labels, path = written
    ds = pydicom.dcmread(path)
    headers = {}
    for f in image.source.files:
        header = pydicom.dcmread(f, stop_before_pixels=True)
        headers[header.SOPInstanceUID] = header
    normal = np.cross(image.geometry.direction[:, 0], image.geometry.direction[:, 1])
    counts = {}
    for roi in ds.ROIContourSequence:
        for contour in roi.get("ContourSequence", []):
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            points = np.array(contour.ContourData, dtype=np.float64).reshape(-1, 3)
            assert len(points) == contour.NumberOfContourPoints
            (reference,) = contour.ContourImageSequence
            position = np.array(headers[reference.ReferencedSOPInstanceUID].ImagePositionPatient, dtype=np.float64)
            assert np.max(np.abs((points - position) @ normal)) < 1e-3
            # Every point is a voxel corner of that slice: half-integer indices in-plane.
            index = image.geometry.physical_to_index(points)
            np.testing.assert_allclose(index[:, :2] % 1, 0.5, atol=1e-3)
            key = (int(roi.ReferencedROINumber), int(round(index[0, 2])))
            counts[key] = counts.get(key, 0) + 1
    array = labels.channel(0)
    ring_slice = int(np.flatnonzero((array == 2).any(axis=(0, 1)))[0])
    assert counts[(2, ring_slice)] == 2  # the ring: its outline and its hole
    assert counts[(3, 1)] == 2  # the block on the border and the pixel touching it at a corner
    assert not any(k == 2 for _, k in counts)  # the empty slice has no contour


@pytest.mark.integration
@pytest.mark.skipif(DCIODVFY is None, reason="dicom3tools' dciodvfy is not installed")
def test_dciodvfy_finds_no_errors(written):
    _, _, path = written
    assert dciodvfy_errors(path) == []


def test_a_grid_off_the_contours_is_refused(written):
    image, _, path = written
    affine = image.geometry.affine_lps
    affine[:3, 3] += 0.5 * affine[:3, 2]
    with pytest.raises(GeometryError, match=str(path.name)):
        read_rtstruct(path, reference=Geometry(image.spatial_shape, affine, image.geometry.frame_of_reference_uid))
    with pytest.raises(GeometryError, match="frame of reference"):
        read_rtstruct(path, reference=Geometry(image.spatial_shape, image.geometry.affine, "1.2.3.999"))
    shorter = image.geometry.with_shape((*image.spatial_shape[:2], image.spatial_shape[2] - 1))
    with pytest.raises(GeometryError, match="outside"):  # label 6 lies on the last slice
        read_rtstruct(path, reference=shorter)


# -- refusals and other sources ---------------------------------------------------------------------


def test_labels_without_stored_slices_are_refused(tmp_path):
    image = write_scan("oblique", tmp_path / "ct")
    write_nifti(image, tmp_path / "ct.nii.gz")
    with pytest.raises(InputError, match="no DICOM source"):
        write_rtstruct(label_map(read_nifti(tmp_path / "ct.nii.gz")), tmp_path / "x.dcm", algorithm=ALGORITHM)
    paths = list((tmp_path / "ct").iterdir())
    sorted(paths)[3].unlink()
    resampled = read_dicom(tmp_path / "ct", options=DicomReadOptions(irregular="resample"))
    with pytest.raises(InputError, match="resampled"):
        write_rtstruct(label_map(resampled), tmp_path / "x.dcm", algorithm=ALGORITHM)
    with pytest.raises(InputError, match="not an RT Structure Set"):
        read_rtstruct(sorted(paths)[0], reference=image.geometry)
    assert not (tmp_path / "x.dcm").exists()


def test_enhanced_multiframe_source(tmp_path):
    geometry, _ = SCANS["tilted"]
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
    image = read_dicom(tmp_path / "enhanced", options=DicomReadOptions(tilt="keep"))
    labels = label_map(image)

    path = write_rtstruct(labels, tmp_path / "rt.dcm", algorithm=ALGORITHM)

    np.testing.assert_array_equal(read_rtstruct(path, reference=image.geometry).channel(0), labels.channel(0))
    series = pydicom.dcmread(path).ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
    images = series.RTReferencedSeriesSequence[0].ContourImageSequence
    assert {i.ReferencedSOPInstanceUID for i in images} == {enhanced.SOPInstanceUID}
    assert [int(i.ReferencedFrameNumber) for i in images] == list(image.source.frame_numbers)
    if DCIODVFY:
        assert dciodvfy_errors(path) == []
