"""Losses, optimisers and learning-rate schedules, chosen by name from a pipeline."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable

import torch
from monai.losses import DeepSupervisionLoss, DiceCELoss, DiceLoss

from medseg.config.schema import Optimizer, Training
from medseg.errors import ConfigError


def build_loss(training: Training, *, deep_supervision: bool) -> torch.nn.Module:
    """Dice + cross-entropy (default) or plain Dice on softmax outputs against integer labels.

    With deep supervision the loss takes the network's stacked outputs and
    weights lower resolutions less (1, 1/2, 1/4, ...), as nnU-Net does.
    """
    common = {"to_onehot_y": True, "softmax": True, "include_background": False, "smooth_nr": 1e-5, "smooth_dr": 1e-5}
    loss: torch.nn.Module = DiceCELoss(**common) if training.loss == "dice_ce" else DiceLoss(**common, batch=True)
    if deep_supervision:
        loss = DeepSupervisionLoss(loss, weight_mode="exp")
    return loss


def build_optimizer(parameters: Iterable[torch.nn.Parameter], settings: Optimizer) -> torch.optim.Optimizer:
    """SGD with (Nesterov) momentum, or AdamW."""
    if settings.name == "sgd":
        return torch.optim.SGD(
            parameters,
            lr=settings.learning_rate,
            momentum=settings.momentum,
            nesterov=settings.nesterov and settings.momentum > 0,
            weight_decay=settings.weight_decay,
        )
    return torch.optim.AdamW(parameters, lr=settings.learning_rate, weight_decay=settings.weight_decay)


def build_schedule(
    optimizer: torch.optim.Optimizer, schedule: str, *, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """``poly`` (lr x (1 - t/T)^0.9, nnU-Net's) or ``cosine`` annealing to zero, stepped once per epoch.

    The rate is a closed form of the step count alone (see :func:`schedule_factor`), so a
    schedule restored from a checkpoint with a different ``total_steps`` (a run extended
    on resume) follows the new curve from where it is.
    """
    if schedule not in ("poly", "cosine"):
        raise ConfigError(f"training.schedule: unknown {schedule!r}; known: poly, cosine")
    if total_steps < 1:
        raise ConfigError(f"a schedule needs at least one step, got {total_steps}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(schedule_factor, schedule, total_steps))


def schedule_factor(schedule: str, total_steps: int, step: int) -> float:
    """The fraction of the initial learning rate used at ``step`` (0-based) of ``total_steps``."""
    return schedule_at(schedule, min(step, total_steps) / total_steps)


def schedule_at(schedule: str, progress: float) -> float:
    """The fraction of the initial learning rate used ``progress`` (0 to 1) of the way through training."""
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "poly":
        return (1.0 - progress) ** 0.9
    return 0.5 * (1.0 + math.cos(math.pi * progress))
