"""evaluate(): pairing cases by name across layouts, label names, failures, and the files it writes."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from medseg.errors import ConfigError, InputError
from medseg.geometry import Geometry
from medseg.io import read_dicom, write_nifti
from medseg.metrics import LabelStatus, score_labels
from medseg.volume import Volume, VolumeKind
from medseg.workflows.evaluate import case_id, evaluate, find_cases, write_evaluation
from tests import factories

GEOMETRY = Geometry.from_spacing((30, 26, 12), (1.4, 1.1, 3.0), (-20.0, 11.5, -40.0), factories.rotation("z", 12))


def _label_map(seed: int, geometry: Geometry = GEOMETRY) -> Volume:
    """Three box-shaped labels whose corners move a little with the seed."""
    rng = np.random.default_rng(seed)
    array = np.zeros(geometry.shape, np.uint8)
    for label, (i, j, k) in ((1, (3, 3, 2)), (2, (16, 4, 3)), (3, (8, 15, 6))):
        di, dj, dk = rng.integers(0, 3, 3)
        array[i + di : i + di + 9, j + dj : j + dj + 7, k + dk : k + dk + 4] = label
    return Volume(array, geometry, kind=VolumeKind.LABEL)


def _write(volume: Volume, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_nifti(volume, path)


@pytest.fixture()
def study(tmp_path):
    """nnU-Net-style references beside predictions in `medseg predict`'s layouts, with stray files."""
    refs = tmp_path / "Dataset001_Test" / "labelsTs"
    (refs.parent / "dataset.json").parent.mkdir(parents=True)
    labels = {"background": 0, "liver": 1, "spleen": 2, "kidney": 3}
    (refs.parent / "dataset.json").write_text(json.dumps({"labels": labels}))
    preds = tmp_path / "out"
    truth = {}
    for n, case in enumerate(("case_a", "case_b", "case_c"), 1):
        truth[case] = _label_map(10 * n), _label_map(10 * n + 1)
        _write(truth[case][1], refs / f"{case}.nii.gz")
    _write(truth["case_a"][0], preds / "case_a.nii.gz")  # an image file's prediction
    _write(truth["case_b"][0], preds / "case_b" / "case_b.nii.gz")  # a DICOM series' prediction folder
    _write(_label_map(99), preds / "case_d.nii.gz")  # no reference
    (preds / "case_a.stats.json").write_text("{}")
    (preds / "manifest.csv").write_text("case\n")
    (preds / "case_a.preview.png").write_bytes(b"\x89PNG")
    (preds / "empty_folder").mkdir()
    return preds, refs, truth


def test_folders_pair_by_case_id_and_report_the_unmatched(study):
    preds, refs, truth = study
    evaluation = evaluate(preds, refs, tolerance_mm=1.5)
    assert evaluation.cases == ("case_a", "case_b")
    assert evaluation.unmatched_predictions == ("case_d",) and evaluation.unmatched_references == ("case_c",)
    assert evaluation.labels == {1: "liver", 2: "spleen", 3: "kidney"}  # names from ../dataset.json
    assert not evaluation.failures
    assert len(evaluation.rows) == 6
    for row in evaluation.rows:
        expected = {s.label: s for s in score_labels(*truth[row.case_id], tolerance_mm=1.5)}[row.scores.label]
        assert row.scores.as_dict() == pytest.approx(expected.as_dict(), nan_ok=True)
        assert row.name == evaluation.labels[row.scores.label]
    assert evaluation.rows[3].prediction == preds / "case_b" / "case_b.nii.gz"
    summary = {s.label: s for s in evaluation.summary()}
    dice = [r.scores.dice for r in evaluation.rows if r.scores.label == 2]
    assert summary[2].metrics["dice"].mean == pytest.approx(np.mean(dice))
    assert summary[2].metrics["dice"].median == pytest.approx(np.median(dice))
    assert summary[2].cases == 2 and summary[2].statuses["ok"] == 2


def test_labels_by_number_or_name_and_unknown_names(study):
    preds, refs, _ = study
    by_name = evaluate(preds, refs, labels=["Spleen", "3"])
    assert by_name.labels == {2: "spleen", 3: "kidney"}
    assert {r.scores.label for r in by_name.rows} == {2, 3}
    with pytest.raises(ConfigError, match=r"unknown label 'pancreas'.*1=liver"):
        evaluate(preds, refs, labels=["pancreas"])
    with pytest.raises(ConfigError, match="no labels"):
        evaluate(preds, refs, labels=[])


