"""Time-limited runs: validation kept to its share, a closing validation inside the limit, SIGTERM exports."""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
import time

import pytest

import medseg.training.loop as loop
from medseg.models.folder import load_model
from medseg.workflows.train import TrainOptions, train
from medseg.training.budget import ValidationBudget, export_seconds
from medseg.training.records import read_metrics


def budget(windows, *, seconds=600.0, share=0.1, per_window=0.1) -> ValidationBudget:
    return ValidationBudget(share=share, seconds=seconds, windows=windows, seconds_per_window=per_window)


def test_the_closing_validation_takes_the_cases_half_the_share_pays_for():
    # 600 s at 10%: 30 s for the closing validation; each case costs (windows + 1) x 0.1 s.
    assert budget([49, 49, 49]).cases == [0, 1, 2]  # 15 s
    assert budget([99, 99, 99, 99]).cases == [0, 1, 2]  # 10 s each: three fit in 30 s
    assert budget([399]).cases == [0]  # 40 s: over half the share, within the whole of it
    assert budget([999]).cases == []  # 100 s: over the whole share, skipped
    assert "validation skipped" in budget([999]).describe()
    assert "3 of 4 cases" in budget([99, 99, 99, 99]).describe()


def test_validations_during_training_keep_to_half_the_share_of_the_time_spent():
    plan = budget([99])  # 10 s a validation
    assert not plan.due(elapsed=100.0)  # 10 s of 5% of 110 s: not yet
    assert plan.due(elapsed=190.0)  # 10 <= 0.05 x 200
    plan.record(10.0)
    assert not plan.due(elapsed=300.0) and plan.due(elapsed=390.0)  # 20 <= 0.05 x 400


def test_the_cost_per_window_is_learnt_from_real_validations():
    plan = budget([99, 99], per_window=0.01)  # estimated 2 s, the closing validation is both cases
    assert plan.closing_seconds == pytest.approx(2.0)
    plan.record(20.0)  # it really took ten times as long
    assert plan.closing_seconds == pytest.approx(20.0)
    assert plan.reserve == pytest.approx(20.0 + export_seconds(0))
    assert export_seconds(30_000_000) > export_seconds(1_000_000)


def slow_validation(monkeypatch, seconds_per_case: float) -> None:
    """Make every validated case take ``seconds_per_case`` longer, as a large scan on a slow machine would."""
    real = loop.predict_logits

    def slow(*args, **kwargs):
        time.sleep(seconds_per_case)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "predict_logits", slow)


@pytest.mark.slow
def test_a_time_limit_is_kept_even_when_validation_is_slow(phantom_dataset, tiny_pipeline, tmp_path, monkeypatch):
    """The promise: the run ends, validated and exported, within the limit plus a small margin."""
    slow_validation(monkeypatch, 0.4)
    limit = 0.4  # minutes
    result = train(
        phantom_dataset,
        tmp_path / "run",
        TrainOptions(pipeline=tiny_pipeline, epochs=10_000, time_limit_minutes=limit, device="cpu"),
    )
    assert result.stopped == "time limit"
    assert result.seconds <= limit * 60 + 2.0
    history = read_metrics(tmp_path / "run" / "metrics.csv")
    validation = sum(row["validation_seconds"] for row in history)
    validated = [row for row in history if not math.isnan(row["val_dice_mean"])]
    # Each validated case takes more than 0.4 s: without the budget, every epoch (a fraction of a
    # second of training) would validate, and validation would take most of the run.
    assert 1 <= len(validated) < len(history) / 5
    assert validation <= 0.15 * result.seconds
    assert not math.isnan(history[-1]["val_dice_mean"])  # the closing validation of the final weights
    facts = json.loads((result.model_dir / "model.json").read_text())
    assert facts["stopped"] == "time limit" and facts["epochs_run"] == len(history)
    load_model(result.model_dir)
    log = (tmp_path / "run" / "train.log").read_text()
    assert re.search(r"validation on (every validation case|1 of 2 cases) \(an estimated", log)
    assert "time limit reached" in log
    assert all(row["train_seconds"] > 0 and row["data_seconds"] > 0 for row in history)
    assert all(0 <= row["pseudo_dice_mean"] <= 1 for row in history)


@pytest.mark.slow
def test_a_closing_validation_that_cannot_fit_is_skipped_with_a_note(phantom_dataset, tiny_pipeline, tmp_path):
    """A budget too small for even one case: no validation, the final weights exported, said in the log."""
    training = tiny_pipeline.training.model_copy(update={"validation_share": 0.0001})
    pipeline = tiny_pipeline.model_copy(update={"training": training})
    result = train(
        phantom_dataset, tmp_path / "run", TrainOptions(pipeline=pipeline, epochs=10_000, time_limit_minutes=0.1)
    )
    assert result.stopped == "time limit" and result.seconds <= 6.0 + 2.0
    assert all(math.isnan(row["val_dice_mean"]) for row in result.history)
    assert result.best_epoch == result.epochs or result.best_epoch == 0
    assert "validation skipped" in (tmp_path / "run" / "train.log").read_text()
    load_model(result.model_dir)


@pytest.mark.slow
def test_sigterm_ends_training_with_the_model_exported(phantom_dataset, tiny_pipeline_file, tmp_path):
    """A job scheduler's SIGTERM: the step in progress ends, the epoch is saved, the model exported, exit 0."""
    run = tmp_path / "run"
    command = [sys.executable, "-m", "medseg", "train", str(phantom_dataset), "--output", str(run)]
    command += ["--pipeline", str(tiny_pipeline_file), "--epochs", "100000", "--device", "cpu"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run / "metrics.csv").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (run / "metrics.csv").exists(), process.stderr.read() if process.poll() is not None else "no epoch"
        time.sleep(1.0)
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
        seconds = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert seconds < 15.0
    assert "stopped by SIGTERM" in err and "--resume" in err
    facts = json.loads((run / "model" / "model.json").read_text())
    assert facts["stopped"] == "interrupted"
    assert "stop requested" in (run / "train.log").read_text()
    load_model(run / "model")
    resumed = train(phantom_dataset, run, TrainOptions(device="cpu", resume=True, epochs=facts["epochs_run"] + 1))
    assert resumed.epochs == facts["epochs_run"] + 1 and resumed.stopped == "completed"


def test_steps_far_from_the_plan_are_reported_with_both_numbers(phantom_dataset, tiny_pipeline, tmp_path):
    training = tiny_pipeline.training.model_copy(update={"planned_step_seconds": 30.0, "iterations_per_epoch": 12})
    pipeline = tiny_pipeline.model_copy(update={"training": training})
    train(phantom_dataset, tmp_path / "run", TrainOptions(pipeline=pipeline, epochs=1, device="cpu"))
    log = (tmp_path / "run" / "train.log").read_text()
    line = next(line for line in log.splitlines() if "the plan's estimate" in line)
    assert "of 30.000 s (training.planned_step_seconds)" in line and "faster than planned" in line
