"""The HTML report's content: the cases, thumbnails, summary, plots and scores it embeds, and its commands."""

from __future__ import annotations

import base64
import io
import json
import re

from PIL import Image

from medseg.cli import main
from medseg.review.report import THUMBNAIL_WIDTH
from medseg.workflows.evaluate import evaluate
from medseg.workflows.report import write_report
from tests.review.conftest import FLAGGED


def embedded(page: str) -> dict:
    payload = re.search(r'<script type="application/json" id="case-data">(.*?)</script>', page, re.DOTALL).group(1)
    return json.loads(payload)


def test_the_page_embeds_every_case_with_its_facts_and_a_thumbnail(batch_folder):
    result = write_report(batch_folder)
    assert result.path == batch_folder / "report.html"
    page = result.path.read_text()
    data = embedded(page)
    assert [c["case"] for c in data["cases"]] == ["alpha", "bravo", "broken", "charlie"]
    assert {c["case"] for c in data["cases"] if c["flagged"]} == FLAGGED
    assert data["labels"] == ["liver", "spleen", "kidney"] and data["scoreLabels"] == []
    by_name = {c["case"]: c for c in data["cases"]}
    assert by_name["bravo"]["batchFlags"] == ["liver: 3400 mL, far above this batch (median 1500 mL)"]
    assert by_name["alpha"]["confidence"] == 0.81 and by_name["broken"]["confidence"] is None
    assert by_name["broken"]["thumb"] == "" and "not a readable NIfTI" in by_name["broken"]["message"]
    for name in ("alpha", "bravo", "charlie"):
        header, encoded = by_name[name]["thumb"].split(",", 1)
        assert header == "data:image/jpeg;base64"
        thumb = Image.open(io.BytesIO(base64.b64decode(encoded)))
        assert thumb.width == THUMBNAIL_WIDTH and len(encoded) < 20_000
    # nothing fetched: no external script, style, image or link
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)
    assert "<script src" not in page and "<link" not in page


def test_markup_in_a_flag_cannot_break_the_page(batch_folder):
    manifest = batch_folder / "manifest.csv"
    manifest.write_text(manifest.read_text().replace("spleen: 3 pieces", "</script><!--<b>spleen</b>"))
    page = write_report(batch_folder).path.read_text()
    assert page.count("</script>") == 2 and "<!--" not in page and "<b>spleen" not in page
    assert embedded(page)["cases"][0]["flags"][0] == "</script><!--<b>spleen</b>, largest 71%"


def test_the_summary_and_the_volume_plots(batch_folder):
    page = write_report(batch_folder).path.read_text()
    facts = dict(re.findall(r'data-fact="([^"]+)"><span>[^<]*</span> <b>([^<]*)</b>', page))
    assert (facts["cases"], facts["done"], facts["failed"], facts["flagged"]) == ("4", "3", "1", "2")
    assert facts["model"].startswith("medseg-phantom 0.1.0") and facts["device"] == "cpu"
    assert facts["medseg"] == "0.1.0" and "torch " in facts["libraries"] and "monai " in facts["libraries"]
    strips = re.findall(r'<svg class="strip" data-label="([^"]+)".*?</svg>', page, re.DOTALL)
    assert strips == ["liver", "spleen", "kidney"]
    for svg in re.findall(r'<svg class="strip".*?</svg>', page, re.DOTALL):
        assert sorted(re.findall(r'class="flagged" data-case="([^"]+)"', svg)) == sorted(FLAGGED)
        assert re.findall(r'class="ok" data-case="([^"]+)"', svg) == ["charlie"]


def test_a_folder_without_quality_columns_reports_blanks(older_folder, tmp_path):
    page = write_report(older_folder, output=tmp_path / "r.html").path.read_text()
    data = embedded(page)
    assert not any(c["flagged"] or c["flags"] or c["confidence"] is not None for c in data["cases"])
    assert data["labels"] == ["liver", "spleen", "kidney"]  # volumes from the stats files
    assert not (older_folder / "report.html").exists()


def test_references_add_the_scores_of_medseg_evaluate(batch_folder, predicted):
    references = predicted[2]
    data = embedded(write_report(batch_folder, reference=references).path.read_text())
    assert data["scoreLabels"] == ["liver", "spleen", "kidney"]
    # NIfTI references name no labels: the report names them as the stats files do (1 liver, 2 spleen, 3 kidney)
    expected = {(r.case_id, r.scores.label): r.scores for r in evaluate(batch_folder, references).rows}
    for case in data["cases"]:
        for number, label in enumerate(data["scoreLabels"], start=1):
            if case["case"] == "broken":
                assert label not in case["dice"]
                continue
            scores = expected[(case["case"], number)]
            assert case["dice"][label] == round(scores.dice, 4) and 0.5 < case["dice"][label] <= 1
            assert case["hd95"][label] == round(scores.hd95_mm, 4)


def test_the_command_writes_the_report_and_says_so(batch_folder, tmp_path, capsys):
    assert main(["report", str(batch_folder), "-o", str(tmp_path / "r.html")]) == 0
    out = capsys.readouterr().out
    assert "4 case(s): 3 done, 1 failed, 2 flagged" in out and str(tmp_path / "r.html") in out
    assert embedded((tmp_path / "r.html").read_text())["cases"]
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such file or folder" in err
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no manifest.csv" in err


def test_predict_report_writes_the_report_after_the_batch(predicted, tmp_path, capsys):
    inputs = predicted[0]
    out = tmp_path / "o"
    assert (
        main(
            [
                "predict",
                "--model",
                "bundled",
                str(inputs / "alpha.nii.gz"),
                "-o",
                str(out),
                "--device",
                "cpu",
                "--preview",
                "--report",
            ]
        )
        == 0
    )
    assert f"report: {out / 'report.html'}" in capsys.readouterr().out
    data = embedded((out / "report.html").read_text())
    assert [c["case"] for c in data["cases"]] == ["alpha"] and data["cases"][0]["thumb"]
