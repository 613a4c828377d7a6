"""Networks built from the shipped pipelines run, and learn."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medseg.config import Network, load_pipeline
from medseg.errors import ConfigError
from medseg.models.networks import ChannelNorm, build_network, fast_cpu_norms, patch_divisor

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


def _small(dimensions: int, deep_supervision: bool = True) -> Network:
    return Network(
        dimensions=dimensions,
        filters=[4, 8, 16],
        kernel_sizes=[[3] * dimensions] * 3,
        strides=[[1] * dimensions, [2] * dimensions, [2] * dimensions],
        deep_supervision=deep_supervision,
        deep_supervision_heads=1,
    )


@pytest.mark.parametrize("dimensions", [2, 3])
def test_small_unet_shapes_in_train_and_eval(dimensions):
    net = build_network(_small(dimensions), in_channels=2, out_channels=4)
    x = torch.zeros(2, 2, *([16] * dimensions))
    net.train()
    assert net(x).shape == (2, 2, 4, *([16] * dimensions))  # full resolution + one supervised head
    net.eval()
    with torch.no_grad():
        assert net(x).shape == (2, 4, *([16] * dimensions))


@pytest.mark.parametrize("name", ["ct-3d", "mr-3d", "ct-2d"])
def test_shipped_pipelines_build(name):
    pipeline = load_pipeline(PIPELINES / f"{name}.yaml")
    net = build_network(pipeline.network, in_channels=len(pipeline.preprocessing.channels), out_channels=pipeline.num_classes)
    assert sum(p.numel() for p in net.parameters()) > 1e6
    divisor = patch_divisor(pipeline.network)
    assert all(size % d == 0 for size, d in zip(pipeline.training.patch_size, divisor))


def test_unknown_architecture_is_a_config_error():
    network = _small(3).model_copy(update={"architecture": "transformer"})
    with pytest.raises(ConfigError, match="transformer"):
        build_network(network, in_channels=1, out_channels=2)


@pytest.mark.parametrize("dimensions", [2, 3])
def test_cpu_norms_give_the_instance_norms_numbers_with_the_same_weights(dimensions):
    torch.manual_seed(0)
    net = build_network(_small(dimensions), in_channels=1, out_channels=3).eval()
    for module in net.modules():  # trained-looking affine parameters
        if isinstance(module, torch.nn.modules.instancenorm._InstanceNorm):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    image = torch.randn(2, 1, *([32] * dimensions)) * 50 + 20
    with torch.inference_mode():
        expected = net(image)
    keys = net.state_dict().keys()
    fast = fast_cpu_norms(net)
    assert fast is net and not any(isinstance(m, torch.nn.modules.instancenorm._InstanceNorm) for m in net.modules())
    assert sum(isinstance(m, ChannelNorm) for m in net.modules()) > 0
    assert net.state_dict().keys() == keys  # weights saved before load after, and the other way round
    with torch.inference_mode():
        torch.testing.assert_close(net(image), expected, rtol=1e-4, atol=1e-4)
