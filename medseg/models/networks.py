"""Networks, built from a pipeline's ``network`` section through a registry (no import strings)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.networks.nets import DynUNet

from medseg.config.schema import Network
from medseg.errors import ConfigError

Builder = Callable[[Network, int, int], torch.nn.Module]


def _dynunet(network: Network, in_channels: int, out_channels: int) -> torch.nn.Module:
    return DynUNet(
        spatial_dims=network.dimensions,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=network.kernel_sizes,
        strides=network.strides,
        upsample_kernel_size=network.strides[1:],
        filters=network.filters,
        norm_name=("INSTANCE", {"affine": True}) if network.norm == "instance" else ("BATCH", {"affine": True}),
        deep_supervision=network.deep_supervision and network.deep_supervision_heads > 0,
        deep_supr_num=max(1, network.deep_supervision_heads),
        res_block=False,
    )


ARCHITECTURES: dict[str, Builder] = {"dynunet": _dynunet}


def build_network(network: Network, *, in_channels: int, out_channels: int) -> torch.nn.Module:
    """The U-Net a pipeline describes, with ``out_channels`` classes (background included).

    In training mode a deep-supervised DynUNet returns ``(B, heads + 1, classes, *spatial)``;
    in eval mode only the full-resolution output.

    Raises:
        ConfigError: an architecture name without a builder.
    """
    try:
        builder = ARCHITECTURES[network.architecture]
    except KeyError:
        raise ConfigError(
            f"network.architecture: unknown {network.architecture!r}; known: {', '.join(ARCHITECTURES)}"
        ) from None
    return builder(network, in_channels, out_channels)


def patch_divisor(network: Network) -> tuple[int, ...]:
    """Per axis, the number every patch size must be a multiple of (product of the strides)."""
    divisor = [1] * network.dimensions
    for stride in network.strides:
        divisor = [d * s for d, s in zip(divisor, stride)]
    return tuple(divisor)


class ChannelNorm(torch.nn.GroupNorm):
    """Instance normalisation computed by torch's ``group_norm`` kernel, one group per channel.

    The same numbers as ``InstanceNormNd(affine=True)`` (to float rounding) with the same
    parameters (``weight``, ``bias``), so weights load either way. On a CPU a 2D CPU
    plan's network runs 7-9% faster with it, a 3D one 4% slower (``benchmarks/cpu_norms.py``).
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__(num_groups=channels, num_channels=channels, eps=eps, affine=True)


def fast_cpu_norms(model: torch.nn.Module) -> torch.nn.Module:
    """Replace, in place, every affine instance norm without running statistics by a :class:`ChannelNorm`.

    Meant for a model that runs on a CPU (inference); the parameters are shared, not copied.
    """
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if (
                isinstance(child, torch.nn.modules.instancenorm._InstanceNorm)
                and child.affine
                and not child.track_running_stats
            ):
                norm = ChannelNorm(child.num_features, eps=child.eps)
                norm.weight, norm.bias = child.weight, child.bias
                setattr(parent, name, norm.to(child.weight.device))
    return model