def test_edge_cases_over_cases_summary_excludes_nan(tmp_path):
    """Label 2 missed in one case, label 4 only predicted: statuses are counted, NaN kept out of means."""
    ref_a, ref_b = _label_map(1), _label_map(2)
    pred_a = ref_a.with_array(np.where(ref_a.channel(0) == 2, 0, ref_a.channel(0)).astype(np.uint8))
    pred_b = np.array(ref_b.channel(0))
    pred_b[0:2, 0:2, 0:2] = 4
    for name, volume in (("a", pred_a), ("b", ref_b.with_array(pred_b))):
        _write(volume, tmp_path / "pred" / f"{name}_0000.nii.gz")  # channel suffix dropped
    _write(ref_a, tmp_path / "ref" / "a.nii.gz")
    _write(ref_b, tmp_path / "ref" / "b.nii.gz")
    evaluation = evaluate(tmp_path / "pred", tmp_path / "ref")
    assert evaluation.cases == ("a", "b") and evaluation.labels == {1: "label 1", 2: "label 2", 3: "label 3"}
    assert any("[4]" in w and "predictions only" in w for w in evaluation.warnings)
    spleen = next(s for s in evaluation.summary() if s.label == 2)
    assert spleen.statuses == {"ok": 1, "missed": 1, "spurious": 0, "absent": 0}
    assert spleen.metrics["dice"].mean == pytest.approx(0.5) and spleen.metrics["dice"].count == 2
    assert spleen.metrics["hd95_mm"].count == 1 and spleen.metrics["hd95_mm"].mean == 0.0
    with_4 = evaluate(tmp_path / "pred", tmp_path / "ref", labels=[4])
    assert [r.scores.status for r in with_4.rows] == [LabelStatus.ABSENT, LabelStatus.SPURIOUS]
    dice = with_4.summary()[0].metrics["dice"]
    assert (dice.mean, dice.count) == (0.0, 1)  # the absent case's NaN is left out
    assert with_4.summary()[0].metrics["hd95_mm"].count == 0


def test_a_case_on_another_grid_fails_alone_naming_both_files(tmp_path):
    for case, geometry in (("good", GEOMETRY), ("moved", Geometry.from_spacing(GEOMETRY.shape, (1.4, 1.1, 3.0)))):
        _write(_label_map(1, geometry), tmp_path / "pred" / f"{case}.nii.gz")
        _write(_label_map(1), tmp_path / "ref" / f"{case}.nii.gz")
    _write(_label_map(1), tmp_path / "ref" / "broken.nii.gz")
    (tmp_path / "pred" / "broken.nii.gz").write_bytes(b"not a nifti")
    evaluation = evaluate(tmp_path / "pred", tmp_path / "ref")
    assert evaluation.cases == ("good",)
    failures = {f.case_id: f.message for f in evaluation.failures}
    assert set(failures) == {"broken", "moved"}
    assert str(tmp_path / "pred" / "moved.nii.gz") in failures["moved"]
    assert str(tmp_path / "ref" / "moved.nii.gz") in failures["moved"] and "mm apart" in failures["moved"]
    assert "broken.nii.gz" in failures["broken"]


def test_single_files_pair_whatever_their_names(tmp_path):
    pred = _write(_label_map(5), tmp_path / "prediction.nii.gz")
    ref = _write(_label_map(6), tmp_path / "truth.nii.gz")
    evaluation = evaluate(pred, ref)
    assert evaluation.cases == ("truth",) and len(evaluation.rows) == 3
    with pytest.raises(InputError, match="no such file"):
        evaluate(tmp_path / "missing", ref)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(InputError, match="no label maps"):
        evaluate(tmp_path / "nothing", ref)


def test_case_ids_and_preferences(tmp_path):
    assert [case_id(n) for n in ("x.nii.gz", "x_0000.nii.gz", "x.seg.dcm", "x.mha", "x_0000")] == ["x"] * 5
    assert case_id("liver_12.nii") == "liver_12"
    _write(_label_map(1), tmp_path / "p" / "x.nii")
    _write(_label_map(1), tmp_path / "p" / "x.nii.gz")
    warnings: list[str] = []
    assert find_cases(tmp_path / "p", warnings=warnings) == {"x": tmp_path / "p" / "x.nii.gz"}
    assert "case x has 2 files" in warnings[0]


def test_write_evaluation_csv_json_and_box_plot(study, tmp_path):
    preds, refs, _ = study
    evaluation = evaluate(preds, refs, labels=[1, 2, 3])
    csv_path = tmp_path / "results" / "scores.csv"
    written = write_evaluation(evaluation, csv_path)
    assert written == [csv_path, csv_path.with_suffix(".json"), csv_path.with_suffix(".png")]
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 6 and list(rows[0])[:5] == ["case", "label", "name", "status", "dice"]
    assert float(rows[0]["dice"]) == pytest.approx(evaluation.rows[0].scores.dice)
    summary = json.loads(csv_path.with_suffix(".json").read_text())
    assert summary["cases"] == 2 and summary["unmatched_references"] == ["case_c"]
    liver = summary["labels"][0]
    assert liver["name"] == "liver"
    dice = [float(r["dice"]) for r in rows if r["label"] == "1"]
    assert liver["metrics"]["dice"]["mean"] == pytest.approx(np.mean(dice))
    width, height = struct.unpack(">II", csv_path.with_suffix(".png").read_bytes()[16:24])
    assert width >= 800 and height >= 600


