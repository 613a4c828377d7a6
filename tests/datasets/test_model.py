"""The dataset types: modality from channel names, problems and require_valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg.datasets import Case, CaseProblem, Dataset, DatasetError, require_valid
from medseg.errors import InputError


def _dataset(*channels: str) -> Dataset:
    cases = (Case("b", (Path("b.nii.gz"),), Path("b_seg.nii.gz")), Case("a", (Path("a.nii.gz"),), None))
    return Dataset(Path("/data"), "tiny", "list", channels, {1: "liver"}, cases[:1], cases[1:])


@pytest.mark.parametrize(
    ("channels", "modality"),
    [
        (("CT",), "CT"),
        (("ct",), "CT"),
        ((" Ct ",), "CT"),
        (("T1",), "MR"),
        (("T2", "ADC"), "MR"),
        (("FLAIR", "T1w", "t1gd", "T2w"), "MR"),
        (("MRI",), "MR"),
        (("DWI", "b800"), "MR"),
        (("T2*",), "MR"),
        (("CT", "PET"), "CT"),  # not the only channel: the first channel's name
        (("PET",), "PET"),
        (("T1", "PET"), "T1"),  # not every channel is MR
        (("0",), "0"),
    ],
)
def test_modality_from_channel_names(channels, modality):
    assert _dataset(*channels).modality == modality


def test_case_lookup_and_all_cases():
    dataset = _dataset("CT")
    assert [c.case_id for c in dataset.all_cases] == ["b", "a"]
    assert dataset.case("a").label is None
    with pytest.raises(KeyError, match="'zz'"):
        dataset.case("zz")


def test_problem_text_names_case_path_and_message():
    assert (
        str(CaseProblem("c1", "/x/c1.nii.gz", "missing label map file")) == "c1: /x/c1.nii.gz: missing label map file"
    )
    assert str(CaseProblem("", "/x/dataset.json", "odd", "warning")) == "dataset: /x/dataset.json: odd"


def test_require_valid_lists_every_error_one_line_each_and_ignores_warnings():
    problems = [
        CaseProblem("c1", "p1", "missing image file"),
        CaseProblem("c2", "p2", "label map is empty (background only)", "warning"),
        CaseProblem("c3", "p3", "label value(s) [7] are not declared"),
    ]
    with pytest.raises(DatasetError) as caught:
        require_valid(problems)
    lines = str(caught.value).splitlines()
    assert lines[0] == "the dataset has 2 error(s):"
    assert lines[1:] == ["  c1: p1: missing image file", "  c3: p3: label value(s) [7] are not declared"]
    assert isinstance(caught.value, InputError) and isinstance(caught.value, ValueError)
    require_valid(problems[1:2])  # warnings only: no error
    require_valid([])
