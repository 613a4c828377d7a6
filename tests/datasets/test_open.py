"""open_dataset recognises the layout, or says which layouts it looked for and what was missing."""

from __future__ import annotations

import json

import pytest

from medseg.datasets import DatasetError, open_dataset
from medseg.errors import InputError
from tests.datasets.builders import ct_pair, write_nnunet


def test_folder_without_dataset_json_lists_the_layouts_and_hints(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "cases.csv").write_text("image,label\n")
    with pytest.raises(DatasetError) as caught:
        open_dataset(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path}: not a dataset: it holds no dataset.json")
    assert "imagesTr/ is there: add an nnU-Net v2 dataset.json" in message
    assert "to use a list, open the file itself (cases.csv)" in message
    for layout in ("nnU-Net v2 raw", "Medical Segmentation Decathlon", "a list file (.csv or .json)"):
        assert layout in message
    assert isinstance(caught.value, InputError)


def test_missing_path_and_unknown_file_type(tmp_path):
    with pytest.raises(DatasetError, match="nowhere: no such file or folder"):
        open_dataset(tmp_path / "nowhere")
    (tmp_path / "cases.txt").write_text("a.nii.gz")
    with pytest.raises(DatasetError, match="cases.txt: not a dataset folder or list file. Looked for nnU-Net"):
        open_dataset(tmp_path / "cases.txt")


def test_dataset_json_of_no_known_layout_names_the_keys(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"name": "x", "labels": {}}))
    with pytest.raises(
        DatasetError,
        match=r"neither nnU-Net v2's \(no key 'channel_names'\) nor the Decathlon's "
        r"\(no key 'training'\)",
    ):
        open_dataset(tmp_path)


def test_invalid_json_gives_line_and_column(tmp_path):
    (tmp_path / "dataset.json").write_text('{\n  "channel_names": {"0": "CT"},\n  "labels": {,}\n}')
    with pytest.raises(DatasetError, match=r"dataset\.json:3:\d+: not valid JSON"):
        open_dataset(tmp_path)


def test_layout_is_recognised_by_content_for_any_json_name(tmp_path):
    folder = write_nnunet(tmp_path / "D", {"a": ct_pair(1)}, ("CT",))
    (folder / "dataset.json").rename(folder / "description.json")
    dataset = open_dataset(folder / "description.json")
    assert dataset.layout == "nnunet" and [c.case_id for c in dataset.cases] == ["a"]
