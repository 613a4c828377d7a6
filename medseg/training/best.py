"""Best-epoch bookkeeping: which epoch's weights a run exports, and the validation figures that chose it.

An epoch is the best when its mean foreground validation Dice is at least the best so far (ties
go to the later epoch); with no validation cases every epoch counts as the best, so the last
weights are exported. The best epoch's weights are kept in memory for the session's export, and
the per-label Dice as predicted and with only the largest component kept, for the post-processing
chosen on validation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from medseg.training.state import load_checkpoint

#: Per label, the mean validation Dice as predicted, and with only the largest component kept.
ComponentDice = tuple[list[float], list[float]]


@dataclass
class BestEpoch:
    """The best epoch so far (0: none yet), its mean validation Dice and, from this session, its weights."""

    epoch: int = 0
    dice: float = math.nan
    component_dice: ComponentDice | None = None
    weights: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def consider(
        self, epoch: int, dice: float, *, validating: bool, validated: bool, component_dice: ComponentDice | None
    ) -> bool:
        """Whether ``epoch``, just finished with mean validation Dice ``dice``, is the best so far.

        Args:
            validating: the run has validation cases (without, every epoch is the best).
            validated: this epoch was validated (an epoch that was not cannot be the best).
            component_dice: this epoch's per-label Dice, kept when it is the best.
        """
        if not validating:
            self.epoch = epoch
            return True
        if not validated:
            return False
        best = -math.inf if math.isnan(self.dice) else self.dice
        if self.epoch == 0 or (not math.isnan(dice) and dice >= best):
            self.epoch, self.dice, self.component_dice = epoch, dice, component_dice
            return True
        return False

    def keep(self, state: dict[str, torch.Tensor]) -> None:
        """Keep a copy of the best epoch's weights (on the CPU) for the export."""
        self.weights = {name: tensor.detach().cpu().clone() for name, tensor in state.items()}

    def best_weights(self, checkpoint: Path, fallback: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The best epoch's weights: kept from this session, else read from ``checkpoint``, else ``fallback``."""
        if self.weights is not None:
            return self.weights
        if checkpoint.is_file():
            return load_checkpoint(checkpoint).model
        return fallback
