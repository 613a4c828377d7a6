"""nnU-Net v2 raw folders: found by listing imagesTr, channels from _XXXX, problems not crashes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from medseg.datasets import DatasetError, check_dataset, load_case, open_dataset
from medseg.volume import VolumeKind
from tests.datasets.builders import ct_pair, mr_pair, write_nnunet


@pytest.fixture()
def ct_dataset(tmp_path):
    cases = {"liver_2": ct_pair(2), "liver_10": ct_pair(10), "liver_1": ct_pair(1)}
    test = {"liver_20": ct_pair(20), "liver_21": (ct_pair(21)[0], None)}
    folder = write_nnunet(tmp_path / "Dataset003_Liver", cases, ("CT",), test=test)
    return folder, cases, test


def test_opens_with_cases_sorted_labels_and_test_cases(ct_dataset):
    folder, _, _ = ct_dataset
    dataset = open_dataset(folder)
    assert dataset.layout == "nnunet"
    assert dataset.root == folder and dataset.manifest == folder / "dataset.json"
    assert dataset.name == "Dataset003_Liver"  # no "name" key: the folder's name
    assert dataset.channels == ("CT",) and dataset.modality == "CT"
    assert dataset.labels == {1: "liver", 2: "spleen", 3: "kidney"}
    assert [c.case_id for c in dataset.cases] == ["liver_1", "liver_10", "liver_2"]
    first = dataset.cases[0]
    assert first.images == (folder / "imagesTr" / "liver_1_0000.nii.gz",)
    assert first.label == folder / "labelsTr" / "liver_1.nii.gz"
    assert [c.case_id for c in dataset.test_cases] == ["liver_20", "liver_21"]
    assert dataset.test_cases[0].label == folder / "labelsTs" / "liver_20.nii.gz"  # ground truth where present
    assert dataset.test_cases[1].label is None
    assert dataset.problems == ()
    assert check_dataset(dataset) == []
    assert open_dataset(folder / "dataset.json").cases == dataset.cases  # the dataset.json itself opens too


def test_load_case_gives_the_written_voxels_on_the_written_grid(ct_dataset):
    folder, cases, test = ct_dataset
    dataset = open_dataset(folder)
    image, label = load_case(dataset, dataset.case("liver_10"))
    (written,), written_label = cases["liver_10"]
    np.testing.assert_array_equal(image.array, written.array)
    np.testing.assert_array_equal(label.array, written_label.array)
    assert image.geometry.is_close(written.geometry, tolerance_mm=1e-3)
    assert label.geometry == image.geometry
    assert image.kind is VolumeKind.IMAGE and label.kind is VolumeKind.LABEL
    assert [(s.number, s.name) for s in label.segments] == [(1, "liver"), (2, "spleen"), (3, "kidney")]
    assert image.path == str(folder / "imagesTr" / "liver_10_0000.nii.gz")
    test_image, test_label = load_case(dataset, dataset.case("liver_21"))
    np.testing.assert_array_equal(test_image.array, test["liver_21"][0][0].array)
    assert test_label is None


def test_two_mr_channels_load_in_channel_order(tmp_path):
    (t1, t2), labels = mr_pair(4)
    folder = write_nnunet(tmp_path / "Dataset010_Prostate", {"p1": ([t1, t2], labels)}, ("T2", "ADC"), name="Prostate")
    dataset = open_dataset(folder)
    assert dataset.name == "Prostate" and dataset.channels == ("T2", "ADC") and dataset.modality == "MR"
    assert dataset.cases[0].images == (folder / "imagesTr" / "p1_0000.nii.gz", folder / "imagesTr" / "p1_0001.nii.gz")
    image, _ = load_case(dataset, dataset.cases[0])
    assert image.num_channels == 2
    np.testing.assert_array_equal(image.array[0], t1.array[0])  # _0000 first
    np.testing.assert_array_equal(image.array[1], t2.array[0])
    assert image.path is None  # two files: no single path


def test_missing_channel_and_missing_label_are_problems_not_crashes(tmp_path):
    images, labels = mr_pair(1)
    folder = write_nnunet(tmp_path / "D", {"a": (images, labels), "b": (images, labels)}, ("T1", "T2"))
    (folder / "imagesTr" / "b_0001.nii.gz").unlink()
    (folder / "labelsTr" / "a.nii.gz").unlink()
    dataset = open_dataset(folder)
    assert [c.case_id for c in dataset.cases] == ["a", "b"]
    assert dataset.case("b").images[1] == folder / "imagesTr" / "b_0001.nii.gz"  # where it should be
    problems = check_dataset(dataset)
    assert [(p.case_id, Path(p.path).name, p.message) for p in problems] == [
        ("a", "a.nii.gz", "missing label map file"),
        ("b", "b_0001.nii.gz", "missing channel T2 file"),
    ]


def test_stray_files_extra_channel_and_numtraining_are_reported(tmp_path):
    folder = write_nnunet(tmp_path / "D", {"a": ct_pair(1)}, ("CT",), numTraining=5)
    (folder / "imagesTr" / "notes.txt").write_text("hello")
    (folder / "imagesTr" / "._a_0000.nii.gz").write_bytes(b"macOS resource fork")  # hidden: skipped silently
    (folder / "imagesTr" / "a_0001.nii.gz").write_bytes((folder / "imagesTr" / "a_0000.nii.gz").read_bytes())
    (folder / "labelsTr" / "orphan.nii.gz").write_bytes((folder / "labelsTr" / "a.nii.gz").read_bytes())
    dataset = open_dataset(folder)
    found = {(p.case_id, Path(p.path).name, p.severity): p.message for p in dataset.problems}
    assert found == {
        ("", "notes.txt", "warning"): "ignored: not named <case>_<XXXX>.nii.gz (XXXX: channel index)",
        ("a", "a_0001.nii.gz", "error"): "channel index 1 but dataset.json names 1 channel(s) ['CT']",
        ("orphan", "orphan.nii.gz", "warning"): "label map without images in imagesTr/; ignored",
        ("", "dataset.json", "warning"): "'numTraining' is 5 but imagesTr/ holds 1 case(s)",
    }
    assert set(dataset.problems) <= set(check_dataset(dataset))  # reported again by the check


def test_nrrd_file_ending(tmp_path):
    folder = write_nnunet(tmp_path / "D", {"a": ct_pair(3)}, ("CT",), ending=".nrrd")
    dataset = open_dataset(folder)
    assert dataset.cases[0].images == (folder / "imagesTr" / "a_0000.nrrd",)
    image, label = load_case(dataset, dataset.cases[0])
    np.testing.assert_array_equal(label.array, ct_pair(3)[1].array)


def _rewrite(folder: Path, **changes) -> None:
    description = json.loads((folder / "dataset.json").read_text())
    for key, value in changes.items():
        if value is None:
            del description[key]
        else:
            description[key] = value
    (folder / "dataset.json").write_text(json.dumps(description))


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"file_ending": None}, "missing key 'file_ending'"),
        ({"labels": None}, "missing key 'labels'"),
        ({"file_ending": ".png"}, "'file_ending' must be one of .nii, .nii.gz"),
        ({"channel_names": {"0": "T1", "2": "T2"}}, "'channel_names' must number channels 0, 1, ... without gaps"),
        ({"channel_names": ["CT", 3]}, "'channel_names' must name the channels"),
        (
            {"labels": {"background": 0, "whole_tumor": [1, 2, 3], "enhancing": 3}},
            "region-based labels ('whole_tumor': [1, 2, 3])",
        ),
        ({"labels": {"background": 0, "liver": 1, "tumour": 1}}, "label number(s) [1] more than one name"),
        ({"labels": {"background": 0, "liver": "one"}}, "'labels' must map names to numbers"),
    ],
)
def test_malformed_dataset_json_names_the_key(tmp_path, changes, expected):
    folder = write_nnunet(tmp_path / "D", {"a": ct_pair(1)}, ("CT",))
    _rewrite(folder, **changes)
    with pytest.raises(DatasetError, match="^" + re.escape(f"{folder / 'dataset.json'}: ")) as caught:
        open_dataset(folder)
    assert expected in str(caught.value)


def test_no_images_folder(tmp_path):
    folder = write_nnunet(tmp_path / "D", {"a": ct_pair(1)}, ("CT",))
    (folder / "imagesTr").rename(folder / "images")
    with pytest.raises(DatasetError, match="no imagesTr/ folder"):
        open_dataset(folder)
