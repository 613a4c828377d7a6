"""Time DynUNet training steps on the CPU: the numbers medseg.planning.compute is fitted to.

Run in a fresh process, one or more networks per run::

    python tests/planning/compute_probe.py '[{"patch": [64, 64, 32], "batch": 2, "in_channels": 1, "classes": 4,
        "heads": 2, "filters": [16, 32, 64, 128], "kernels": [[3, 3, 3], ...], "strides": [[1, 1, 1], ...]}]'

Each step is what :class:`medseg.training.loop.Trainer` does on the CPU: forward,
the deep-supervision Dice + cross-entropy loss, backward, gradient clipping and
an SGD step (Nesterov momentum), in float32 with deterministic algorithms. The
batch is random (data loading is not timed). After ``warmup`` steps, ``steps``
steps are timed; the median wall time per step and the process CPU time per
step are printed as JSON, one object per network. ``threads`` (default: torch's)
sets ``torch.set_num_threads``.

On a busy machine the wall time is inflated by other processes; the CPU time
per step divided by the threads is the better measure there (it slightly
overcounts the threads' spin-waiting).
"""

from __future__ import annotations

import json
import statistics
import sys
import time


def measure(config: dict) -> dict:
    """Build the network, run warm-up and timed steps, and report seconds per step."""
    import torch

    from medseg.config import Network
    from medseg.config.schema import Training
    from medseg.models.networks import build_network
    from medseg.training.objectives import build_loss

    torch.manual_seed(0)
    if config.get("threads"):
        torch.set_num_threads(int(config["threads"]))
    dims = len(config["patch"])
    heads = config["heads"]
    spec = Network(
        dimensions=dims,
        filters=config["filters"],
        kernel_sizes=config["kernels"],
        strides=config["strides"],
        deep_supervision=heads > 0,
        deep_supervision_heads=heads,
    )
    model = build_network(spec, in_channels=config["in_channels"], out_channels=config["classes"]).train()
    criterion = build_loss(Training(patch_size=config["patch"]), deep_supervision=heads > 0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.99, nesterov=True, weight_decay=3e-5)
    x = torch.randn(config["batch"], config["in_channels"], *config["patch"])
    y = torch.randint(0, config["classes"], (config["batch"], 1, *config["patch"]))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        out = model(x)
        loss = criterion(list(out.unbind(1)), y) if heads > 0 else criterion(out, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 12.0)
        optimizer.step()

    torch.use_deterministic_algorithms(True, warn_only=True)
    for _ in range(config.get("warmup", 2)):
        step()
    walls, cpu_start = [], time.process_time()
    for _ in range(config.get("steps", 5)):
        started = time.perf_counter()
        step()
        walls.append(time.perf_counter() - started)
    cpu = (time.process_time() - cpu_start) / len(walls)
    return {
        "wall_s": statistics.median(walls),
        "cpu_s": cpu,
        "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


if __name__ == "__main__":
    for item in json.loads(sys.argv[1]):
        print(json.dumps({**item, **measure(item)}), flush=True)
