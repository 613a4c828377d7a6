"""Learning actually happens: a small network segments phantoms well within a minute on a CPU."""

from __future__ import annotations

import pytest

from medseg.config import parse_pipeline
from medseg.synthetic import write_phantom_dataset
from medseg.models.folder import load_model
from medseg.workflows.train import TrainOptions, train

SMALL = """\
version: 1
name: small
modality: CT
labels: {1: liver, 2: spleen, 3: kidney}
preprocessing:
  spacing: [6.0, 6.0, 8.0]
  channels:
    - {name: CT, normalization: {scheme: ct, clip: [-160.0, 240.0], mean: 60.0, std: 50.0}}
network:
  dimensions: 3
  filters: [16, 32, 64]
  kernel_sizes: [[3, 3, 3], [3, 3, 3], [3, 3, 3]]
  strides: [[1, 1, 1], [2, 2, 2], [2, 2, 2]]
  deep_supervision_heads: 1
training:
  patch_size: [48, 48, 24]
  batch_size: 2
  epochs: 14
  iterations_per_epoch: 10
  validation_interval: 2
  optimizer: {name: adamw, learning_rate: 0.003, weight_decay: 0.0001}
  schedule: cosine
inference:
  batch_size: 4
"""


@pytest.mark.slow
def test_a_small_network_learns_to_segment_phantoms_in_under_a_minute(tmp_path):
    dataset = write_phantom_dataset(tmp_path / "Dataset001_Phantom", num_training=10)
    # 140 steps of ~0.25 s on 2 cores (~40 s). A fixed budget of epochs, not of time, so that the
    # outcome is the same on a busy machine; the time limit only guards against a hang.
    result = train(
        dataset, tmp_path / "run", TrainOptions(pipeline=parse_pipeline(SMALL), device="cpu", time_limit_minutes=10)
    )
    assert result.stopped == "completed" and result.epochs == 14
    first = next(row for row in result.history if row["val_dice_mean"] == row["val_dice_mean"])
    assert first["val_dice_mean"] < 0.5 < result.best_dice
    assert result.history[-1]["train_loss"] < 0.5 * result.history[0]["train_loss"]
    _, _, facts = load_model(result.model_dir)
    assert facts["best_dice"] == result.best_dice and facts["best_dice_per_label"]["liver"] > 0.5
