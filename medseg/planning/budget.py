"""What a training step may cost, and the rules that follow from it: filters, optimiser, epochs.

On a GPU the budget is memory (nnU-Net's heuristics). On a CPU it is also time: a training
step's estimated time (:mod:`medseg.planning.compute`) on the given threads must stay within
:data:`CPU_STEP_SECONDS`, so the network is narrower (:data:`CPU_BASE_FILTERS`, capped lower),
the optimiser is AdamW (a CPU run takes thousands of steps, not nnU-Net's 250,000), and the
epochs are those of a night's run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from medseg.config.schema import Network, Optimizer
from medseg.planning.compute import estimate_step_seconds

#: Filters of the first level; doubled per level up to the cap (nnU-Net's numbers).
BASE_FILTERS = 32
MAX_FILTERS = {2: 512, 3: 320}
#: Batch size at least 2; at most what covers 5% of the dataset's voxels (against overfitting).
MIN_BATCH = 2
MAX_DATASET_FRACTION = 0.05
#: nnU-Net's training budget.
DEFAULT_EPOCHS = 1000
ITERATIONS_PER_EPOCH = 250
#: On a CPU, shorter epochs: a time-limited run of minutes then still anneals its learning rate
#: in fine steps, may validate between epochs, and loses less to an interruption.
CPU_ITERATIONS_PER_EPOCH = 100
#: On a CPU: filters of the first level, and their cap. 3D: 16, a quarter of the work per voxel of
#: nnU-Net's 32. 2D: 8, because every level of a 2D U-Net costs about as much as the first (the
#: feature map shrinks 4x per level, the filters' square grows 4x): at 16 a 2D network took 1.8 us
#: per voxel at inference on two cores, 4.7x the MONAI recipe's 3D UNet (whose first convolution
#: already strides); at 8, 0.6-0.7 us (2026-12-03, this project's 2-vCPU machine).
CPU_BASE_FILTERS = {2: 8, 3: 16}
CPU_MAX_FILTERS = {2: 256, 3: 128}
#: On a CPU: the estimated time of one training step (s, data loading excluded) the network and patch must fit,
#: so that a 10-minute run takes about two thousand steps.
CPU_STEP_SECONDS = 0.25
#: On a CPU: AdamW's learning rate (nnU-Net's SGD needs far more steps than a CPU run takes).
CPU_LEARNING_RATE = 1e-3
#: On a CPU: the epochs planned are those that take about this long at the estimated step time.
CPU_TRAINING_HOURS = 8.0

Device = Literal["cuda", "cpu"]


@dataclass(frozen=True)
class Budget:
    """What a training step may cost: memory always; on a CPU, also time on ``threads`` threads."""

    memory_gb: float
    device: Device
    threads: int
    speed: float = 1.0  # this machine's step time over the formula's (medseg.planning.calibrate)

    @property
    def on_cpu(self) -> bool:
        return self.device == "cpu"

    def base_filters(self, dims: int) -> int:
        return CPU_BASE_FILTERS[dims] if self.on_cpu else BASE_FILTERS

    @property
    def iterations_per_epoch(self) -> int:
        return CPU_ITERATIONS_PER_EPOCH if self.on_cpu else ITERATIONS_PER_EPOCH

    def max_filters(self, dims: int) -> int:
        return (CPU_MAX_FILTERS if self.on_cpu else MAX_FILTERS)[dims]

    @property
    def where(self) -> str:
        return f"{self.threads} CPU thread{'s' if self.threads > 1 else ''}"

    def seconds(self, network: Network, patch: Sequence[int], batch: int, in_channels: int, classes: int) -> float:
        """The step time on this machine: the formula's, times the measured speed."""
        estimate = estimate_step_seconds(
            network, patch, batch_size=batch, in_channels=in_channels, num_classes=classes, threads=self.threads
        )
        return self.speed * estimate


def describe_budget(budget: Budget) -> str:
    """What the plan is for, in words: ``"8 GiB"``, or the CPU, its threads and step budget."""
    if budget.on_cpu:
        speed = f", {budget.speed:g}x the reference step time" if budget.speed != 1.0 else ""
        return f"a CPU ({budget.where}{speed}, {CPU_STEP_SECONDS:g} s per step) and {budget.memory_gb:g} GiB"
    return f"{budget.memory_gb:g} GiB"


def choose_optimizer(budget: Budget) -> tuple[Optimizer, str]:
    """nnU-Net's SGD on a GPU; AdamW on a CPU, where a run is hundreds to a few thousand steps."""
    if not budget.on_cpu:
        sgd = Optimizer(name="sgd", learning_rate=0.01, weight_decay=3e-5, momentum=0.99, nesterov=True)
        return sgd, "nnU-Net's: SGD, Nesterov momentum 0.99, learning rate 0.01 decayed by 'poly'"
    adamw = Optimizer(name="adamw", learning_rate=CPU_LEARNING_RATE, weight_decay=3e-5)
    return adamw, (
        f"planned for a CPU: AdamW, learning rate {CPU_LEARNING_RATE:g} decayed by 'poly'. nnU-Net's SGD (momentum "
        f"0.99) is tuned for 250,000 steps; a CPU run takes hundreds to a few thousand, where AdamW learns much "
        f"faster (a 168 x 168 x 68 CT, 4 CPU minutes: validation Dice 0.73 against SGD's 0.50 after 10)"
    )


def choose_epochs(epochs: int | None, step: float | None, batch: int, budget: Budget) -> tuple[int, str]:
    """The epochs to train, and why: as requested, nnU-Net's 1000, or on a CPU about a night's run.

    Args:
        step: on a CPU, the estimated seconds of a training step at ``batch``.
    """
    if epochs is not None:
        reason = "as requested"
    elif not budget.on_cpu:
        epochs, reason = DEFAULT_EPOCHS, "nnU-Net's budget"
    else:
        if step is None:
            raise ValueError("a CPU budget plans its epochs from the step time")
        epoch_hours = budget.iterations_per_epoch * step / 3600
        nnunet_steps = DEFAULT_EPOCHS * ITERATIONS_PER_EPOCH
        most = nnunet_steps // budget.iterations_per_epoch
        epochs = max(1, min(most, round(CPU_TRAINING_HOURS / epoch_hours)))
        reason = (
            f"planned for a CPU: about {epochs * epoch_hours:.1f} h at the estimated {step:.2f} s per step "
            f"(nnU-Net's {nnunet_steps:,} steps would take {nnunet_steps * step / 3600:.0f} h); "
            f"`medseg train --time-limit` stops sooner and exports the best epoch"
        )
    return epochs, (
        f"{reason}: {epochs} epochs x {budget.iterations_per_epoch} iterations = "
        f"{epochs * budget.iterations_per_epoch:,} steps of {batch} patches"
    )