def test_nan_is_empty_in_csv_and_null_in_json(tmp_path):
    ref = _label_map(3)
    pred = ref.with_array(np.zeros(ref.spatial_shape, np.uint8))
    _write(pred, tmp_path / "p.nii.gz"), _write(ref, tmp_path / "r.nii.gz")
    evaluation = evaluate(tmp_path / "p.nii.gz", tmp_path / "r.nii.gz", labels=[1])
    written = write_evaluation(evaluation, tmp_path / "e.csv")
    row = next(csv.DictReader(written[0].open()))
    assert row["status"] == "missed" and row["dice"] == "0.0" and row["hd95_mm"] == ""
    metrics = json.loads(written[1].read_text())["labels"][0]["metrics"]
    assert metrics["hd95_mm"] == {"mean": None, "median": None, "count": 0}


def test_dicom_seg_predictions_score_like_their_nifti(tmp_path):
    from medseg.io.dicom_outputs import AlgorithmIdentity
    from medseg.io.seg import write_seg

    image, labels = factories.phantom_pair()
    factories.write_series(image, tmp_path / "scan")
    scan = read_dicom(tmp_path / "scan")
    assert scan.geometry.is_close(labels.geometry, tolerance_mm=1e-3)
    eroded = np.where(np.roll(labels.channel(0), 1, axis=0) == labels.channel(0), labels.channel(0), 0)
    prediction = scan.with_array(eroded.astype(np.uint8), kind=VolumeKind.LABEL, segments=labels.segments)
    write_seg(prediction, tmp_path / "out" / "ct" / "ct.seg.dcm", algorithm=AlgorithmIdentity("test", "1"))
    _write(labels.replace(segments=()), tmp_path / "ref" / "ct.nii.gz")
    from_seg = evaluate(tmp_path / "out", tmp_path / "ref")
    _write(prediction, tmp_path / "nifti" / "ct.nii.gz")
    from_nifti = evaluate(tmp_path / "nifti", tmp_path / "ref")
    assert from_seg.cases == ("ct",) and not from_seg.failures
    assert from_seg.labels == {1: "liver", 2: "spleen", 3: "kidney"}  # names from the SEG's segments
    assert len(from_seg.rows) == len(from_nifti.rows) == 3
    for seg_row, nifti_row in zip(from_seg.rows, from_nifti.rows):
        assert seg_row.scores.as_dict() == pytest.approx(nifti_row.scores.as_dict(), nan_ok=True)
    assert 0.3 < from_seg.rows[0].scores.dice < 1.0


def test_rtstruct_references_are_filled_on_the_prediction_grid_and_matched_by_name(tmp_path):
    from medseg.io.dicom_outputs import AlgorithmIdentity
    from medseg.io.rtstruct import write_rtstruct
    from medseg.volume import Segment

    image, labels = factories.phantom_pair()
    factories.write_series(image, tmp_path / "scan")
    scan = read_dicom(tmp_path / "scan")
    truth = labels.channel(0)
    # The reference as a planning system names it: other spellings, and a body outline that is no label.
    array = np.where(truth > 0, truth, 0).astype(np.uint8)
    array[0, :, :] = 9
    spelled = (Segment(1, "LIVER"), Segment(2, "Milz"), Segment(3, "kidney"), Segment(9, "BODY"))
    reference = scan.with_array(array, kind=VolumeKind.LABEL, segments=spelled)
    write_rtstruct(reference, tmp_path / "ref" / "ct.dcm", algorithm=AlgorithmIdentity("planning", "1"))
    # NIfTI predictions carry no names: the references' dataset.json gives them, and its label table the synonyms.
    names = {"background": 0, "liver": 1, "spleen": 2, "kidney": 3}
    (tmp_path / "ref" / "dataset.json").write_text(json.dumps({"labels": names, "label_names": {"spleen": "milz"}}))
    eroded = np.where(np.roll(truth, 1, axis=0) == truth, truth, 0).astype(np.uint8)
    prediction = scan.with_array(eroded, kind=VolumeKind.LABEL, segments=labels.segments)
    _write(prediction, tmp_path / "pred" / "ct.nii.gz")
    _write(scan.with_array(truth.astype(np.uint8), kind=VolumeKind.LABEL), tmp_path / "nifti" / "ct.nii.gz")

    from_rtstruct = evaluate(tmp_path / "pred", tmp_path / "ref")
    from_nifti = evaluate(tmp_path / "pred", tmp_path / "nifti")

    assert from_rtstruct.cases == ("ct",) and not from_rtstruct.failures
    assert from_rtstruct.labels == {1: "liver", 2: "spleen", 3: "kidney"}
    assert any("'BODY' match no label" in w for w in from_rtstruct.warnings)
    for rt_row, nifti_row in zip(from_rtstruct.rows, from_nifti.rows, strict=True):
        assert rt_row.scores.as_dict() == pytest.approx(nifti_row.scores.as_dict(), nan_ok=True)
