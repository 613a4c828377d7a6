"""U-Net topology from spacing and patch size: where to downsample, which kernels.

nnU-Net's rule (``get_pool_and_conv_props``): at each level, halve every axis
whose feature map stays at least ``min_edge`` voxels after halving and whose
spacing (at that level) is within 2x of the finest axis; an axis much coarser
than the finest is left alone until the others have caught up. Kernels are 3
along an axis once its spacing is within 2x of the finest, 1 before (a
thick-slice axis is not convolved across slices at full resolution).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from medseg.config.schema import Network
from medseg.errors import ConfigError


@dataclass(frozen=True)
class Topology:
    """Strides and kernel sizes per level (the first level's strides are all 1)."""

    strides: tuple[tuple[int, ...], ...]
    kernel_sizes: tuple[tuple[int, ...], ...]

    @property
    def levels(self) -> int:
        """Resolution levels, the full-resolution one included."""
        return len(self.strides)

    @property
    def pools_per_axis(self) -> tuple[int, ...]:
        """How many times each axis is halved on the way down."""
        return tuple(sum(stride[axis] > 1 for stride in self.strides) for axis in range(len(self.strides[0])))

    @property
    def divisor(self) -> tuple[int, ...]:
        """What a patch's size must be a multiple of, per axis (product of the strides)."""
        return tuple(math.prod(stride[axis] for stride in self.strides) for axis in range(len(self.strides[0])))


def plan_topology(
    spacing: Sequence[float], patch_size: Sequence[int], *, max_pools: int, min_edge: int = 4
) -> Topology:
    """Strides and kernels for a patch of ``patch_size`` voxels at ``spacing`` mm.

    Args:
        spacing: voxel spacing along the network's axes, in mm.
        patch_size: the patch the network sees, in voxels.
        max_pools: most halvings of any one axis.
        min_edge: smallest feature-map edge (voxels) an axis may be halved to.

    Raises:
        ConfigError: spacing and patch size differ in length, or hold non-positive values.
    """
    dims = len(spacing)
    if dims != len(patch_size) or dims not in (2, 3) or min(spacing) <= 0 or min(patch_size) < 1:
        raise ConfigError(f"cannot plan a U-Net for spacing {list(spacing)} and patch size {list(patch_size)}")
    current_spacing = [float(s) for s in spacing]
    current_size = [int(n) for n in patch_size]
    pools = [0] * dims
    kernel = [1] * dims
    strides: list[tuple[int, ...]] = [(1,) * dims]
    kernels: list[tuple[int, ...]] = []
    while True:
        finest = min(current_spacing)
        kernel = [3 if k == 3 or current_spacing[d] / finest < 2 else 1 for d, k in enumerate(kernel)]
        candidates = [d for d in range(dims) if current_size[d] >= 2 * min_edge and pools[d] < max_pools]
        if candidates:
            finest_candidate = min(current_spacing[d] for d in candidates)
            candidates = [d for d in candidates if current_spacing[d] / finest_candidate < 2]
        # A lone axis is only halved while it stays well above the minimum (nnU-Net: 3x min_edge).
        if not candidates or (len(candidates) == 1 and current_size[candidates[0]] < 3 * min_edge):
            break
        kernels.append(tuple(kernel))
        for d in candidates:
            pools[d] += 1
            current_spacing[d] *= 2
            current_size[d] = math.ceil(current_size[d] / 2)
        strides.append(tuple(2 if d in candidates else 1 for d in range(dims)))
    kernels.append((3,) * dims)  # the bottleneck
    return Topology(strides=tuple(strides), kernel_sizes=tuple(kernels))


def round_up(shape: Sequence[int], divisor: Sequence[int]) -> tuple[int, ...]:
    """Each size rounded up to a multiple of its divisor."""
    return tuple(int(math.ceil(n / d) * d) for n, d in zip(shape, divisor))


def check_patch(network: Network, patch_size: Sequence[int]) -> None:
    """Raise unless a DynUNet of ``network`` can take patches of ``patch_size`` (e.g. after hand edits).

    Raises:
        ConfigError: the patch is not a multiple of the strides' product along an
            axis, or a kernel is too small for its stride (DynUNet needs kernel >= stride - 1).
    """
    divisor = [math.prod(stride[axis] for stride in network.strides) for axis in range(network.dimensions)]
    if len(patch_size) != network.dimensions:
        raise ConfigError(f"training.patch_size {list(patch_size)} needs {network.dimensions} numbers")
    bad = [axis for axis in range(network.dimensions) if patch_size[axis] % divisor[axis]]
    if bad:
        raise ConfigError(
            f"training.patch_size {list(patch_size)} must be a multiple of the strides' product {divisor} "
            f"along every axis (not along {bad}); e.g. {list(round_up(patch_size, divisor))}"
        )
    for level, (kernel, stride) in enumerate(zip(network.kernel_sizes, network.strides)):
        if any(k < s - 1 for k, s in zip(kernel, stride)):
            raise ConfigError(f"network.kernel_sizes[{level}] {kernel} is too small for strides {stride}")
