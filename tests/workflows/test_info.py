"""``workflows.info``: what a path holds, series and image files, as a notebook lists them."""

from __future__ import annotations

import pytest

from medseg.io import write_image
from medseg.workflows.info import inventory
from tests import factories


def test_series_image_files_and_skipped_files_are_listed(tmp_path):
    image, labels = factories.phantom_pair()
    factories.write_series(image, tmp_path / "study" / "ct", series_description="abdomen")
    write_image(labels, tmp_path / "study" / "labels.nii.gz")
    (tmp_path / "study" / "notes.txt").write_text("not an image")
    seen = []
    found = inventory(tmp_path / "study", progress=lambda stage, done, total: seen.append((stage, done, total)))
    kinds = sorted(entry["kind"] for entry in found.entries)
    assert kinds == ["dicom series", "image file"]
    series = next(e for e in found.entries if e["kind"] == "dicom series")
    assert series["folder"] == "ct" and series["description"] == "abdomen"
    assert series["size"] == list(image.geometry.shape) and series["problems"] == []
    assert [s["path"].endswith("notes.txt") for s in found.skipped] == [True]
    assert seen and seen[-1][0] == "scan" and seen[-1][1] == seen[-1][2]


def test_one_image_file_is_described_from_its_header(tmp_path):
    image, _ = factories.phantom_pair()
    write_image(image, tmp_path / "ct.nii.gz")
    (entry,) = inventory(tmp_path / "ct.nii.gz").entries
    assert entry["format"] == "nifti" and entry["num_slices"] == image.geometry.shape[2]


def test_a_missing_path_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        inventory(tmp_path / "nope")
