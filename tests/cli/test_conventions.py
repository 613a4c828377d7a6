"""Conventions every command keeps: one spelling for the output, usage errors in one line, -q and --json."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from medseg.cli import _subparsers, build_parser, main
from medseg.io import write_image
from medseg.synthetic import make_phantom, write_phantom_dataset
from tests import factories

#: Commands that write files or folders, and what their output option is called in the namespace.
WRITERS = {
    "plan": "output",
    "train": "output",
    "predict": "output",
    "evaluate": "output",
    "convert": "output_option",
    "demo": "output",
    "pacs pull": "output",
    "pacs segment": "work",
    "listen": "storage",
    "report": "output",
}


def _commands() -> dict[str, argparse.ArgumentParser]:
    found = {}
    for parser in _subparsers(build_parser()):
        name = parser.prog.removeprefix("medseg ").strip()
        found[name] = parser
    return found


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_every_command_that_writes_takes_o_and_output(command):
    parser = _commands()[command]
    options = {o: a for a in parser._actions for o in a.option_strings}
    assert "-o" in options and "--output" in options, command
    assert options["-o"] is options["--output"] and options["-o"].dest == WRITERS[command]


def test_convert_takes_its_output_as_an_argument_or_as_o(tmp_path, capsys):
    phantoms = write_phantom_dataset(tmp_path / "Dataset001_P", num_training=1)
    image = next((phantoms / "imagesTr").glob("*.nii.gz"))
    assert main(["convert", str(image), "-o", str(tmp_path / "a.nrrd")]) == 0
    assert (tmp_path / "a.nrrd").is_file()
    assert main(["convert", str(image), str(tmp_path / "b.mha")]) == 0 and (tmp_path / "b.mha").is_file()
    capsys.readouterr()
    assert main(["convert", str(image), str(tmp_path / "c.mha"), "-o", str(tmp_path / "d.mha")]) == 2
    assert "two outputs given" in capsys.readouterr().err
    assert main(["convert", str(image)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the output is missing" in err


@pytest.mark.parametrize(
    "command",
    [
        ["predict", "--model", "{missing}", "{input}", "-o", "{out}"],
        ["demo", "--model", "{missing}", "-o", "{out}"],
        ["listen", "--model", "{missing}", "-o", "{out}", "--port", "0"],
        ["pacs", "segment", "--model", "{missing}", "--url", "http://127.0.0.1:9/dicom-web", "-o", "{out}"],
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_a_missing_model_folder_is_a_model_error_in_one_line(command, tmp_path, capsys):
    image = tmp_path / "scan.nii.gz"
    image.write_bytes(b"")
    values = {"missing": str(tmp_path / "no-model"), "input": str(image), "out": str(tmp_path / "out")}
    assert main([part.format(**values) for part in command]) == 2  # a model error: fix the command
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no-model: no model folder there" in err
    assert not (tmp_path / "out").exists()


@pytest.fixture()
def scan_and_labels(tmp_path):
    """A phantom scan in a folder of its own (`<case>_0000.nii.gz`) and its true labels, as predict names them."""
    geometry = factories.axial_geometry((40, 34, 10), (7.0, 7.0, 10.0), (-140.0, -120.0, -45.0))
    image, labels = make_phantom(3, geometry=geometry)
    write_image(image, tmp_path / "in" / "abdomen_0000.nii.gz")
    write_image(labels, tmp_path / "truth" / "abdomen.nii.gz")
    return tmp_path / "in", tmp_path / "truth"


def test_quiet_prints_nothing_but_errors(trained_model, scan_and_labels, tmp_path, capsys):
    scans, truth = scan_and_labels
    masks = tmp_path / "masks"
    runs = [
        ["-q", "predict", "--model", str(trained_model), str(scans), "-o", str(masks), "--device", "cpu", "--no-tta"],
        ["convert", str(scans / "abdomen_0000.nii.gz"), str(tmp_path / "scan.nrrd"), "-q"],  # -q after the command
        ["-q", "info", str(scans)],
        ["evaluate", str(masks), str(truth), "-q"],
    ]
    for argv in runs:
        assert main(argv) == 0, argv
        assert capsys.readouterr() == ("", ""), argv
        assert main([a for a in argv if a != "-q"]) == 0  # without -q the same run does print
        assert capsys.readouterr().out, argv
    assert (masks / "abdomen.nii.gz").is_file() and (tmp_path / "scan.nrrd").is_file()
    # Errors still print their one line, and failed cases theirs.
    assert main(["-q", "convert", str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("medseg convert: error: ") and "nope" in err
    (scans / "broken_0000.nii.gz").write_bytes(b"not a nifti")
    assert main(["-q", "predict", "--model", str(trained_model), str(scans), "-o", str(masks)]) == 4
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("medseg predict: error: broken") and err.count("\n") == 1


def test_json_summaries_are_the_only_stdout(trained_model, scan_and_labels, tmp_path, capsys):
    scans, truth = scan_and_labels
    masks = tmp_path / "masks"
    assert main(["predict", "--model", str(trained_model), str(scans), "-o", str(masks), "--no-tta", "--json"]) == 0
    run = json.loads(capsys.readouterr().out)
    assert run["counts"]["done"] == 1 and run["cases_total"] == 1 and run["manifest"] == str(masks / "manifest.csv")
    (case,) = run["cases"]
    assert case["name"] == "abdomen" and case["status"] == "done" and case["seconds"] > 0
    assert case["outputs"] and all(Path(p).is_file() for p in case["outputs"])
    # -q does not silence what was asked for as data; the re-run finds the case done.
    assert main(["-q", "predict", "--model", str(trained_model), str(scans), "-o", str(masks), "--json"]) == 0
    assert [c["status"] for c in json.loads(capsys.readouterr().out)["cases"]] == ["exists"]

    assert main(["evaluate", str(masks), str(truth), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores == {**json.loads((masks / "evaluation.json").read_text()), "outputs": scores["outputs"]}
    assert scores["cases"] == 1 and {s["label"] for s in scores["labels"]} == {1, 2, 3}
    assert all(0 <= s["metrics"]["dice"]["mean"] <= 1 for s in scores["labels"])
    assert [Path(p).suffix for p in scores["outputs"]] == [".csv", ".json", ".png"]

    assert main(["convert", str(scans), str(tmp_path / "nrrd"), "--format", "nrrd", "--json"]) == 0
    converted = json.loads(capsys.readouterr().out)
    (result,) = converted["results"]
    assert result["status"] == "converted" and Path(result["output"]).is_file() and result["output"].endswith(".nrrd")
    assert converted["counts"] == {"converted": 1, "exists": 0, "skipped": 0, "failed": 0}


def test_demo_json(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "demo"), "--json", "--device", "cpu"]) == 0
    demo = json.loads(capsys.readouterr().out)
    assert demo["output"] == str(tmp_path / "demo") and demo["passed"] is True
    assert set(demo["dice"]) == {"liver", "spleen", "kidney"} and min(demo["dice"].values()) > 0.8
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert {k: v for k, v in demo.items() if k != "output"} == summary
    assert Path(demo["outputs"]["seg"]).is_file() and demo["seconds"]["total"] > 0


def test_a_closed_pipe_ends_json_quietly(tmp_path):
    """`medseg convert ... --json | head`, as `medseg info --json | head`: exit 0 without a word."""
    image, _ = factories.phantom_pair()
    write_image(image, tmp_path / "scan.nii.gz")
    process = subprocess.Popen(
        [sys.executable, "-m", "medseg", "convert", str(tmp_path / "scan.nii.gz"), str(tmp_path / "s.mha"), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 0
    assert "Broken pipe" not in stderr and "Traceback" not in stderr and (tmp_path / "s.mha").is_file()
