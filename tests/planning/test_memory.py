"""The memory formula: parameter count, its shape, and (slow) a fresh measurement against it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from medseg.config import Network
from medseg.planning import estimate_memory_gb
from medseg.planning.memory import (
    BYTES_PER_OUTPUT,
    BYTES_PER_UNIT,
    GIB,
    count_parameters,
    feature_map_units,
)

ANISOTROPIC = Network(
    dimensions=3,
    filters=[32, 64, 128, 256, 320, 320],
    kernel_sizes=[[3, 3, 1], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
    strides=[[1, 1, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1], [2, 2, 1]],
    deep_supervision_heads=2,
)
FLAT = Network(
    dimensions=2,
    filters=[16, 32, 64, 128],
    kernel_sizes=[[3, 3]] * 4,
    strides=[[1, 1], [2, 2], [2, 2], [2, 2]],
    deep_supervision=True,
    deep_supervision_heads=1,
)


@pytest.mark.parametrize(("network", "in_channels", "classes"), [(ANISOTROPIC, 1, 4), (FLAT, 3, 14)])
def test_parameter_count_is_that_of_the_built_network(network, in_channels, classes):
    from medseg.models.networks import build_network

    built = build_network(network, in_channels=in_channels, out_channels=classes)
    expected = sum(p.numel() for p in built.parameters())
    assert count_parameters(network, in_channels=in_channels, num_classes=classes) == expected


def test_feature_map_units():
    # 16x16 x16 filters + 8x8 x32 + 4x4 x64 + 2x2 x128
    assert feature_map_units([16, 16], FLAT.strides, FLAT.filters) == 256 * 16 + 64 * 32 + 16 * 64 + 4 * 128


def test_estimate_is_linear_in_batch_and_grows_with_the_patch():
    def estimate(patch, batch):
        return estimate_memory_gb(ANISOTROPIC, patch, batch_size=batch, in_channels=1, num_classes=4)

    one, two, three = (estimate([160, 160, 24], b) for b in (1, 2, 3))
    assert two - one == pytest.approx(three - two)
    per_patch = (
        BYTES_PER_UNIT * feature_map_units([160, 160, 24], ANISOTROPIC.strides, ANISOTROPIC.filters)
        + BYTES_PER_OUTPUT * 160 * 160 * 24 * 4 * 3
    ) / GIB
    assert two - one == pytest.approx(per_patch)
    assert estimate([192, 192, 24], 2) > two
    # Measured on CPU: the step grew a 0.47 GiB process (with the weights) by 1.67 GiB; SGD momentum adds 0.11.
    assert 2.25 * 0.9 < one < 2.25 * 1.1


@pytest.mark.slow
def test_a_fresh_measurement_agrees_with_the_formula():
    """One forward + backward pass of a real DynUNet on CPU, in a fresh process, within 15% of the estimate."""
    network = Network(
        dimensions=3,
        filters=[32, 64, 128, 256, 320],
        kernel_sizes=[[3, 3, 3]] * 5,
        strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 1]],
        deep_supervision_heads=2,
    )
    patch, batch, classes = [64, 64, 32], 2, 4
    config = {
        "patch": patch,
        "batch": batch,
        "in_channels": 1,
        "classes": classes,
        "heads": 2,
        "filters": network.filters,
        "kernels": network.kernel_sizes,
        "strides": network.strides,
    }
    probe = Path(__file__).with_name("memory_probe.py")
    result = subprocess.run(
        [sys.executable, str(probe), json.dumps(config)], capture_output=True, text=True, timeout=300, check=True
    )
    measured = json.loads(result.stdout)
    parameters = count_parameters(network, in_channels=1, num_classes=classes)
    assert measured["parameters"] == parameters
    # The step's share of the estimate: activations and outputs, plus the weights' gradients (fp32).
    units = feature_map_units(patch, network.strides, network.filters)
    predicted = batch * (BYTES_PER_UNIT * units + BYTES_PER_OUTPUT * 64 * 64 * 32 * classes * 3) + 4 * parameters
    assert measured["growth_bytes"] == pytest.approx(predicted, rel=0.15)
