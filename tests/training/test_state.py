"""Checkpoints round-trip, load without pickled code, and restore the random generators."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from medseg.errors import ModelError
from medseg.training.state import Checkpoint, capture_rng, load_checkpoint, restore_rng, save_checkpoint


def draws() -> tuple:
    return random.random(), float(np.random.random()), float(torch.rand(1))


def test_random_states_are_restored_exactly():
    state = capture_rng()
    first = [draws() for _ in range(3)]
    restore_rng(state)
    assert [draws() for _ in range(3)] == first


def test_a_checkpoint_round_trips_through_a_weights_only_load(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    checkpoint = Checkpoint(
        epoch=4,
        model=model.state_dict(),
        optimizer=optimizer.state_dict(),
        scheduler={"last_epoch": 4},
        scaler={},
        history=[{"epoch": 1.0, "train_loss": 0.5, "val_dice_mean": float("nan")}],
        best_epoch=3,
        best_dice=0.75,
        rng=capture_rng(),
        pipeline_yaml="name: x\n",
        fold="all",
    )
    path = save_checkpoint(checkpoint, tmp_path / "checkpoints" / "last.pt")
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left
    torch.load(path, weights_only=True)  # nothing but tensors and plain data
    loaded = load_checkpoint(path)
    assert loaded.epoch == 4 and loaded.fold == "all" and loaded.best_dice == 0.75
    assert torch.equal(loaded.model["weight"], model.weight.detach())
    assert loaded.history[0]["train_loss"] == 0.5
    restore_rng(loaded.rng)


def test_missing_or_foreign_checkpoints_are_refused(tmp_path):
    with pytest.raises(ModelError, match="no checkpoint there"):
        load_checkpoint(tmp_path / "last.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="unreadable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="not a medseg checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
