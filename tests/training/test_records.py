"""metrics.csv, the epoch line, and how the run's pipeline text follows an epoch change."""

from __future__ import annotations

import math

from medseg.config import parse_pipeline
from medseg.training.records import RunRecords, format_epoch, read_metrics
from medseg.workflows.resolve import differences, with_epochs
from tests.training.conftest import TINY

ROWS = [
    {
        "epoch": 1.0,
        "train_loss": 0.9,
        "val_dice_mean": math.nan,
        "val_dice_liver": math.nan,
        "lr": 0.01,
        "seconds": 2.0,
    },
    {
        "epoch": 2.0,
        "train_loss": 0.1 + 0.2,
        "pseudo_dice_mean": 0.75,
        "val_dice_mean": 0.5,
        "val_dice_liver": 0.5,
        "lr": 0.005,
        "seconds": 2.5,
        "train_seconds": 2.0,
        "data_seconds": 0.25,
        "validation_seconds": 0.25,
    },
]


def test_metrics_round_trip_exactly_with_empty_cells_for_epochs_not_validated(tmp_path):
    records = RunRecords(tmp_path, label_names=["liver"], epochs=2)
    records.write_csv(ROWS)
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0] == (
        "epoch,train_loss,pseudo_dice_mean,val_dice_mean,val_dice_liver,lr,seconds,"
        "train_seconds,data_seconds,validation_seconds"
    )
    assert lines[1] == "1,0.9,,,,0.01,2.0,,,"  # a row of an older run, without the newer columns
    assert lines[2] == "2,0.30000000000000004,0.75,0.5,0.5,0.005,2.5,2.0,0.25,0.25"
    back = read_metrics(tmp_path / "metrics.csv")
    assert back[1]["train_loss"] == 0.1 + 0.2 and math.isnan(back[0]["val_dice_mean"])
    assert back[1]["validation_seconds"] == 0.25


def test_the_epoch_line():
    assert format_epoch(ROWS[1], epochs=10, label_names=["liver"]) == (
        "epoch 2/10  loss 0.3000  pseudo-dice 0.750  dice 0.500 (liver 0.500)  lr 0.005  "
        "2.5 s (train 2.0, data 0.2, validation 0.2)"
    )
    assert "dice" not in format_epoch(ROWS[0], epochs=10, label_names=["liver"])


def test_changing_epochs_edits_the_pipeline_text_in_place():
    pipeline = parse_pipeline(TINY)
    changed, text = with_epochs(pipeline, TINY, 50)
    assert changed.training.epochs == 50 and parse_pipeline(text) == changed
    assert text == TINY.replace("epochs: 3  # three epochs", "epochs: 50  # three epochs")
    # Without an unambiguous epochs line the pipeline is written anew.
    changed, text = with_epochs(pipeline, TINY.replace("  epochs: 3  # three epochs\n", ""), 50)
    assert parse_pipeline(text) == changed


def test_differences_name_dotted_keys():
    assert differences({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 1, "c": 5}, "e": 4}) == ["a.c", "d", "e"]
