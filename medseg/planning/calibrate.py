"""How fast this machine trains, against the machine :mod:`medseg.planning.compute` was fitted on.

CPUs differ: the formula's calibration machine and this project's CI machines, both
2-vCPU AMD EPYC VMs, differ by 2-2.7x for the same training step. A plan made with
the formula alone gives a patch whose real step takes that much longer, so a
time-limited run takes that many times fewer steps (a 168 x 168 x 68 CT: 842 steps in
10 minutes instead of about 2,000, validation Dice 0.50 instead of 0.87).
:func:`measure_cpu_speed` times a few training steps of a reference network, as the
trainer takes them, on the threads training will use, and returns the ratio of the
measured time to the formula's; :func:`medseg.planning.plan_pipeline` multiplies its
estimates by it (``cpu_speed``). It takes a few seconds; the result is rounded to one
decimal, so that plans made on one machine agree, and written into the plan.
"""

from __future__ import annotations

import statistics
import time

from medseg.config.schema import Network
from medseg.planning.compute import estimate_step_seconds

#: The reference network and patch (a typical CPU plan): 16-128 filters, 48 x 40 x 20, batch 2, 4 classes.
REFERENCE = Network(
    dimensions=3,
    filters=[16, 32, 64, 128],
    kernel_sizes=[[3, 3, 3]] * 4,
    strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1]],
    deep_supervision_heads=2,
)
REFERENCE_PATCH = (48, 40, 20)
REFERENCE_BATCH = 2
REFERENCE_CLASSES = 4
#: Steps run before timing, and steps timed (the median counts).
WARMUP_STEPS = 2
TIMED_STEPS = 5


def measure_cpu_speed(threads: int) -> float:
    """This machine's training-step time over the formula's, on ``threads`` threads (>1: slower).

    Runs :data:`WARMUP_STEPS` + :data:`TIMED_STEPS` steps (forward, deep-supervision Dice +
    cross-entropy, backward, clipping, SGD; deterministic algorithms, as training on a CPU)
    of the reference network on random data, about 3-10 s. Torch's thread count and
    determinism setting are restored afterwards.
    """
    import torch
    from monai.losses import DiceCELoss

    from medseg.models.networks import build_network  # MONAI: loaded when a network is built

    previous_threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True, warn_only=True)
        generator = torch.Generator().manual_seed(0)
        model = build_network(REFERENCE, in_channels=1, out_channels=REFERENCE_CLASSES).train()
        loss = DiceCELoss(to_onehot_y=True, softmax=True)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.99, nesterov=True)
        image = torch.randn(REFERENCE_BATCH, 1, *REFERENCE_PATCH, generator=generator)
        label = torch.randint(0, REFERENCE_CLASSES, (REFERENCE_BATCH, 1, *REFERENCE_PATCH), generator=generator)
        times = []
        for step in range(WARMUP_STEPS + TIMED_STEPS):
            started = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            heads = model(image).unbind(1)
            total = sum(loss(head, label) / 2**level for level, head in enumerate(heads))
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 12.0)
            optimizer.step()
            if step >= WARMUP_STEPS:
                times.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    estimate = estimate_step_seconds(
        REFERENCE,
        REFERENCE_PATCH,
        batch_size=REFERENCE_BATCH,
        in_channels=1,
        num_classes=REFERENCE_CLASSES,
        threads=threads,
    )
    return max(0.1, round(statistics.median(times) / estimate, 1))
