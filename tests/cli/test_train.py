"""`medseg train`: one line per epoch, a model folder, and a run that is never overwritten."""

from __future__ import annotations

import pytest

from medseg.cli import main
from medseg.synthetic import write_phantom_dataset
from medseg.training.records import read_metrics
from medseg.training.state import load_checkpoint
from tests.training.conftest import TINY


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return write_phantom_dataset(tmp_path_factory.mktemp("phantoms") / "Dataset001_Phantom", num_training=4)


@pytest.fixture()
def pipeline_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.replace("iterations_per_epoch: 3", "iterations_per_epoch: 2"))
    return path


def test_train_prints_a_line_per_epoch_and_resumes(phantoms, pipeline_file, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", str(phantoms), "--output", str(run), "--pipeline", str(pipeline_file), "--device", "cpu"]
    assert main([*args, "--epochs", "1"]) == 0
    err = capsys.readouterr().err
    assert "epoch 1/1  loss " in err and f"-> {run / 'model'}" in err
    assert (run / "model" / "model.pt").is_file()

    assert main([*args, "--epochs", "2"]) == 2  # never overwrite a run
    assert "not empty; add --resume" in capsys.readouterr().err
    assert main([*args, "--epochs", "2", "--resume"]) == 0
    assert "epoch 2/2  loss " in capsys.readouterr().err
    assert len(read_metrics(run / "metrics.csv")) == 2


def test_train_refuses_a_non_empty_output_without_resume(phantoms, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["train", str(phantoms), "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medseg train: error: ") and "not empty" in err and len(err.splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--pipeline", "missing.yaml"], "no such pipeline file"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--time-limit", "0"], "--time-limit must be a positive"),
    ],
)
def test_train_usage_errors_are_one_line(phantoms, tmp_path, capsys, extra, message):
    assert main(["train", str(phantoms), "--output", str(tmp_path / "run"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1


def test_train_fold_must_be_a_number_or_all(phantoms, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(phantoms), "--output", str(tmp_path / "run"), "--fold", "first"])
    assert exit_info.value.code == 2
    assert "expected a fold number or 'all'" in capsys.readouterr().err


@pytest.mark.slow
def test_sigterm_stops_a_run_that_then_resumes(phantoms, pipeline_file, tmp_path):
    """A real process, stopped by SIGTERM mid-run, exports its model, exits 0, keeps its last epoch and resumes."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    medseg = str(Path(sys.executable).parent / "medseg")
    run = tmp_path / "run"
    args = [medseg, "train", str(phantoms), "-o", str(run), "--pipeline", str(pipeline_file), "--device", "cpu"]
    process = subprocess.Popen([*args, "--epochs", "10000"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if (run / "metrics.csv").exists() and len(read_metrics(run / "metrics.csv")) >= 2:
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "--resume" in err and "stopped by SIGTERM" in err
    assert (run / "model" / "model.pt").is_file()
    kept = load_checkpoint(run / "checkpoints" / "last.pt")
    assert kept.epoch >= 2
    done = subprocess.run(
        [*args, "--resume", "--epochs", str(kept.epoch + 1)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    rows = read_metrics(run / "metrics.csv")
    assert len(rows) == kept.epoch + 1
    assert [r["train_loss"] for r in rows[: kept.epoch]] == [r["train_loss"] for r in kept.history]
