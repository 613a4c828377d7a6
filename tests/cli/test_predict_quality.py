"""Done-when of the quality flags: a batch of 20 scans, 3 of them damaged, flags those 3 and no good one."""

from __future__ import annotations

import csv
import json

import pytest

from medseg.cli import main
from medseg.synthetic import write_review_batch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("review-batch")
    cases = write_review_batch(root / "scans", good=17)
    code = main(["predict", str(root / "scans"), "--model", "bundled", "-o", str(root / "out"), "--stats"])
    return cases, root / "out", code


def rows(out):
    with open(out / "manifest.csv", newline="") as handle:
        return {row["case"]: row for row in csv.DictReader(handle)}


def test_the_damaged_scans_are_flagged_and_the_good_ones_are_not(batch):
    cases, out, code = batch
    found = rows(out)
    assert code == 0 and set(found) == set(cases) and len(cases) == 20
    flagged = {name for name, row in found.items() if row["flags"] or row["batch_flags"]}
    assert flagged == {name for name, damage in cases.items() if damage}
    assert "liver touches the upper edge of the scan" in found["cut-off"]["flags"].split(";")
    assert any("below anything in training" in flag for flag in found["head"]["flags"].split(";"))
    assert any("pieces" in flag for flag in found["noisy"]["flags"].split(";"))
    assert any("far above this batch" in flag for flag in found["noisy"]["batch_flags"].split(";"))


def test_every_segmented_case_has_volumes_and_confidence(batch):
    cases, out, _ = batch
    for name, row in rows(out).items():
        volumes = dict(entry.split("=") for entry in row["volumes_ml"].split(";"))
        assert set(volumes) == {"liver", "spleen", "kidney"}
        assert 0.5 < float(row["confidence"]) <= 1.0
        if not cases[name]:
            assert 250 < float(volumes["liver"]) < 700  # the training livers: 312-528 mL


def test_run_json_and_the_stats_hold_the_signals_per_label(batch):
    _, out, _ = batch
    run = json.loads((out / "run.json").read_text())
    noisy = run["cases"]["noisy"]["quality"]
    assert noisy["labels"]["kidney"]["components"] > 2 and noisy["batch_flags"]
    assert run["cases"]["good-1000"]["quality"]["flags"] == []
    stats = json.loads((out / "cut-off.stats.json").read_text())
    liver = next(label for label in stats["labels"] if label["name"] == "liver")
    assert liver["touches"] == ["upper"] and liver["volume_ml"] > 0 and 0 < liver["confidence"] <= 1
    assert "liver touches the upper edge of the scan" in stats["flags"]
    header = (out / "cut-off.stats.csv").read_text().splitlines()[0].split(",")
    assert {"components", "largest_share", "touches", "confidence", "boundary_confidence"} <= set(header)


def test_the_terminal_shows_the_flags(batch, capsys, tmp_path):
    cases, out, _ = batch
    # a re-run finds every case done; the flags of the batch are shown again from the records
    assert main(["predict", str(out.parent / "scans"), "--model", "bundled", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "20 exists (3 flagged for review)" in text
    assert "flagged: liver touches the upper edge of the scan" in text


def test_the_report_shows_those_three_flagged_and_no_other(batch, tmp_path):
    from tests.workflows.test_report import embedded

    cases, out, _ = batch
    assert main(["report", str(out), "-o", str(tmp_path / "report.html")]) == 0
    data = embedded((tmp_path / "report.html").read_text())
    assert {c["case"] for c in data["cases"]} == set(cases)
    assert {c["case"] for c in data["cases"] if c["flagged"]} == {name for name, damage in cases.items() if damage}
