"""Conventions every command keeps: one spelling for the output, and usage errors in one line."""

from __future__ import annotations

import argparse

import pytest

from medseg.cli import _subparsers, build_parser, main
from medseg.synthetic import write_phantom_dataset

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
    assert main([part.format(**values) for part in command]) == 1  # a model error, not a usage error (2)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no-model: no model folder there" in err
    assert not (tmp_path / "out").exists()
