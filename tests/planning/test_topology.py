"""U-Net topology: where to halve, which kernels, and patch checks."""

from __future__ import annotations

import pytest

from medseg.config import Network
from medseg.errors import ConfigError
from medseg.planning import check_patch, plan_topology
from medseg.planning.topology import round_up


def test_isotropic_patch_is_halved_down_to_four_voxels():
    topology = plan_topology((1.0, 1.0, 1.0), (128, 128, 128), max_pools=5)
    assert topology.strides == ((1, 1, 1),) + ((2, 2, 2),) * 5
    assert topology.kernel_sizes == ((3, 3, 3),) * 6
    assert topology.pools_per_axis == (5, 5, 5) and topology.divisor == (32, 32, 32) and topology.levels == 6


def test_feature_maps_stay_at_least_four_voxels():
    topology = plan_topology((1.0, 1.0, 1.0), (192, 96, 24), max_pools=5)
    assert topology.pools_per_axis == (5, 4, 2)  # 192 -> 6, 96 -> 6, 24 -> 6
    assert topology.strides[-1] == (2, 1, 1)
    # An axis halved alone must stay well above the minimum (>= 12 before halving, nnU-Net's rule): 160 stops at 10.
    assert plan_topology((1.0, 1.0, 1.0), (160, 96, 24), max_pools=5).pools_per_axis == (4, 4, 2)


def test_max_pools_caps_the_halvings():
    assert plan_topology((1.0, 1.0), (1024, 1024), max_pools=7).pools_per_axis == (7, 7)
    assert plan_topology((1.0, 1.0), (1024, 1024), max_pools=4).levels == 5


def test_thick_slices_wait_until_the_other_axes_catch_up():
    """0.7 x 0.7 x 3.5 mm: k is 5x coarser, so i and j are halved twice before k joins (1.4, 2.8 -> within 2x)."""
    topology = plan_topology((0.7, 0.7, 3.5), (256, 256, 32), max_pools=5)
    assert topology.strides[:4] == ((1, 1, 1), (2, 2, 1), (2, 2, 1), (2, 2, 2))
    # Kernels: 1 along k while its spacing is >= 2x the finest (3.5 vs 0.7, then 1.4), 3 from 2.8 mm on.
    assert topology.kernel_sizes[:3] == ((3, 3, 1), (3, 3, 1), (3, 3, 3))
    assert topology.kernel_sizes[-1] == (3, 3, 3)
    assert all(k[2] == 3 for k, s in zip(topology.kernel_sizes, topology.strides) if s[2] == 2)


def test_bad_input_is_refused():
    with pytest.raises(ConfigError, match="cannot plan"):
        plan_topology((1.0, 1.0, 1.0), (64, 64), max_pools=5)
    with pytest.raises(ConfigError, match="cannot plan"):
        plan_topology((0.0, 1.0, 1.0), (64, 64, 64), max_pools=5)


def test_round_up():
    assert round_up((100, 64, 7), (32, 32, 4)) == (128, 64, 8)


def _network(strides, kernels) -> Network:
    return Network(dimensions=3, filters=[8, 16, 32], kernel_sizes=kernels, strides=strides, deep_supervision=False)


def test_check_patch_names_the_axis_and_a_fix():
    network = _network([[1, 1, 1], [2, 2, 1], [2, 2, 2]], [[3, 3, 1], [3, 3, 3], [3, 3, 3]])
    check_patch(network, [64, 32, 6])
    with pytest.raises(
        ConfigError, match=r"multiple of the strides' product \[4, 4, 2\] .*not along \[0, 2\].*\[68, 32, 6\]"
    ):
        check_patch(network, [66, 32, 5])
    with pytest.raises(ConfigError, match="needs 3 numbers"):
        check_patch(network, [64, 32])


def test_check_patch_refuses_kernels_smaller_than_dynunet_allows():
    network = _network([[1, 1, 1], [2, 2, 3], [2, 2, 1]], [[3, 3, 1], [3, 3, 1], [3, 3, 3]])
    with pytest.raises(ConfigError, match=r"kernel_sizes\[1\] \[3, 3, 1\] is too small for strides \[2, 2, 3\]"):
        check_patch(network, [16, 16, 3])
