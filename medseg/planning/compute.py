"""How long one training step of a DynUNet takes on a CPU: a calibrated, documented formula.

On a CPU the binding constraint of a training run is compute, not memory: the
network nnU-Net's heuristics choose for a small CT takes seconds per step on two
cores. The planner (:mod:`medseg.planning.planner`) therefore sizes CPU networks
by the time of a step, estimated from two counts of one patch:

* ``MACs``, the multiply-accumulates of a forward pass (:func:`forward_macs`,
  exact for the DynUNet that :func:`medseg.models.networks.build_network` builds); the
  backward pass costs about twice the forward (gradients of the inputs and of the
  weights), so a step of ``B`` patches does ``3 B MACs``;
* feature-map units ``U`` (:func:`medseg.planning.memory.feature_map_units`),
  for the work whose cost is memory traffic rather than arithmetic: normalisation,
  activations, concatenation, the loss, and convolutions too narrow (8-16
  filters) to keep the arithmetic units busy;

and the estimate on ``T`` threads is

    seconds = (SECONDS_PER_GMAC * 3 B MACs / 1e9 + SECONDS_PER_GUNIT * B U / 1e9 + FIXED_SECONDS)
              / min(T, MAX_SCALING_THREADS)

Calibration (fp32, MONAI 1.6 DynUNet with instance norm, PyTorch 2.13 CPU build,
a 2-vCPU AMD EPYC VM): ``tests/planning/compute_probe.py`` timed whole training
steps as :class:`medseg.training.loop.Trainer` takes them (forward, deep
supervision Dice + cross-entropy, backward, gradient clipping, SGD with Nesterov
momentum, deterministic algorithms) on random batches, for sixteen networks, each
in two runs: 3D patches 32x32x16 to 96x96x48 with 8, 16 and 32 base filters,
batch 2-8, 0-2 heads, 4-14 classes, two anisotropic networks (3x3x1 kernels at
full resolution), and 2D 128x128 x8 and 256x256 x4. The machine was shared with
other jobs, so the measure is the process's CPU time per step on *one* thread
(wall time was inflated by up to 3x; CPU time repeated within about 6%). A
least-squares fit of the relative error gave 0.0169 s per GMAC, 115 s per G units
(0.12 us per voxel x filter) and 0.024 s fixed per step; the median error is 14%,
the rms 17%, and all estimates fall within 32% of their measurement but one
outlying measurement (47%). Networks of 16-32 filters run at 27-45 GMAC/s on one
thread here, 8-filter ones at 15-17 (their convolutions are too narrow).
On a 2-vCPU Intel Xeon VM the balance differs: relative to the 16-filter
reference network that :mod:`medseg.planning.calibrate` times, an 8-filter network
at 64x64x32 took 1.6-1.7x the formula's share (memory traffic costs more there), so
plans of narrow networks on such machines run somewhat slower than planned.

Threads: at an idle moment the same machine took a step of the 48x48x24,
16-filter network in 0.26 s on two threads against 0.58 s of CPU time on one,
so the time is divided by the threads; beyond :data:`MAX_SCALING_THREADS` (not
measured here) no further gain is assumed. On a machine whose cores are busy with
other processes, torch's threads wait for each other at every operation and a
step can take many times the estimate: one thread is then the better choice.
The patch sampler's time (data loading and augmentation: a few milliseconds per
batch of the phantom plan, on one thread) is not included.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from medseg.config.schema import Network, Pipeline
from medseg.errors import ConfigError
from medseg.planning.memory import feature_map_units

#: One-thread CPU seconds per 1e9 multiply-accumulates of a training step; fitted.
SECONDS_PER_GMAC = 0.0169
#: One-thread CPU seconds per 1e9 feature-map units (voxel x filter) of a training step; fitted.
SECONDS_PER_GUNIT = 115.0
#: One-thread CPU seconds of every step (optimiser bookkeeping, Python); fitted.
FIXED_SECONDS = 0.024
#: A forward and backward pass costs this many forward passes.
PASSES_PER_STEP = 3
#: Threads beyond this many are assumed to give no further speed-up.
MAX_SCALING_THREADS = 8


def level_voxels(patch_size: Sequence[int], strides: Sequence[Sequence[int]]) -> list[float]:
    """Voxels of the feature map at each level, for one patch."""
    shape = np.asarray(patch_size, dtype=np.float64)
    voxels = []
    for stride in strides:
        shape = shape / np.asarray(stride, dtype=np.float64)
        voxels.append(float(np.prod(shape)))
    return voxels


def forward_macs(network: Network, patch_size: Sequence[int], *, in_channels: int, num_classes: int) -> int:
    """Multiply-accumulates of one forward pass of one patch through the DynUNet of ``network``.

    Per level ``l`` with ``V_l`` voxels, ``f_l`` filters and kernel volume ``K_l``: the
    encoder's two convolutions, ``V_l (c_in + f_l) f_l K_l``; above the bottleneck, the
    decoder's transposed convolution ``V_l f_(l+1) f_l`` and its two convolutions (the
    first over the skip and the upsampled maps together) ``3 V_l f_l^2 K_(l+1)``; and
    the 1x1 output heads ``V_l f_l classes``.
    """
    filters, kernels = network.filters, network.kernel_sizes
    voxels = level_voxels(patch_size, network.strides)
    total = 0.0
    for level, width in enumerate(filters):
        before = in_channels if level == 0 else filters[level - 1]
        total += voxels[level] * (before + width) * width * math.prod(kernels[level])
    for level in range(len(filters) - 1):
        width = filters[level]
        total += voxels[level] * filters[level + 1] * width
        total += voxels[level] * 3 * width * width * math.prod(kernels[level + 1])
    heads = network.deep_supervision_heads if network.deep_supervision else 0
    total += sum(voxels[level] * filters[level] * num_classes for level in range(heads + 1))
    return round(total)


def step_gmacs(
    network: Network, patch_size: Sequence[int], *, batch_size: int, in_channels: int, num_classes: int
) -> float:
    """Billions of multiply-accumulates of one training step (forward and backward) of ``batch_size`` patches."""
    macs = forward_macs(network, patch_size, in_channels=in_channels, num_classes=num_classes)
    return PASSES_PER_STEP * batch_size * macs / 1e9


def estimate_step_seconds(
    network: Network,
    patch_size: Sequence[int],
    *,
    batch_size: int,
    in_channels: int,
    num_classes: int,
    threads: int,
) -> float:
    """Estimated wall time (s) of one fp32 training step on ``threads`` CPU threads, data loading excluded.

    Raises:
        ConfigError: ``threads`` is not a positive whole number.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be a positive whole number, got {threads!r}")
    gmacs = step_gmacs(network, patch_size, batch_size=batch_size, in_channels=in_channels, num_classes=num_classes)
    gunits = batch_size * feature_map_units(patch_size, network.strides, network.filters) / 1e9
    one_thread = SECONDS_PER_GMAC * gmacs + SECONDS_PER_GUNIT * gunits + FIXED_SECONDS
    return one_thread / min(threads, MAX_SCALING_THREADS)


def pipeline_step_seconds(pipeline: Pipeline, *, threads: int) -> float:
    """:func:`estimate_step_seconds` for a pipeline's network, patch and batch size."""
    return estimate_step_seconds(
        pipeline.network,
        pipeline.training.patch_size,
        batch_size=pipeline.training.batch_size,
        in_channels=len(pipeline.preprocessing.channels),
        num_classes=pipeline.num_classes,
        threads=threads,
    )
