"""check_dataset reads every case and reports every problem at once; load_case raises, naming case and file."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from medseg.datasets import DatasetError, check_dataset, load_case, open_dataset, require_valid
from medseg.errors import GeometryError, InputError
from medseg.geometry import Geometry
from medseg.io import write_image
from medseg.volume import Volume
from tests.datasets.builders import case_grid, ct_pair, mr_pair, write_nnunet


def _label_with(labels: Volume, value: int | float, dtype=np.uint8) -> Volume:
    """``labels`` with a small block set to ``value`` (as an image, so any value can be written)."""
    array = labels.array.astype(dtype)
    array[0, 2:4, 2:4, 2:4] = value
    return Volume(array, labels.geometry)


@pytest.fixture()
def broken(tmp_path):
    """Two-channel cases, one good and the rest each broken in a different way."""
    images, labels = mr_pair(1)
    other_grid = Geometry.from_spacing((31, 26, 13), (9.5, 8.0, 12.0), (-140.0, -104.0, -78.0))
    cases = {
        "good": (images, labels),
        "missing": (images, labels),
        "unreadable": (images, labels),
        "channel_grid": ([images[0], mr_pair(1, other_grid)[0][1]], labels),
        "label_shift": (images, mr_pair(1, case_grid(shift_mm=2.0))[1]),
        "undeclared": (images, _label_with(labels, 7)),
        "non_integer": (images, _label_with(labels, 0.5, np.float32)),
        "empty": (images, labels.with_array(np.zeros_like(labels.array))),
    }
    folder = write_nnunet(tmp_path / "Dataset042_Broken", cases, ("T1", "T2"))
    (folder / "imagesTr" / "missing_0001.nii.gz").unlink()
    (folder / "labelsTr" / "missing.nii.gz").unlink()
    (folder / "imagesTr" / "unreadable_0000.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    return open_dataset(folder)


def test_every_problem_of_every_case_is_reported_at_once(broken):
    calls = []
    problems = check_dataset(broken, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 8) for i in range(1, 9)]
    by_case: dict[str, list] = {}
    for p in problems:
        by_case.setdefault(p.case_id, []).append(p)
    assert sorted(by_case) == [
        "channel_grid",
        "empty",
        "label_shift",
        "missing",
        "non_integer",
        "undeclared",
        "unreadable",
    ]  # all broken cases, not "good"
    names = {case: [(Path(p.path).name, p.severity) for p in found] for case, found in by_case.items()}
    assert names["missing"] == [("missing_0001.nii.gz", "error"), ("missing.nii.gz", "error")]
    assert names["unreadable"] == [("unreadable_0000.nii.gz", "error")]
    assert names["channel_grid"] == [("channel_grid_0001.nii.gz", "error")]
    assert names["label_shift"] == [("label_shift.nii.gz", "error")]
    assert names["empty"] == [("empty.nii.gz", "warning")]
    message = {case: found[0].message for case, found in by_case.items()}
    assert message["missing"] == "missing channel T2 file" and by_case["missing"][1].message == "missing label map file"
    assert message["unreadable"].startswith("unreadable channel T1: not a readable NIfTI file")
    assert message["channel_grid"] == (
        "grids of channel T1 (channel_grid_0000.nii.gz) and channel T2 differ in size: [30, 26, 13] vs [31, 26, 13]"
    )
    assert re.match(
        r"image and label grids are 2 mm apart \(tolerance 0\.01 mm\): origin \[-140, ", message["label_shift"]
    )
    assert message["undeclared"] == (
        "label value(s) [7] are not declared (the dataset declares 0 background, 1 liver, 2 spleen, 3 kidney)"
    )
    assert message["non_integer"].startswith("label map holds non-integer values (8 voxels, e.g. [0.5])")
    assert message["empty"] == "label map is empty (background only)"
    with pytest.raises(DatasetError) as caught:
        require_valid(problems)
    lines = str(caught.value).splitlines()
    assert lines[0] == "the dataset has 7 error(s):" and len(lines) == 8  # the warning is left out
    assert all(line.startswith("  ") for line in lines[1:])


def test_load_case_raises_naming_case_and_file(broken):
    image, label = load_case(broken, broken.case("good"))
    assert image.num_channels == 2
    empty_image, empty_label = load_case(broken, broken.case("empty"))  # a warning does not stop loading
    assert not empty_label.array.any()
    with pytest.raises(
        GeometryError, match=r"^case 'label_shift': .*label_shift\.nii\.gz: image and label grids are 2 mm"
    ):
        load_case(broken, broken.case("label_shift"))
    with pytest.raises(GeometryError, match=r"^case 'channel_grid': .*channel_grid_0001\.nii\.gz: grids of channel"):
        load_case(broken, broken.case("channel_grid"))
    with pytest.raises(InputError, match=r"^case 'unreadable': .*unreadable_0000\.nii\.gz: unreadable channel T1"):
        load_case(broken, broken.case("unreadable"))
    with pytest.raises(InputError) as caught:
        load_case(broken, broken.case("missing"))
    assert str(caught.value).splitlines() == [
        "case 'missing': 2 problems:",
        f"  {broken.root / 'imagesTr' / 'missing_0001.nii.gz'}: missing channel T2 file",
        f"  {broken.root / 'labelsTr' / 'missing.nii.gz'}: missing label map file",
    ]


def test_grid_tolerance(tmp_path):
    (image,), labels = ct_pair(1)
    nudged = labels.replace(geometry=case_grid(shift_mm=0.004))  # NIfTI keeps it to float32 precision
    folder = write_nnunet(tmp_path / "D", {"a": ([image], nudged)}, ("CT",))
    dataset = open_dataset(folder)
    assert check_dataset(dataset) == []  # 0.004 mm is within the default 0.01 mm
    _, label = load_case(dataset, dataset.cases[0])
    assert label.geometry == load_case(dataset, dataset.cases[0])[0].geometry  # put on the image's grid
    (problem,) = check_dataset(dataset, tolerance_mm=0.001)
    assert re.match(r"image and label grids are 0\.00(4|399\d*) mm apart \(tolerance 0\.001 mm\)", problem.message)
    with pytest.raises(GeometryError):
        load_case(dataset, dataset.cases[0], tolerance_mm=0.001)


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        (lambda lab: _label_with(lab, -1, np.int16), "label map holds negative values (minimum -1)"),
        (lambda lab: _label_with(lab, np.inf, np.float32), "label map holds non-integer values (8 voxels, e.g. [inf])"),
        (
            lambda lab: Volume(np.concatenate([lab.array, lab.array]), lab.geometry),
            "a label map must have one channel, this one has 2",
        ),
    ],
)
def test_other_label_errors(tmp_path, label, expected):
    (image,), labels = ct_pair(1)
    write_nnunet(tmp_path / "D", {"a": ([image], None)}, ("CT",))
    write_image(label(labels), tmp_path / "D" / "labelsTr" / "a.nii.gz")
    (problem,) = check_dataset(open_dataset(tmp_path / "D"))
    assert problem.message.startswith(expected)


def test_whole_number_float_labels_are_accepted_as_integers(tmp_path):
    (image,), labels = ct_pair(1)
    write_nnunet(tmp_path / "D", {"a": ([image], None)}, ("CT",))
    write_image(Volume(labels.array.astype(np.float32), labels.geometry), tmp_path / "D" / "labelsTr" / "a.nii.gz")
    dataset = open_dataset(tmp_path / "D")
    assert check_dataset(dataset) == []
    _, label = load_case(dataset, dataset.cases[0])
    assert label.dtype == np.uint8
    np.testing.assert_array_equal(label.array, labels.array)
