"""The compute formula: exact multiply-accumulates, its shape, and (slow) a fresh timing against it."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from medseg.config import Network
from medseg.errors import ConfigError
from medseg.planning import estimate_step_seconds, forward_macs
from medseg.planning.compute import (
    FIXED_SECONDS,
    MAX_SCALING_THREADS,
    SECONDS_PER_GMAC,
    SECONDS_PER_GUNIT,
    step_gmacs,
)
from medseg.planning.memory import feature_map_units

ANISOTROPIC = Network(
    dimensions=3,
    filters=[16, 32, 64, 128],
    kernel_sizes=[[3, 3, 1], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
    strides=[[1, 1, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2]],
    deep_supervision_heads=1,
)
FLAT = Network(
    dimensions=2,
    filters=[8, 16, 32, 64],
    kernel_sizes=[[3, 3]] * 4,
    strides=[[1, 1], [2, 2], [2, 2], [2, 2]],
    deep_supervision=False,
    deep_supervision_heads=0,
)
ISOTROPIC = Network(
    dimensions=3,
    filters=[8, 16, 32],
    kernel_sizes=[[3, 3, 3]] * 3,
    strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]],
    deep_supervision_heads=1,
)


def _counted_macs(network: Network, patch: list[int], in_channels: int, classes: int) -> int:
    """Multiply-accumulates of every (transposed) convolution of the built network, counted by hooks."""
    torch = pytest.importorskip("torch")
    from medseg.models.networks import build_network

    model = build_network(network, in_channels=in_channels, out_channels=classes).train()
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Conv3d)):
            total += output.numel() * module.in_channels // module.groups * math.prod(module.kernel_size)
        elif isinstance(module, (torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)):
            total += inputs[0].numel() * module.out_channels * math.prod(module.kernel_size)

    for module in model.modules():
        module.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(1, in_channels, *patch))
    return total


@pytest.mark.parametrize(
    ("network", "patch", "in_channels", "classes"),
    [(ANISOTROPIC, [32, 24, 16], 1, 4), (FLAT, [48, 40], 3, 14), (ISOTROPIC, [16, 24, 8], 2, 3)],
)
def test_macs_are_those_of_the_built_network(network, patch, in_channels, classes):
    expected = _counted_macs(network, patch, in_channels, classes)
    assert forward_macs(network, patch, in_channels=in_channels, num_classes=classes) == expected


def test_a_step_is_three_passes_per_patch():
    one = forward_macs(ISOTROPIC, [32, 32, 16], in_channels=1, num_classes=4)
    assert step_gmacs(ISOTROPIC, [32, 32, 16], batch_size=4, in_channels=1, num_classes=4) == pytest.approx(
        12 * one / 1e9
    )


def test_estimate_follows_the_formula_and_its_threads():
    def estimate(batch: int, threads: int = 1) -> float:
        return estimate_step_seconds(
            ANISOTROPIC, [64, 64, 16], batch_size=batch, in_channels=1, num_classes=4, threads=threads
        )

    units = feature_map_units([64, 64, 16], ANISOTROPIC.strides, ANISOTROPIC.filters)
    per_patch = 3 * SECONDS_PER_GMAC * forward_macs(ANISOTROPIC, [64, 64, 16], in_channels=1, num_classes=4) / 1e9
    per_patch += SECONDS_PER_GUNIT * units / 1e9
    assert estimate(0) == pytest.approx(FIXED_SECONDS)
    assert estimate(3) - estimate(2) == pytest.approx(per_patch)
    assert estimate(2, threads=2) == pytest.approx(estimate(2) / 2)
    assert estimate(2, threads=64) == pytest.approx(estimate(2) / MAX_SCALING_THREADS)


def test_estimate_is_near_a_calibration_measurement():
    """The 48 x 48 x 24 network of the calibration took 0.56-0.64 s of one thread's CPU time per step of 2."""
    network = Network(
        dimensions=3,
        filters=[16, 32, 64, 128],
        kernel_sizes=[[3, 3, 3]] * 4,
        strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1]],
        deep_supervision_heads=2,
    )
    seconds = estimate_step_seconds(network, [48, 48, 24], batch_size=2, in_channels=1, num_classes=4, threads=1)
    assert 0.56 * 0.9 < seconds < 0.64 * 1.1


@pytest.mark.parametrize("threads", [0, -1, 1.5, True])
def test_bad_thread_counts_are_refused(threads):
    with pytest.raises(ConfigError, match="threads"):
        estimate_step_seconds(ISOTROPIC, [16, 16, 16], batch_size=2, in_channels=1, num_classes=2, threads=threads)


@pytest.mark.slow
def test_a_fresh_timing_agrees_with_the_formula():
    """Training steps of two real DynUNets on one CPU thread, in a fresh process.

    Machines differ in speed (the formula's calibration machine and this project's CI
    machines differ by about 2x), which training reports at run time; what the formula
    must get right is how the time grows with the network and the patch. The balance of
    arithmetic and memory traffic differs between CPUs too: on the 2-vCPU AMD EPYC VM the
    formula was fitted on, the measured ratio of these two networks (8 filters at full
    resolution against the 16-filter reference) is within 35% of the predicted one; on a
    2-vCPU Intel Xeon VM the narrow network is 1.6-1.7x slower than predicted relative to
    the reference (2x with other processes running). So the ratio must hold within a
    factor of 2.5, and each estimate within 4x of its measurement: this project's VMs run
    1.7-2.4x slower than the formula's machine when idle, and under the host's load the
    CPU time of a step grew past 3x once (a full-suite run that took 804 s instead of 480).
    """
    from medseg.planning.calibrate import REFERENCE as reference  # the network `medseg plan` times

    other = Network(
        dimensions=3,
        filters=[8, 16, 32, 64],
        kernel_sizes=[[3, 3, 3]] * 4,
        strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
        deep_supervision_heads=1,
    )
    cases = [(reference, [48, 40, 20], 4), (other, [64, 64, 32], 3)]
    configs = [
        {
            "patch": patch,
            "batch": 2,
            "in_channels": 1,
            "classes": classes,
            "heads": network.deep_supervision_heads,
            "filters": network.filters,
            "kernels": network.kernel_sizes,
            "strides": network.strides,
            "threads": 1,
            "warmup": 2,
            "steps": 5,
        }
        for network, patch, classes in cases
    ]
    probe = Path(__file__).with_name("compute_probe.py")
    result = subprocess.run(
        [sys.executable, str(probe), json.dumps(configs)], capture_output=True, text=True, timeout=300, check=True
    )
    # CPU time, not wall time: other processes on a shared machine do not count against it.
    measured = [json.loads(line)["cpu_s"] for line in result.stdout.splitlines()[-2:]]
    predicted = [
        estimate_step_seconds(network, patch, batch_size=2, in_channels=1, num_classes=classes, threads=1)
        for network, patch, classes in cases
    ]
    ratio_error = (measured[1] / measured[0]) / (predicted[1] / predicted[0])
    assert 0.5 < ratio_error < 2.5, (measured, predicted)
    assert all(p / 4 < m < 4 * p for m, p in zip(measured, predicted)), (measured, predicted)
