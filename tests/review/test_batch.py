"""Reading a prediction output folder: with the quality columns, and as older runs left it (without)."""

from __future__ import annotations

import json

import pytest

from medseg.errors import InputError
from medseg.review.batch import read_batch
from tests.review.conftest import FLAGGED


def test_cases_files_and_quality_columns(batch_folder):
    batch = read_batch(batch_folder)
    assert [c.name for c in batch.cases] == ["alpha", "bravo", "broken", "charlie"]  # manifest order
    alpha, bravo, broken, charlie = batch.cases
    assert alpha.mask == batch_folder / "alpha.nii.gz" and alpha.preview == batch_folder / "alpha.preview.png"
    assert charlie.mask == batch_folder / "charlie" / "charlie.nii.gz"  # a DICOM series: its case folder
    assert charlie.preview == batch_folder / "charlie" / "charlie.preview.png"
    assert broken.status == "failed" and broken.mask is None and broken.preview is None and broken.message
    assert alpha.flags == ("spleen: 3 pieces, largest 71%", "liver touches the upper edge of the scan")
    assert bravo.batch_flags == ("liver: 3400 mL, far above this batch (median 1500 mL)",)
    assert {c.name for c in batch.cases if c.flagged} == FLAGGED
    assert alpha.confidence == 0.81 and broken.confidence is None
    assert set(alpha.volumes_ml) == {"liver", "spleen", "kidney"} and alpha.volumes_ml["liver"] > 100
    assert batch.labels == ["liver", "spleen", "kidney"]
    assert batch.counts() == {"cases": 4, "done": 3, "failed": 1, "flagged": 2}
    assert batch.run["model"]["name"] == "medseg-phantom"


def test_predicts_own_quality_columns_are_read(predicted):
    batch = read_batch(predicted[1])
    done = [c for c in batch.cases if c.status == "done"]
    assert len(done) == 3 and all(c.confidence is not None and 0.5 < c.confidence <= 1 for c in done)
    assert all(set(c.volumes_ml) == {"liver", "spleen", "kidney"} for c in done)
    assert any("edge of the scan" in f for c in done for f in c.flags)  # these small grids cut organs at their edges


def test_an_older_folder_without_quality_columns_reads_with_blanks(older_folder):
    batch = read_batch(older_folder)
    assert all(not c.flags and not c.batch_flags and c.confidence is None for c in batch.cases)
    assert batch.counts()["flagged"] == 0
    stats = json.loads((older_folder / "alpha.stats.json").read_text())["labels"]
    assert batch.case("alpha").volumes_ml == {s["name"]: s["volume_ml"] for s in stats}  # from --stats


def test_run_json_quality_is_used_when_the_manifest_lacks_the_columns(older_folder):
    out = older_folder
    run = json.loads((out / "run.json").read_text())
    run["cases"]["bravo"]["quality"] = {
        "labels": {"liver": {"volume_ml": 3400.0, "components": 1, "empty": False}},
        "confidence": 0.5,
        "flags": [],
        "batch_flags": ["liver: 3400 mL, far above this batch (median 1500 mL)"],
    }
    (out / "run.json").write_text(json.dumps(run))
    bravo = read_batch(out).case("bravo")
    assert bravo.flagged and bravo.confidence == 0.5 and bravo.volumes_ml == {"liver": 3400.0}


def test_not_an_output_folder_is_one_line(tmp_path):
    with pytest.raises(InputError, match="no manifest.csv"):
        read_batch(tmp_path)
    with pytest.raises(InputError, match="no such folder"):
        read_batch(tmp_path / "missing")
    with pytest.raises(InputError, match="no case 'zulu'"):
        (tmp_path / "manifest.csv").write_text("case,status\nalpha,done\n")
        read_batch(tmp_path).case("zulu")
