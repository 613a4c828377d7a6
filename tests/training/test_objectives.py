"""Losses, optimisers and schedules from pipeline settings."""

from __future__ import annotations

import pytest
import torch

from medseg.config import Network, Optimizer, Training
from medseg.models.networks import build_network
from medseg.training.objectives import build_loss, build_optimizer, build_schedule


@pytest.mark.parametrize("loss", ["dice_ce", "dice"])
def test_loss_is_low_for_the_right_answer_and_high_for_the_wrong_one(loss):
    training = Training(patch_size=[8, 8, 8], loss=loss)
    criterion = build_loss(training, deep_supervision=False)
    labels = torch.zeros(1, 1, 8, 8, 8, dtype=torch.long)
    labels[..., 2:6, 2:6, 2:6] = 1
    right = torch.cat([(labels == 0).float(), (labels == 1).float()], dim=1) * 20 - 10
    assert criterion(right, labels) < 0.05
    assert criterion(-right, labels) > 0.9


def test_deep_supervision_loss_takes_stacked_heads():
    criterion = build_loss(Training(patch_size=[8, 8, 8]), deep_supervision=True)
    labels = torch.zeros(2, 1, 8, 8, 8, dtype=torch.long)
    heads = torch.randn(2, 2, 3, 8, 8, 8)  # (B, heads, classes, ...)
    assert torch.isfinite(criterion(list(heads.unbind(1)), labels))


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_a_few_steps_fit_a_tiny_problem(name):
    torch.manual_seed(0)
    network = Network(
        dimensions=2,
        filters=[8, 16, 16],
        kernel_sizes=[[3, 3]] * 3,
        strides=[[1, 1], [2, 2], [2, 2]],
        deep_supervision=False,
    )
    net = build_network(network, in_channels=1, out_channels=2)
    optimizer = build_optimizer(net.parameters(), Optimizer(name=name, learning_rate=0.01 if name == "sgd" else 0.003))
    criterion = build_loss(Training(patch_size=[16, 16]), deep_supervision=False)
    labels = torch.zeros(4, 1, 16, 16, dtype=torch.long)
    labels[:, :, 4:12, 4:12] = 1
    image = labels.float() + 0.1 * torch.randn(4, 1, 16, 16)
    first = None
    for _ in range(40):
        optimizer.zero_grad()
        value = criterion(net(image), labels)
        value.backward()
        optimizer.step()
        first = first if first is not None else float(value.detach())
    assert float(value.detach()) < first * 0.7


@pytest.mark.parametrize("schedule", ["poly", "cosine"])
def test_schedules_decay_to_near_zero(schedule):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    scheduler = build_schedule(optimizer, schedule, total_steps=10)
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(0.01) and all(a >= b for a, b in zip(rates, rates[1:]))
    assert optimizer.param_groups[0]["lr"] < 1e-3
