"""Labels that live in DICOM: RTSTRUCT ROIs and SEG segments become labels by name, on the image's grid."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from medseg.datasets import check_dataset, load_case, open_dataset
from medseg.errors import ConfigError, GeometryError, InputError
from medseg.io.dicom import read_dicom
from medseg.io.labels import LabelTable, find_dicom_labels, normalise_name, read_label
from medseg.io.nifti import write_nifti
from medseg.io.rtstruct import write_rtstruct
from medseg.volume import Segment, Volume, VolumeKind
from tests.io.test_seg import ALGORITHM, SCANS, write_scan

#: What another institution calls things: two spellings of the liver, German for the kidney, and a body outline.
ROIS = {1: "LIVER", 2: "liver_contour", 3: "Niere links", 4: "BODY"}
TABLE_NAMES = {"liver": ["liver*", "leber"], "kidney": ["kidney*", "niere*"]}
TABLE = LabelTable.build({1: "liver", 2: "kidney"}, TABLE_NAMES)


def regions(image: Volume) -> dict[str, np.ndarray]:
    """Two liver pieces (one with a hole), a kidney and a body outline that holds none of them."""
    size_i, size_j, size_k = image.spatial_shape
    i, j, k = np.indices(image.spatial_shape)
    upper = (i >= 2) & (i < size_i // 2) & (j >= 2) & (j < size_j // 2) & (k >= 1) & (k < size_k - 1)
    upper &= ~((i == 4) & (j == 4))  # a hole
    lower = (i >= 2) & (i < size_i // 2) & (j >= size_j // 2 + 1) & (j < size_j - 2) & (k >= 2) & (k < size_k - 2)
    kidney = (i >= size_i // 2 + 2) & (i < size_i - 2) & (j >= 3) & (j < 8) & (k >= 1) & (k < size_k - 1)
    body = (i == 0) | (i == size_i - 1)
    return {"upper": upper, "lower": lower, "kidney": kidney, "body": body}


def planning_system_rtstruct(image: Volume, path: Path) -> Path:
    """An RTSTRUCT whose ROI names are :data:`ROIS` (as a planning system might name them)."""
    parts = regions(image)
    array = np.zeros(image.spatial_shape, dtype=np.uint8)
    for number, part in zip(ROIS, ("upper", "lower", "kidney", "body")):
        array[parts[part]] = number
    segments = tuple(Segment(n, name) for n, name in ROIS.items())
    return write_rtstruct(image.with_array(array, kind=VolumeKind.LABEL, segments=segments), path, algorithm=ALGORITHM)


def merged_rtstruct(first: Path, second: Path, out: Path, *, offset: int = 10) -> Path:
    """``first`` with the ROIs of ``second`` added (renumbered by ``offset``): ROIs that may overlap."""
    a, b = pydicom.dcmread(first), pydicom.dcmread(second)
    for roi in b.StructureSetROISequence:
        roi.ROINumber = int(roi.ROINumber) + offset
        a.StructureSetROISequence.append(roi)
    for item in b.ROIContourSequence:
        item.ReferencedROINumber = int(item.ReferencedROINumber) + offset
        a.ROIContourSequence.append(item)
    for item in b.RTROIObservationsSequence:
        item.ObservationNumber = int(item.ObservationNumber) + offset
        item.ReferencedROINumber = int(item.ReferencedROINumber) + offset
        a.RTROIObservationsSequence.append(item)
    a.save_as(out)
    return out


def one_roi(image: Volume, mask: np.ndarray, name: str, path: Path) -> Path:
    volume = image.with_array(mask.astype(np.uint8), kind=VolumeKind.LABEL, segments=(Segment(1, name),))
    return write_rtstruct(volume, path, algorithm=ALGORITHM)


@pytest.fixture(scope="module", params=["oblique", "feet-first"])
def scan(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    image = write_scan(request.param, folder / "ct")
    return image, planning_system_rtstruct(image, folder / "rs" / "structures.dcm")


# -- the label table --------------------------------------------------------------------------------


def test_names_match_without_case_or_separators_and_by_pattern():
    assert normalise_name("  Liver_Contour ") == normalise_name("liver-contour") == "liver contour"
    assert TABLE.match("LIVER") == TABLE.match("Leber") == TABLE.match("liver_contour") == [1]
    assert TABLE.match("Niere links") == [2]
    assert TABLE.match("BODY") == TABLE.match("deliver") == []


def test_a_table_refuses_names_of_labels_it_does_not_have():
    with pytest.raises(ConfigError, match="'spleen', which is not a label"):
        LabelTable.build({1: "liver"}, {"spleen": ["milz"]})
    with pytest.raises(ConfigError, match="priority names 'lung'"):
        LabelTable.build({1: "liver"}, priority=["lung"])


# -- RTSTRUCT -----------------------------------------------------------------------------------------


def test_rtstruct_rois_become_labels_by_name_on_the_image_grid(scan):
    image, path = scan
    parts = regions(image)

    reading = read_label(path, reference=image.geometry, table=TABLE, series_uid=image.source.series_instance_uid)

    expected = np.zeros(image.spatial_shape, dtype=np.uint8)
    expected[parts["upper"] | parts["lower"]] = 1
    expected[parts["kidney"]] = 2
    np.testing.assert_array_equal(reading.volume.channel(0), expected)
    assert reading.volume.geometry == image.geometry
    assert [(s.number, s.name) for s in reading.volume.segments] == [(1, "liver"), (2, "kidney")]
    assert dict(reading.matched) == {"LIVER": "liver", "liver_contour": "liver", "Niere links": "kidney"}
    assert reading.unmatched == ("BODY",)
    assert any("'LIVER', 'liver_contour' all became liver" in note for note in reading.notes)
    assert "'BODY'" in reading.summary() and "'Niere links' -> kidney" in reading.summary()


def test_a_folder_holding_one_rtstruct_reads_like_the_file(scan):
    image, path = scan
    assert find_dicom_labels(path.parent) == [path]
    by_folder = read_label(path.parent, reference=image.geometry, table=TABLE).volume.channel(0)
    np.testing.assert_array_equal(by_folder, read_label(path, reference=image.geometry, table=TABLE).volume.channel(0))


def test_overlapping_rois_need_a_priority(tmp_path):
    image = write_scan("feet-first", tmp_path / "ct")
    parts = regions(image)
    tumour = np.zeros(image.spatial_shape, dtype=bool)
    tumour[3:6, 3:6, 2:5] = True  # inside the upper liver piece
    organ = one_roi(image, parts["upper"], "Liver", tmp_path / "organ.dcm")
    lesion = one_roi(image, tumour, "GTV", tmp_path / "gtv.dcm")
    path = merged_rtstruct(organ, lesion, tmp_path / "both.dcm")
    labels = {1: "liver", 2: "tumour"}

    overlap = r"both.dcm: ROIs 'Liver' \(liver\) and 'GTV' \(tumour\) overlap in 24 voxel"  # 27 less the hole
    with pytest.raises(GeometryError, match=overlap):
        read_label(path, reference=image.geometry, table=LabelTable.build(labels, {"tumour": ["gtv*"]}))

    table = LabelTable.build(labels, {"tumour": ["gtv*"]}, priority=["tumour", "liver"])
    reading = read_label(path, reference=image.geometry, table=table)
    array = reading.volume.channel(0)
    assert np.all(array[tumour] == 2) and np.all(array[parts["upper"] & ~tumour] == 1)
    assert any("tumour wins" in note for note in reading.notes)
    liver_first = LabelTable.build(labels, {"tumour": ["gtv*"]}, priority=["liver"])
    assert np.all(read_label(path, reference=image.geometry, table=liver_first).volume.channel(0)[parts["upper"]] == 1)


def test_bad_dicom_labels_each_give_one_line_naming_the_file_and_roi(scan, tmp_path):
    image, path = scan
    with pytest.raises(InputError, match="references series .*, not the image's series 1.2.3"):
        read_label(path, reference=image.geometry, table=TABLE, series_uid="1.2.3")
    ambiguous = LabelTable.build({1: "liver", 2: "organ"}, {"organ": ["liver"]})
    with pytest.raises(InputError, match="ROI 'LIVER' matches the labels liver and organ"):
        read_label(path, reference=image.geometry, table=ambiguous)
    with pytest.raises(InputError, match="an RTSTRUCT holds contours, not voxels"):
        read_label(path, table=TABLE)
    ds = pydicom.dcmread(path)
    del ds.ROIContourSequence[2].ContourSequence  # 'Niere links' loses its contours
    ds.save_as(tmp_path / "empty.dcm")
    empty = read_label(tmp_path / "empty.dcm", reference=image.geometry, table=TABLE)  # an organ not drawn: a warning
    assert empty.empty == (("Niere links", "kidney"),) and not np.any(empty.volume.channel(0) == 2)
    other = pydicom.dcmread(path)
    for roi in other.StructureSetROISequence:
        roi.ReferencedFrameOfReferenceUID = generate_uid()
    other.save_as(tmp_path / "frame.dcm")
    with pytest.raises(GeometryError, match="frame.dcm: contours are in frame of reference"):
        read_label(tmp_path / "frame.dcm", reference=image.geometry, table=TABLE)


def test_point_contours_are_skipped_with_a_note(scan, tmp_path):
    image, path = scan
    ds = pydicom.dcmread(path)
    marker = pydicom.Dataset()
    marker.ContourGeometricType = "POINT"
    marker.NumberOfContourPoints = 1
    marker.ContourData = [float(v) for v in image.geometry.index_to_physical(np.array([[5.0, 5.0, 3.0]]))[0]]
    ds.ROIContourSequence[0].ContourSequence.append(marker)
    ds.save_as(tmp_path / "point.dcm")
    reading = read_label(tmp_path / "point.dcm", reference=image.geometry, table=TABLE)
    assert any("'LIVER': skipped 1 POINT contour" in note for note in reading.notes)


# -- SEG ------------------------------------------------------------------------------------------


def test_a_highdicom_seg_with_sparse_fractional_overlapping_segments(tmp_path):
    image = write_scan("oblique", tmp_path / "ct")
    sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in image.source.files]
    size_i, size_j, size_k = image.spatial_shape
    stacked = np.zeros((size_k, size_j, size_i, 2), dtype=np.float32)  # (frames, rows, columns, segments)
    stacked[1:4, 2:10, 3:12, 0] = 1.0  # "Leber"
    stacked[2:5, 6:12, 8:14, 1] = 0.8  # "GTV 1", inside and beyond it
    stacked[2:5, 6:8, 8:10, 1] = 0.3  # under half: not in
    names = ("Leber", "GTV 1")
    descriptions = [
        hd.seg.SegmentDescription(n, name, codes.SCT.Tissue, codes.SCT.Tissue, "MANUAL")
        for n, name in enumerate(names, start=1)
    ]
    seg = hd.seg.Segmentation(
        sources, stacked, "FRACTIONAL", descriptions, generate_uid(), 1, generate_uid(), 1, "x", "x", "1", "1"
    )
    seg.save_as(tmp_path / "seg.dcm")
    assert int(pydicom.dcmread(tmp_path / "seg.dcm").NumberOfFrames) < 2 * size_k  # empty frames left out

    names = {"liver": "leber", "tumour": ["gtv*"]}
    table = LabelTable.build({1: "liver", 2: "tumour"}, names, priority=["tumour"])
    reading = read_label(tmp_path / "seg.dcm", reference=image.geometry, table=table)

    liver = stacked[..., 0].transpose(2, 1, 0) >= 0.5
    tumour = stacked[..., 1].transpose(2, 1, 0) >= 0.5
    expected = np.where(tumour, 2, np.where(liver, 1, 0))
    np.testing.assert_array_equal(reading.volume.channel(0), expected)
    assert reading.kind == "SEG" and dict(reading.matched) == {"Leber": "liver", "GTV 1": "tumour"}
    no_priority = LabelTable.build(table.labels, names)
    with pytest.raises(GeometryError, match=r"ROIs 'Leber' \(liver\) and 'GTV 1' \(tumour\) overlap"):
        read_label(tmp_path / "seg.dcm", reference=image.geometry, table=no_priority)


# -- datasets ------------------------------------------------------------------------------------------


def test_a_list_of_dicom_series_with_rtstructs_trains_like_nifti_labels(tmp_path):
    rows = []
    expected = {}
    for index, name in enumerate(("oblique", "feet-first")):
        image = write_scan(name, tmp_path / name / "ct")
        planning_system_rtstruct(image, tmp_path / name / "rs" / "rs.dcm")
        rows.append({"case_id": name, "image": f"{name}/ct", "label": f"{name}/rs"})
        expected[name] = read_label(tmp_path / name / "rs", reference=image.geometry, table=TABLE).volume.channel(0)
    with (tmp_path / "cases.csv").open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=["case_id", "image", "label"])
        writer.writeheader()
        writer.writerows(rows)
    (tmp_path / "cases.dataset.json").write_text(
        json.dumps(
            {
                "channels": ["CT"],
                "labels": {"background": 0, "liver": 1, "kidney": 2},
                "label_names": {"liver": ["liver*", "leber"], "kidney": ["kidney*", "niere*"]},
            }
        )
    )

    dataset = open_dataset(tmp_path / "cases.csv")
    problems = check_dataset(dataset)

    assert [p.severity for p in problems if p.severity == "error"] == []
    notes = [p.message for p in problems if p.severity == "note"]
    assert any("'liver_contour' -> liver" in n and "'Niere links' -> kidney" in n for n in notes)
    warnings = [str(p) for p in problems if p.severity == "warning"]
    assert any("feet-first" in w and "'BODY' match no label" in w for w in warnings)
    for case in dataset.cases:
        image, label = load_case(dataset, case)
        np.testing.assert_array_equal(label.channel(0), expected[case.case_id])
        assert [s.name for s in label.segments] == ["liver", "kidney"]
    # The same labels as NIfTI files give the same label maps.
    for name in expected:
        image = load_case(dataset, dataset.case(name))[0]
        write_nifti(image.with_array(expected[name], kind=VolumeKind.LABEL), tmp_path / f"{name}.nii.gz")
    nifti = [{"case_id": n, "image": f"{n}/ct", "label": f"{n}.nii.gz"} for n in expected]
    (tmp_path / "nifti.json").write_text(
        json.dumps({"channels": ["CT"], "labels": {"background": 0, "liver": 1, "kidney": 2}, "cases": nifti})
    )
    as_nifti = open_dataset(tmp_path / "nifti.json")
    for case in as_nifti.cases:
        np.testing.assert_array_equal(load_case(as_nifti, case)[1].channel(0), expected[case.case_id])


def test_a_dicom_label_without_declared_labels_is_an_error_naming_the_case(tmp_path):
    image = write_scan("feet-first", tmp_path / "ct")
    planning_system_rtstruct(image, tmp_path / "rs" / "rs.dcm")
    (tmp_path / "cases.json").write_text(json.dumps([{"image": "ct", "label": "rs"}]))
    problems = check_dataset(open_dataset(tmp_path / "cases.json"))
    assert any(p.severity == "error" and "needs the dataset's labels declared" in p.message for p in problems)


def test_a_dicom_study_tree_with_a_dataset_json_is_a_dataset(tmp_path):
    from medseg.io.seg import write_seg

    root = tmp_path / "export"
    images = {name: write_scan(scan, root / name / "CT") for name, scan in (("p1", "oblique"), ("p2", "feet-first"))}
    planning_system_rtstruct(images["p1"], root / "p1" / "RS.p1.dcm")
    parts = regions(images["p2"])
    array = np.where(parts["upper"], 1, np.where(parts["kidney"], 2, 0)).astype(np.uint8)
    segments = (Segment(1, "Leber"), Segment(2, "Kidney_L"))
    labelled = images["p2"].with_array(array, kind="label", segments=segments)
    write_seg(labelled, root / "p2" / "SEG.dcm", algorithm=ALGORITHM)
    write_scan("oblique", root / "p3" / "CT")  # no label: a test case
    (root / "dataset.json").write_text(
        json.dumps({"labels": {"background": 0, "liver": 1, "kidney": 2}, "label_names": TABLE_NAMES})
    )

    dataset = open_dataset(root)

    assert dataset.layout == "dicom" and dataset.channels == ("CT",)
    assert [(c.case_id, c.images[0].name, c.label.name) for c in dataset.cases] == [
        ("p1_CT", "CT", "RS.p1.dcm"),
        ("p2_CT", "CT", "SEG.dcm"),
    ]
    assert [c.case_id for c in dataset.test_cases] == ["p3_CT"]
    assert not [p for p in check_dataset(dataset) if p.severity == "error"]
    _, label = load_case(dataset, dataset.case("p2_CT"))
    np.testing.assert_array_equal(label.channel(0), array)
    _, label = load_case(dataset, dataset.case("p1_CT"))
    assert set(np.unique(label.channel(0))) == {0, 1, 2}


def test_seg_edge_cases_labelmap_multiframe_source_and_another_frame_of_reference(tmp_path):
    from highdicom.legacy import LegacyConvertedEnhancedCTImage

    image = write_scan("feet-first", tmp_path / "ct")
    singles = [pydicom.dcmread(f) for f in image.source.files]
    uids = {"series_instance_uid": generate_uid(), "sop_instance_uid": generate_uid()}
    enhanced = LegacyConvertedEnhancedCTImage(singles, series_number=20, instance_number=1, **uids)
    (tmp_path / "enhanced").mkdir()
    enhanced.save_as(tmp_path / "enhanced" / "ct.dcm")
    multiframe = read_dicom(tmp_path / "enhanced")
    frames = np.zeros((int(enhanced.NumberOfFrames), *multiframe.spatial_shape[1::-1]), dtype=np.uint8)
    frames[1:4, 2:10, 3:12] = 1  # "Leber"
    frames[2:5, 4:8, 14:20] = 2  # "Niere re."
    descriptions = [
        hd.seg.SegmentDescription(n, name, codes.SCT.Tissue, codes.SCT.Tissue, "MANUAL")
        for n, name in ((1, "Leber"), (2, "Niere re."))
    ]
    seg = hd.seg.Segmentation(
        [enhanced], frames, "LABELMAP", descriptions, generate_uid(), 1, generate_uid(), 1, "x", "x", "1", "1"
    )
    seg.save_as(tmp_path / "labelmap.dcm")

    reading = read_label(tmp_path / "labelmap.dcm", reference=multiframe.geometry, table=TABLE)

    expected = np.zeros(multiframe.spatial_shape, dtype=np.uint8)
    for k, number in enumerate(multiframe.source.frame_numbers):  # slice k is frame `number` of the source
        expected[..., k] = frames[int(number) - 1].T  # (rows, columns) -> (i, j)
    np.testing.assert_array_equal(reading.volume.channel(0), expected)
    assert dict(reading.matched) == {"Leber": "liver", "Niere re.": "kidney"}

    other = pydicom.dcmread(tmp_path / "labelmap.dcm")
    other.FrameOfReferenceUID = generate_uid()
    other.save_as(tmp_path / "frame.dcm")
    with pytest.raises(GeometryError, match="frame.dcm: the SEG's frame of reference .* is not the grid's"):
        read_label(tmp_path / "frame.dcm", reference=multiframe.geometry, table=TABLE)
