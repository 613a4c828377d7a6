"""``medseg predict`` on the command line: exit codes, one-line errors, the summary."""

from __future__ import annotations

import pytest

from medseg.cli import main
from medseg.io import write_image
from medseg.synthetic import make_phantom
from tests import factories


@pytest.fixture()
def nifti_inputs(tmp_path):
    folder = tmp_path / "in"
    image, _ = make_phantom(3, geometry=factories.axial_geometry((40, 34, 10), (7.0, 7.0, 10.0), (-140.0, -120.0, -45.0)))
    write_image(image, folder / "abdomen_0000.nii.gz")
    return folder


def test_help_lists_the_contract_flags(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--model", "--output", "--format", "--device", "--tta", "--no-tta", "--overlap", "--batch-size",
                 "--shard", "--stats", "--preview"):
        assert flag in text


def test_a_run_prints_one_line_per_case_and_a_summary(trained_model, nifti_inputs, tmp_path, capsys):
    code = main(["predict", "--model", str(trained_model), str(nifti_inputs), "--output", str(tmp_path / "out"),
                 "--device", "cpu", "--stats", "--no-tta", "--overlap", "0.1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "done abdomen" in out and "1 done" in out and "manifest.csv" in out
    assert (tmp_path / "out" / "abdomen.nii.gz").is_file() and (tmp_path / "out" / "abdomen.stats.csv").is_file()
    again = main(["predict", "--model", str(trained_model), str(nifti_inputs), "--output", str(tmp_path / "out")])
    assert again == 0 and "1 exists" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--format", "nifti,png"], "--format"),
        (["--shard", "3/2"], "--shard"),
        (["--overlap", "1.5"], "--overlap"),
        (["--format", "seg"], "SEG need a DICOM source"),
    ],
)
def test_usage_errors_exit_2_with_one_line(trained_model, nifti_inputs, tmp_path, capsys, extra, message):
    code = main(["predict", "--model", str(trained_model), str(nifti_inputs), "--output", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_missing_model_or_input_is_one_line(nifti_inputs, tmp_path, capsys):
    assert main(["predict", "--model", str(tmp_path / "nope"), str(nifti_inputs), "--output", str(tmp_path / "o")]) == 2
    assert "no model folder" in capsys.readouterr().err  # a model error, as an incomplete folder is
    assert main(["predict", "--model", str(tmp_path), str(nifti_inputs), "--output", str(tmp_path / "o")]) == 2
    assert "not a model medseg knows: expected a medseg model folder" in capsys.readouterr().err
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "pipeline.yaml").write_text("version: 1\n")
    assert main(["predict", "--model", str(partial), str(nifti_inputs), "--output", str(tmp_path / "o")]) == 2
    assert "not a complete model folder" in capsys.readouterr().err
    assert main(["predict", "--model", str(tmp_path), str(tmp_path / "missing"), "--output", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_slurm_array_variables_pick_the_shard(trained_model, nifti_inputs, tmp_path, capsys, monkeypatch):
    write_image(make_phantom(4, geometry=factories.axial_geometry((40, 34, 10), (7.0, 7.0, 10.0)))[0],
                nifti_inputs / "second_0000.nii.gz")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    assert main(["predict", "--model", str(trained_model), str(nifti_inputs), "--output", str(tmp_path / "o"),
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "shard 2/2 of 2 case(s): 1 done" in out
    assert sorted(p.name for p in (tmp_path / "o").glob("*.nii.gz")) == ["second.nii.gz"]


def test_the_bundled_model_is_named_bundled(nifti_inputs, tmp_path, capsys):
    code = main(["predict", "--model", "bundled", str(nifti_inputs), "--output", str(tmp_path / "o"), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "o" / "abdomen.nii.gz").is_file()
