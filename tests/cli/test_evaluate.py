"""`medseg evaluate`: default outputs, the printed table and exit codes."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from medseg.cli import main
from medseg.geometry import Geometry
from medseg.io import write_nifti
from medseg.volume import Volume, VolumeKind

GEOMETRY = Geometry.from_spacing((24, 20, 10), (1.5, 1.2, 2.5), (-10.0, 4.0, 30.0))


def _labels(shift: int, geometry: Geometry = GEOMETRY) -> Volume:
    array = np.zeros(geometry.shape, np.uint8)
    array[4 + shift : 14 + shift, 3:12, 2:7] = 1
    array[15:21, 13:18, 3:8] = 2
    return Volume(array, geometry, kind=VolumeKind.LABEL)


def _study(tmp_path: Path) -> tuple[Path, Path]:
    preds, refs = tmp_path / "preds", tmp_path / "refs"
    for case, shift in (("a", 0), ("b", 2)):
        write_nifti(_labels(shift), preds / f"{case}.nii.gz")
        write_nifti(_labels(0), refs / f"{case}.nii.gz")
    return preds, refs


def test_folders_write_beside_predictions_and_print_a_table(tmp_path, capsys):
    preds, refs = _study(tmp_path)
    write_nifti(_labels(0), refs / "c.nii.gz")  # no prediction: a warning, not a failure
    assert main(["evaluate", str(preds), str(refs), "--tolerance", "1"]) == 0
    out, err = capsys.readouterr()
    assert "Dice" in out and "HD95 mm" in out and "NSD" in out
    assert "0.900/0.900" in out  # label 1: Dice 1.0 and 0.8
    assert "1 case(s) with a reference only, not scored: c" in err
    rows = list(csv.DictReader((preds / "evaluation.csv").open()))
    assert [(r["case"], r["label"]) for r in rows] == [("a", "1"), ("a", "2"), ("b", "1"), ("b", "2")]
    assert float(rows[0]["dice"]) == 1.0 and float(rows[2]["dice"]) == 0.8  # 10 voxels shifted by 2
    assert float(rows[2]["tolerance_mm"]) == 1.0
    summary = json.loads((preds / "evaluation.json").read_text())
    assert summary["labels"][0]["metrics"]["dice"]["mean"] == 0.9
    assert (preds / "evaluation.png").stat().st_size > 1000


def test_a_file_writes_beside_it_and_labels_and_output_options(tmp_path, capsys):
    preds, refs = _study(tmp_path)
    assert main(["-q", "evaluate", str(preds / "b.nii.gz"), str(refs / "b.nii.gz")]) == 0
    assert (preds / "evaluation.csv").is_file()
    output = tmp_path / "report" / "scores.csv"
    assert main(["-q", "evaluate", str(preds), str(refs), "--labels", "2", "--output", str(output)]) == 0
    assert {r["label"] for r in csv.DictReader(output.open())} == {"2"}
    assert output.with_suffix(".json").is_file() and output.with_suffix(".png").is_file()


def test_exit_codes(tmp_path, capsys):
    preds, refs = _study(tmp_path)
    write_nifti(_labels(0, Geometry.from_spacing(GEOMETRY.shape, (1.0, 1.0, 1.0))), preds / "moved.nii.gz")
    write_nifti(_labels(0), refs / "moved.nii.gz")
    assert main(["-q", "evaluate", str(preds), str(refs)]) == 4  # one case could not be scored
    assert "failed:" in capsys.readouterr().err
    assert main(["-q", "evaluate", str(preds), str(tmp_path / "missing")]) == 2
    assert main(["-q", "evaluate", str(preds), str(refs), "--labels", "pancreas"]) == 2
    assert "unknown label 'pancreas'" in capsys.readouterr().err
    assert main(["-q", "evaluate", str(preds), str(refs), "--labels", " , "]) == 2
    other = tmp_path / "other"
    write_nifti(_labels(0), other / "zzz.nii.gz")
    assert main(["-q", "evaluate", str(preds), str(other)]) == 2  # nothing pairs
    assert "no case scored" in capsys.readouterr().err


def test_help_is_registered_and_quick():
    medseg = str(Path(sys.executable).parent / "medseg")
    result = subprocess.run([medseg, "evaluate", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--tolerance" in result.stdout and "--labels" in result.stdout
    probe = "import sys, medseg.cli.evaluate; print('matplotlib' in sys.modules or 'scipy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"
