"""The examples in docs/datasets.md are accepted as they are written."""

from __future__ import annotations

import json
import re
from pathlib import Path

from medseg.datasets import open_dataset

DOC = (Path(__file__).resolve().parents[2] / "docs" / "datasets.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC, re.S)


def test_json_and_csv_examples_open(tmp_path):
    nnunet, msd, listing, table = (json.loads(block) for block in _blocks("json"))
    (tmp_path / "nnunet" / "imagesTr").mkdir(parents=True)
    (tmp_path / "nnunet" / "imagesTr" / "liver_0_0000.nii.gz").touch()
    (tmp_path / "nnunet" / "dataset.json").write_text(json.dumps(nnunet))
    dataset = open_dataset(tmp_path / "nnunet")
    assert (dataset.layout, dataset.modality, dataset.labels) == ("nnunet", "CT", {1: "liver", 2: "tumour"})
    (tmp_path / "msd").mkdir()
    (tmp_path / "msd" / "dataset.json").write_text(json.dumps(msd))
    dataset = open_dataset(tmp_path / "msd")
    assert (dataset.layout, dataset.channels, dataset.modality) == ("msd", ("T2", "ADC"), "MR")
    assert [c.case_id for c in dataset.all_cases] == ["prostate_00", "prostate_03"]
    (tmp_path / "brain.json").write_text(json.dumps(listing))
    dataset = open_dataset(tmp_path / "brain.json")
    assert (dataset.channels, dataset.labels) == (("FLAIR", "T1"), {1: "oedema", 2: "tumour"})
    assert [c.case_id for c in dataset.cases] == ["b01"] and [c.case_id for c in dataset.test_cases] == ["b02"]
    csv, export = _blocks("csv")
    (tmp_path / "cases.csv").write_text(csv)
    dataset = open_dataset(tmp_path / "cases.csv")
    assert [c.case_id for c in dataset.cases] == ["p001", "p002"] and dataset.test_cases[0].case_id == "p003"
    assert dataset.case("p001").images == (tmp_path / "dicom" / "p001" / "CT",)

    # The worked example of DICOM labels: a list of series and structure sets, its label table in the sidecar.
    (tmp_path / "export.csv").write_text(export)
    (tmp_path / "export.dataset.json").write_text(json.dumps(table))
    dataset = open_dataset(tmp_path / "export.csv")
    assert dataset.labels == {1: "liver", 2: "kidney", 3: "tumour"} and dataset.channels == ("CT",)
    assert dataset.case("p002").label == tmp_path / "export" / "p002" / "RS.p002.dcm"
    assert dataset.table.match("Niere_links") == [2] and dataset.table.priority[:2] == (3, 1)
