#!/usr/bin/env python
"""CPU inference: torch's instance norm against the same normalisation through ``group_norm``.

``medseg.models.networks.fast_cpu_norms`` swaps every affine instance norm of a model that
runs on a CPU for a :class:`~medseg.models.networks.ChannelNorm` (``GroupNorm`` with one group per
channel: the same numbers, the same weights). This script times forward passes of the
networks CPU plans build, both ways, in one run, and prints milliseconds per pass, the
ratio, and the largest difference of the outputs::

    .venv/bin/python benchmarks/cpu_norms.py            # the two CPU networks below
    .venv/bin/python benchmarks/cpu_norms.py --model RUN/model --batch 4

Networks: a 2D CPU plan's (8-256 filters, 6 levels) on 288 x 224 slices, 4 per pass (the
batch ``cpu_window_batch`` gives such slices), and a 3D CPU plan's (16-128, 4 levels) on
a 48 x 40 x 24 patch.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from medseg.config import Network
from medseg.models.networks import build_network, fast_cpu_norms

NETWORKS = {
    "2d": (
        Network(
            dimensions=2,
            filters=[8, 16, 32, 64, 128, 256],
            kernel_sizes=[[3, 3]] * 6,
            strides=[[1, 1]] + [[2, 2]] * 5,
            deep_supervision=False,
        ),
        (288, 224),
        4,
    ),
    "3d": (
        Network(
            dimensions=3,
            filters=[16, 32, 64, 128],
            kernel_sizes=[[3, 3, 3]] * 4,
            strides=[[1, 1, 1]] + [[2, 2, 2]] * 3,
            deep_supervision=False,
        ),
        (48, 40, 24),
        2,
    ),
}


def seconds_per_pass(model: torch.nn.Module, batch: torch.Tensor, repeats: int) -> float:
    """The median time of ``repeats`` forward passes after one warm-up."""
    times = []
    with torch.inference_mode():
        model(batch)
        for _ in range(repeats):
            started = time.perf_counter()
            model(batch)
            times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def compare(name: str, model: torch.nn.Module, shape: tuple[int, ...], batch_size: int, repeats: int) -> None:
    """Time ``model`` as built and with :func:`fast_cpu_norms`, and print both and their ratio."""
    model = model.eval()
    channels = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Conv3d)).in_channels
    batch = torch.randn(batch_size, channels, *shape, generator=torch.Generator().manual_seed(0))
    fast = fast_cpu_norms(copy.deepcopy(model))
    instance = seconds_per_pass(model, batch, repeats)
    group = seconds_per_pass(fast, batch, repeats)
    with torch.inference_mode():
        difference = float((model(batch) - fast(batch)).abs().max())
    print(
        f"{name:>4}: {' x '.join(map(str, shape))} x {batch_size}: instance_norm {instance * 1000:7.1f} ms, "
        f"group_norm {group * 1000:7.1f} ms, {instance / group:.2f}x faster; largest output difference {difference:.1e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a medseg model folder: time its network on its own patch")
    parser.add_argument("--batch", type=int, default=None, help="patches per pass (default: as listed above)")
    parser.add_argument("--repeats", type=int, default=7, help="timed passes per variant (default 7)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    if args.model:
        from medseg.config import load_pipeline

        pipeline = load_pipeline(args.model / "pipeline.yaml")
        model = build_network(
            pipeline.network, in_channels=len(pipeline.preprocessing.channels), out_channels=pipeline.num_classes
        )
        model.load_state_dict(torch.load(args.model / "model.pt", map_location="cpu", weights_only=True))
        patch = tuple(pipeline.training.patch_size)
        compare(f"{pipeline.network.dimensions}d", model, patch, args.batch or 4, args.repeats)
        return
    for name, (network, shape, batch_size) in NETWORKS.items():
        model = build_network(network, in_channels=1, out_channels=4)
        compare(name, model, shape, args.batch or batch_size, args.repeats)


if __name__ == "__main__":
    main()
