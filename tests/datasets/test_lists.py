"""Lists of files: CSV tables and JSON lists, relative to the list, with DICOM folders allowed."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from medseg.datasets import DatasetError, check_dataset, infer_labels, load_case, open_dataset
from medseg.errors import InputError
from medseg.io import write_image
from tests.datasets.builders import ct_pair, mr_pair
from tests.factories import write_series


def _write_ct(folder, name, seed):
    (image,), labels = ct_pair(seed)
    write_image(image, folder / "images" / f"{name}.nii.gz")
    write_image(labels, folder / "labels" / f"{name}.nii.gz")
    return image, labels


def test_csv_single_channel_with_sidecar_opens_and_loads(tmp_path):
    image, labels = _write_ct(tmp_path, "ct_b", 2)
    _write_ct(tmp_path, "ct_a", 1)
    listing = tmp_path / "lists" / "liver.csv"
    listing.parent.mkdir()
    listing.write_text(
        "case_id,image,label\n"
        "b,../images/ct_b.nii.gz,../labels/ct_b.nii.gz\n"
        f"a,{tmp_path / 'images' / 'ct_a.nii.gz'},../labels/ct_a.nii.gz\n"  # absolute paths too
        "\n"
    )
    (tmp_path / "lists" / "liver.dataset.json").write_text(
        json.dumps({"name": "Livers", "channels": ["CT"], "labels": {"1": "liver", "2": "spleen", "3": "kidney"}})
    )
    dataset = open_dataset(listing)
    assert (dataset.layout, dataset.name, dataset.channels, dataset.modality) == ("list", "Livers", ("CT",), "CT")
    assert dataset.root == listing.parent and dataset.manifest == listing
    assert dataset.labels == {1: "liver", 2: "spleen", 3: "kidney"}
    assert [c.case_id for c in dataset.cases] == ["a", "b"]
    assert dataset.case("b").images == (listing.parent / "../images/ct_b.nii.gz",)
    loaded, loaded_labels = load_case(dataset, dataset.case("b"))
    np.testing.assert_array_equal(loaded.array, image.array)
    np.testing.assert_array_equal(loaded_labels.array, labels.array)
    assert check_dataset(dataset) == []


def test_csv_channel_columns_in_order_and_rows_without_label_are_test_cases(tmp_path):
    (t1, t2), labels = mr_pair(3)
    for name, volume in (("t1", t1), ("t2", t2), ("seg", labels)):
        write_image(volume, tmp_path / f"{name}.nrrd")
    listing = tmp_path / "mr.csv"
    listing.write_text("case_id,image_T2,image_T1,label\none,t2.nrrd,t1.nrrd,seg.nrrd\ntwo,t2.nrrd,t1.nrrd,\n")
    dataset = open_dataset(listing)
    assert dataset.channels == ("T2", "T1") and dataset.modality == "MR"
    assert dataset.labels == {}  # none declared
    assert [c.case_id for c in dataset.cases] == ["one"] and [c.case_id for c in dataset.test_cases] == ["two"]
    image, label = load_case(dataset, dataset.case("one"))
    np.testing.assert_array_equal(image.array[0], t2.array[0])  # column order is channel order
    np.testing.assert_array_equal(image.array[1], t1.array[0])
    assert [(s.number, s.name) for s in label.segments] == [(1, "label_1"), (2, "label_2"), (3, "label_3")]


def test_dicom_series_folder_as_image(tmp_path):
    (image,), labels = ct_pair(6)
    write_series(image, tmp_path / "dicom" / "patient1" / "ct")
    write_image(labels, tmp_path / "patient1_labels.nii.gz")
    listing = tmp_path / "cases.csv"
    listing.write_text("image,label\ndicom/patient1/ct,patient1_labels.nii.gz\n")
    (tmp_path / "cases.dataset.json").write_text(
        json.dumps({"channels": {"0": "CT"}, "labels": {"liver": 1, "spleen": 2, "kidney": 3}})
    )
    dataset = open_dataset(listing)
    (case,) = dataset.cases
    assert case.case_id == "ct" and case.images == (tmp_path / "dicom" / "patient1" / "ct",)
    loaded, loaded_labels = load_case(dataset, case)
    np.testing.assert_array_equal(loaded.array, image.array)
    assert loaded.source.modality == "CT" and len(loaded.source.sop_instance_uids) == image.spatial_shape[2]
    assert loaded_labels.geometry == loaded.geometry  # the label is put on the DICOM grid
    np.testing.assert_array_equal(loaded_labels.array, labels.array)
    assert check_dataset(dataset) == []


def test_json_list_with_channel_lists_and_sidecar(tmp_path):
    (t1, t2), labels = mr_pair(8)
    for name, volume in (("t1", t1), ("t2", t2), ("seg", labels)):
        write_image(volume, tmp_path / f"{name}.nii.gz")
    (tmp_path / "cases.json").write_text(
        json.dumps(
            [
                {"image": ["t1.nii.gz", "t2.nii.gz"], "label": "seg.nii.gz", "case_id": 7, "site": "x"},
                {"image": ["t1.nii.gz", "t2.nii.gz"], "label": None, "case_id": "test_1"},
            ]
        )
    )
    (tmp_path / "cases.dataset.json").write_text(json.dumps({"channels": ["T1", "T2"], "labels": {"organ": 1}}))
    dataset = open_dataset(tmp_path / "cases.json")
    assert dataset.channels == ("T1", "T2") and dataset.labels == {1: "organ"}
    assert [c.case_id for c in dataset.cases] == ["7"] and [c.case_id for c in dataset.test_cases] == ["test_1"]
    assert [(p.severity, p.message) for p in dataset.problems] == [
        ("warning", "key(s) ['site'] ignored (known: case_id, image, label)")
    ]
    with pytest.raises(InputError, match=r"^case '7': .*seg\.nii\.gz: label value\(s\) \[2, 3\] are not declared"):
        load_case(dataset, dataset.cases[0])
    image, label = load_case(dataset, dataset.test_cases[0])
    assert label is None
    np.testing.assert_array_equal(image.array[0], t1.array[0])
    np.testing.assert_array_equal(image.array[1], t2.array[0])
    problems = check_dataset(dataset)  # labels 2 and 3 are in the maps but not declared
    assert [(p.case_id, p.message) for p in problems if p.severity == "error"] == [
        ("7", "label value(s) [2, 3] are not declared (the dataset declares 0 background, 1 organ)")
    ]


def test_json_object_form(tmp_path):
    (t1, t2), labels = mr_pair(8)
    write_image(labels, tmp_path / "seg.nii.gz")
    write_image(t1.with_array(np.concatenate([t1.array, t2.array])), tmp_path / "both.nii.gz")
    (tmp_path / "study.json").write_text(
        json.dumps(
            {
                "name": "Study",
                "channels": ["FLAIR", "T1"],
                "labels": {"background": 0, "a": 1, "b": 2, "c": 3},
                "cases": [{"image": "both.nii.gz", "label": "seg.nii.gz"}],
            }
        )
    )
    dataset = open_dataset(tmp_path / "study.json")
    assert (dataset.name, dataset.channels, dataset.labels) == ("Study", ("FLAIR", "T1"), {1: "a", 2: "b", 3: "c"})
    assert dataset.cases[0].case_id == "both"  # the image's name
    image, _ = load_case(dataset, dataset.cases[0])  # one 4D file holding both channels
    np.testing.assert_array_equal(image.array[1], t2.array[0])
    assert check_dataset(dataset) == []


def test_undeclared_labels_are_found_named_and_warned_about(tmp_path):
    _write_ct(tmp_path, "x", 1)
    listing = tmp_path / "l.csv"
    listing.write_text("image,label\nimages/x.nii.gz,labels/x.nii.gz\n")
    dataset = open_dataset(listing)
    assert dataset.labels == {} and dataset.channels == ("0",)
    (warning,) = check_dataset(dataset)
    assert (warning.case_id, warning.path, warning.severity) == ("", str(listing), "warning")
    assert warning.message.startswith("labels are not declared; the label maps hold [1, 2, 3]")
    assert infer_labels(dataset).labels == {1: "label_1", 2: "label_2", 3: "label_3"}
    declared = dataclasses.replace(dataset, labels={1: "x"})
    assert infer_labels(declared) is declared


def test_case_ids_from_names_or_where_names_repeat_from_relative_paths(tmp_path):
    listing = tmp_path / "l.csv"
    listing.write_text("image,label\np1/ct.nii.gz,p1/seg.nii.gz\np2/ct.nii.gz,p2/seg.nii.gz\nq/other.nrrd,q/s.nrrd\n")
    dataset = open_dataset(listing)  # opening only names files: none need exist
    assert [c.case_id for c in dataset.cases] == ["other", "p1_ct", "p2_ct"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "empty; expected a header"),
        ("file,label\na.nii.gz,b.nii.gz\n", "no 'image' column"),
        ("image,image_T2,label\na,b,c\n", "either one 'image' column or 'image_<channel>' columns"),
        ("case_id,image,label\nx,a.nii.gz,s.nii.gz\nx,b.nii.gz,t.nii.gz\n", "l.csv:3: case 'x' is listed twice"),
        ("image_T1,image_T2,label\na.nii.gz,,s.nii.gz\n", "l.csv:2: no file in column(s) ['image_T2']"),
        ("image,label,image\na,b,c\n", "column(s) ['image'] appear more than once"),
        ("case_id,label\n", "no 'image' column"),
        ("image,label\n", "lists no cases"),
    ],
)
def test_malformed_csv(tmp_path, text, expected):
    (tmp_path / "l.csv").write_text(text)
    with pytest.raises(DatasetError) as caught:
        open_dataset(tmp_path / "l.csv")
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"cases": [{"image": "a"}], "modality": "CT"}, "unknown key(s) ['modality']"),
        ({"labels": {"1": "x"}}, "missing key 'cases'"),
        ([{"label": "a"}], "[0]: 'image' must be a path or a list of paths"),
        ([{"image": "a", "label": 3}], "'label' must be a path or null"),
        ([{"image": ["a", "b"]}, {"image": ["a", "b", "c"]}], "[1]: 3 image file(s) for 2 channel(s)"),
        ({"channels": ["T1"], "cases": [{"image": ["a", "b"], "label": "c"}]}, "2 image file(s) for 1 channel(s)"),
        ("just text", "expected a JSON list of cases"),
    ],
)
def test_malformed_json_list(tmp_path, content, expected):
    (tmp_path / "l.json").write_text(json.dumps(content))
    with pytest.raises(DatasetError) as caught:
        open_dataset(tmp_path / "l.json")
    assert expected in str(caught.value)


def test_unknown_csv_columns_warn_and_sidecar_must_match_columns(tmp_path):
    listing = tmp_path / "l.csv"
    listing.write_text("image_T1,image_T2,lable\na,b,c\n")
    dataset = open_dataset(listing)
    assert dataset.cases == ()  # the label column is misspelt: no training case
    messages = [p.message for p in dataset.problems]
    assert messages == [
        "column(s) ['lable'] ignored (known: case_id, image or image_<channel>, label)",
        "no case has a label, so there is nothing to train on",
    ]
    (tmp_path / "l.dataset.json").write_text(json.dumps({"channels": ["T1"]}))
    with pytest.raises(DatasetError, match=r"names 1 channel\(s\) \['T1'\] but the list has 2 image column"):
        open_dataset(listing)
    (tmp_path / "l.dataset.json").write_text(json.dumps({"channel": ["T1", "T2"]}))
    with pytest.raises(DatasetError, match=r"unknown key\(s\) \['channel'\]"):
        open_dataset(listing)
