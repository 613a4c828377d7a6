"""Medical Segmentation Decathlon folders: files listed in dataset.json, channels in one 4D file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg.datasets import DatasetError, check_dataset, load_case, open_dataset
from medseg.errors import InputError
from medseg.io import read_image, write_image
from tests.datasets.builders import ct_pair, mr_pair, write_msd


def test_ct_dataset_opens_and_loads(tmp_path):
    cases = {"liver_3": ct_pair(3), "liver_0": ct_pair(0)}
    folder = write_msd(tmp_path / "Task03_Liver", cases, ("CT",), test={"liver_9": ct_pair(9)[0]})
    dataset = open_dataset(folder)
    assert (dataset.layout, dataset.name, dataset.channels, dataset.modality) == ("msd", "Tiny", ("CT",), "CT")
    assert dataset.labels == {1: "liver", 2: "spleen", 3: "kidney"}
    assert [c.case_id for c in dataset.cases] == ["liver_0", "liver_3"]
    assert dataset.cases[0].images == (folder / "imagesTr" / "liver_0.nii.gz",)
    assert dataset.cases[0].label == folder / "labelsTr" / "liver_0.nii.gz"
    assert [(c.case_id, c.label) for c in dataset.test_cases] == [("liver_9", None)]
    image, label = load_case(dataset, dataset.case("liver_3"))
    np.testing.assert_array_equal(image.array, cases["liver_3"][0][0].array)
    np.testing.assert_array_equal(label.array, cases["liver_3"][1].array)
    assert check_dataset(dataset) == []


def test_test_case_ground_truth_from_labels_ts(tmp_path):
    folder = write_msd(tmp_path / "T", {"a": ct_pair(1)}, ("CT",), test={"b": ct_pair(2)[0]})
    write_image(ct_pair(2)[1], folder / "labelsTs" / "b.nii.gz")
    dataset = open_dataset(folder)
    assert dataset.case("b").label == folder / "labelsTs" / "b.nii.gz"
    _, label = load_case(dataset, dataset.case("b"))
    np.testing.assert_array_equal(label.array, ct_pair(2)[1].array)


def test_4d_two_channel_image_loads_in_modality_order(tmp_path):
    (t2, adc), labels = mr_pair(5)
    folder = write_msd(tmp_path / "Task05_Prostate", {"prostate_00": ([t2, adc], labels)}, ("T2", "ADC"))
    assert read_image(folder / "imagesTr" / "prostate_00.nii.gz").num_channels == 2  # really one 4D file
    dataset = open_dataset(folder)
    assert dataset.channels == ("T2", "ADC") and dataset.modality == "MR"
    assert dataset.cases[0].images == (folder / "imagesTr" / "prostate_00.nii.gz",)
    image, label = load_case(dataset, dataset.cases[0])
    np.testing.assert_array_equal(image.array[0], t2.array[0])
    np.testing.assert_array_equal(image.array[1], adc.array[0])
    assert label.geometry == image.geometry


def test_wrong_channel_count_is_named(tmp_path):
    (t2, adc), labels = mr_pair(5)
    folder = write_msd(tmp_path / "T", {"p": ([t2, adc], labels)}, ("T2", "ADC", "DWI"))
    dataset = open_dataset(folder)
    (problem,) = check_dataset(dataset)
    assert problem.case_id == "p" and problem.path == str(folder / "imagesTr" / "p.nii.gz")
    assert problem.message == (
        "holds 2 channel(s) but the dataset has 3 ['T2', 'ADC', 'DWI']; the file must hold them all"
    )
    with pytest.raises(InputError, match=r"^case 'p': .*p\.nii\.gz: holds 2 channel\(s\)"):
        load_case(dataset, dataset.cases[0])


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d.update(training={"image": "x"}), "'training' must be a list"),
        (lambda d: d["training"][0].pop("label"), "training[0]: missing key 'label'"),
        (lambda d: d["training"][0].update(image=""), "training[0].image must be a file path"),
        (lambda d: d.pop("modality"), "missing key 'modality'"),
        (lambda d: d.update(test="./imagesTs"), "'test' must be a list of image paths"),
        (lambda d: d["training"].append(dict(d["training"][0])), "two cases are named 'a'"),
    ],
)
def test_malformed_dataset_json_names_the_key(tmp_path, edit, expected):
    folder = write_msd(tmp_path / "T", {"a": ct_pair(1)}, ("CT",))
    description = json.loads((folder / "dataset.json").read_text())
    edit(description)
    (folder / "dataset.json").write_text(json.dumps(description))
    with pytest.raises(DatasetError) as caught:
        open_dataset(folder)
    assert str(caught.value).startswith(str(folder / "dataset.json"))
    assert expected in str(caught.value)
