"""The grid, patch, network and batch a budget allows: nnU-Net's search, with context before resolution.

:func:`choose_resolution` fits the largest patch (:func:`fit_patch`: memory, and on a CPU the
step's time) at full resolution, and where that patch would see too little of the median image
coarsens the spacing until it sees enough (:mod:`medseg.planning.context`);
:func:`choose_batch_size` then fills the budget with patches.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medseg.config.schema import Network
from medseg.errors import ConfigError
from medseg.planning.budget import CPU_STEP_SECONDS, MAX_DATASET_FRACTION, MIN_BATCH, Budget, describe_budget
from medseg.planning.context import (
    COARSENING_STEP,
    CPU_CONTEXT_SHARE,
    GPU_CONTEXT_SHARE,
    MAX_COARSENING,
    MIN_LABEL_VOXELS,
    Coverage,
    coarser_spacing,
    coverage,
    smallest_label,
)
from medseg.planning.fingerprint import Fingerprint
from medseg.planning.memory import estimate_memory_gb
from medseg.planning.topology import Topology, plan_topology, round_up

log = logging.getLogger(__name__)

#: Most halvings of one axis: 128 -> 4 voxels in 3D, 512 -> 4 in 2D.
MAX_POOLS = {2: 7, 3: 5}
#: Smallest feature-map edge at the bottleneck, in voxels.
MIN_EDGE = 4
#: DynUNet needs at least three resolution levels.
MIN_LEVELS = 3
#: The first patch tried has the aspect ratio of 1/spacing and this many voxels, before it is
#: clipped to the median image shape (nnU-Net's 256^3 and 2048^2).
START_VOXELS = {2: 2048**2, 3: 256**3}
#: A 2D patch on a CPU may grow up to this percentile of the slices (per axis) instead of the median:
#: a slice larger than the patch takes four sliding windows instead of one.
CPU_2D_SLICE_PERCENTILE = 90
#: No patch edge is shrunk below this many voxels.
MIN_PATCH_EDGE = 8
#: Deep supervision heads besides the full-resolution output (at 1/2 and 1/4 resolution).
MAX_HEADS = 2


@dataclass(frozen=True)
class PatchFit:
    patch: tuple[int, ...]
    start: tuple[int, ...]
    topology: Topology
    network: Network
    memory_gb: float
    shrinks: int
    seconds: float | None = None  # on a CPU: the estimated step time at batch MIN_BATCH
    start_seconds: float | None = None  # ... and that of the first patch tried
    over_time: bool = False  # on a CPU: even the smallest patch is over the step budget
    bound: tuple[int, ...] = ()  # the shape the patch was allowed to grow to


@dataclass(frozen=True)
class Resolution:
    """The grid the network works on, the patch fitted to it, and why."""

    spacing: tuple[float, float, float]
    median_shape: tuple[int, int, int]
    fit: PatchFit
    seen: Coverage
    factor: float  # spacing of the finest network axis / its full-resolution spacing
    reason: str  # for preprocessing.spacing: empty at full resolution
    context: str  # for training.patch_size: what the patch sees


def choose_resolution(
    fingerprint: Fingerprint,
    full: tuple[float, float, float],
    dims: int,
    budget: Budget,
    in_channels: int,
    num_classes: int,
) -> Resolution:
    """Full resolution, unless the budget shrinks the patch below the context share: then coarser.

    Context before resolution: when the budget forced the patch smaller than the median
    image and it covers less than the context share (:data:`CPU_CONTEXT_SHARE` on a CPU,
    :data:`GPU_CONTEXT_SHARE` on a GPU) of the median image extent, the spacing of the
    network's finest axes is raised by :data:`COARSENING_STEP` at a time and the patch is
    fitted again, until the share is reached or the patch is the whole median image, but
    never so far that the smallest label is fewer than :data:`MIN_LABEL_VOXELS` voxels
    across, nor beyond :data:`MAX_COARSENING` times the full-resolution spacing.
    """
    target = CPU_CONTEXT_SHARE if budget.on_cpu else GPU_CONTEXT_SHARE

    def attempt(spacing: tuple[float, float, float]) -> tuple[tuple[int, int, int], PatchFit, Coverage]:
        median = fingerprint.median_shape_at(spacing)
        fit = fit_patch(spacing[:dims], median[:dims], budget, in_channels, num_classes)
        bound = patch_bound(fingerprint, spacing, median[:dims], budget)
        if bound != median[:dims]:  # most slices, where the budget allows a patch no smaller anywhere
            larger = fit_patch(spacing[:dims], bound, budget, in_channels, num_classes)
            if all(a >= b for a, b in zip(larger.patch, fit.patch)) and larger.patch != fit.patch:
                fit = larger
        return median, fit, coverage(fit.patch, spacing[:dims], median[:dims])

    median, fit, seen = attempt(full)
    full_seen, spacing, factor, stop = seen, full, 1.0, ""
    if fit.shrinks and seen.share < target:
        smallest = smallest_label(fingerprint)
        step = 1.0
        while True:
            step *= COARSENING_STEP
            if step > MAX_COARSENING * (1 + 1e-9):
                stop = f"stopped at {MAX_COARSENING:g}x the full-resolution spacing"
                break
            trial = coarser_spacing(full, step, dims)
            finest = min(trial[:dims])
            if smallest is not None and smallest.diameter_mm / finest < MIN_LABEL_VOXELS:
                stop = (
                    f"stopped where the smallest label, {smallest.name} (about {smallest.millilitres:.3g} mL, "
                    f"{smallest.diameter_mm:.0f} mm across as a sphere), would be fewer than "
                    f"{MIN_LABEL_VOXELS:g} voxels across"
                )
                break
            try:
                trial_median, trial_fit, trial_seen = attempt(trial)
            except ConfigError:  # images too small for a U-Net at this spacing
                stop = "stopped where the images would become too small for a U-Net"
                break
            median, fit, seen, spacing, factor = trial_median, trial_fit, trial_seen, trial, step
            if seen.share >= target or not fit.shrinks:
                break
    reason = ""
    if factor > 1:
        reason = (
            f"low resolution (context before resolution): at {mm(full)} mm, the budget ({describe_budget(budget)}) "
            f"allowed a patch of {mm(full_seen.patch_mm)} mm, {full_seen.share:.0%} of the median image "
            f"({mm(full_seen.image_mm)} mm; target {target:.0%}), so the spacing was coarsened {factor:.2f}x "
            f"to {mm(spacing)} mm; predictions are resampled back to each scan's own grid"
        )
        if stop:
            reason += f"; {stop}"
    if min(seen.per_axis) >= 1.0:
        context = f"it covers the whole median image ({mm(seen.image_mm)} mm)"
    else:
        context = (
            f"it covers {mm(seen.patch_mm)} mm, {seen.share:.0%} of the median image "
            f"(per axis {', '.join(f'{c:.0%}' for c in seen.per_axis)})"
        )
    if seen.share < target and fit.shrinks:
        why = f"; {stop}" if stop else ""
        context += (
            f". WARNING: below the {target:.0%} this plan aims for{why}: classes told apart by what lies farther "
            f"away (left from right, an organ from a neighbour of the same density) may be confused; a larger "
            f"budget (more memory, more CPU threads) or a coarser preprocessing.spacing gives more context"
        )
        log.warning("the planned patch covers only %.0f%% of the median image%s", 100 * seen.share, why)
    return Resolution(spacing, median, fit, seen, factor, reason, context)


def patch_bound(
    fingerprint: Fingerprint, spacing: Sequence[float], median: Sequence[int], budget: Budget
) -> tuple[int, ...]:
    """The shape a patch may grow to: the median image's, or for a 2D network on a CPU most slices'.

    A 2D patch just under a slice makes the sliding window cover that slice with two windows
    per axis, four times the work of one; on a CPU, where inference time is the cost, the
    patch may grow to the :data:`CPU_2D_SLICE_PERCENTILE` th percentile of the slices' size
    along each axis (when the step budget allows it), so that most scans take one window a slice.
    """
    dims = len(median)
    if dims != 2 or not budget.on_cpu:
        return tuple(median)
    shapes = np.asarray(fingerprint.shapes_at(spacing), dtype=np.float64)[:, :dims]
    high = np.ceil(np.percentile(shapes, CPU_2D_SLICE_PERCENTILE, axis=0))
    return tuple(max(int(m), int(h)) for m, h in zip(median, high))


def network_for(topology: Topology, budget: Budget) -> Network:
    dims = len(topology.strides[0])
    levels = topology.levels
    heads = min(MAX_HEADS, levels - 2)
    return Network(
        dimensions=dims,  # type: ignore[arg-type]
        filters=[min(budget.base_filters(dims) * 2**level, budget.max_filters(dims)) for level in range(levels)],
        kernel_sizes=[list(k) for k in topology.kernel_sizes],
        strides=[list(s) for s in topology.strides],
        deep_supervision=True,
        deep_supervision_heads=heads,
        norm="instance",
    )


def topology_for(spacing: Sequence[float], patch: Sequence[int]) -> tuple[tuple[int, ...], Topology]:
    """nnU-Net's topology for ``patch``, and the patch rounded up to what it divides."""
    topology = plan_topology(spacing, patch, max_pools=MAX_POOLS[len(spacing)], min_edge=MIN_EDGE)
    return round_up(patch, topology.divisor), topology


def fit_patch(
    spacing: Sequence[float], median: Sequence[int], budget: Budget, in_channels: int, num_classes: int
) -> PatchFit:
    """The largest patch (up to ``median``, the shape it may grow to) whose training step at batch 2 fits the budget.

    Starts from a patch with the aspect ratio of 1/spacing, clipped to ``median`` (the
    median shape, or :func:`patch_bound`'s); while too large (memory, and on a CPU the step's time), shrinks the axis
    that is largest relative to the median shape by one step of what the topology
    needs the size to be a multiple of. On a CPU, a patch that cannot shrink further
    is kept even when its step is estimated over the time budget (the memory budget
    is a hard limit, the time budget a target).
    """
    dims = len(spacing)
    inverse = 1.0 / np.asarray(spacing, dtype=np.float64)
    scaled = inverse * (START_VOXELS[dims] / np.prod(inverse)) ** (1.0 / dims)
    start = tuple(max(1, min(round(float(s)), m)) for s, m in zip(scaled, median))
    patch, topology = topology_for(spacing, start)
    shrinks = 0
    start_seconds = None
    while True:
        if topology.levels < MIN_LEVELS:
            raise ConfigError(
                f"images of {shape_text(median)} voxels (median, at the target spacing) are too small for a U-Net: "
                f"it needs {MIN_LEVELS} levels, i.e. feature maps halved twice to at least {MIN_EDGE} voxels"
            )
        network = network_for(topology, budget)
        need = estimate_memory_gb(
            network, patch, batch_size=MIN_BATCH, in_channels=in_channels, num_classes=num_classes
        )
        seconds = None
        if budget.on_cpu:
            seconds = budget.seconds(network, patch, MIN_BATCH, in_channels, num_classes)
            start_seconds = seconds if start_seconds is None else start_seconds
        fits_time = seconds is None or seconds <= CPU_STEP_SECONDS
        if need <= budget.memory_gb and fits_time:
            return PatchFit(patch, start, topology, network, need, shrinks, seconds, start_seconds, bound=tuple(median))
        smaller = _shrink(patch, topology, spacing, median)
        if smaller is None:
            if need <= budget.memory_gb:  # only the time budget is missed: keep the smallest patch
                log.warning(
                    "the smallest patch, %s, needs %.2f s per step on %s", shape_text(patch), seconds, budget.where
                )
                return PatchFit(
                    patch, start, topology, network, need, shrinks, seconds, start_seconds, True, tuple(median)
                )
            raise ConfigError(
                f"memory_gb={budget.memory_gb:g} is too small: the smallest patch, {shape_text(patch)} voxels, needs "
                f"{need:.2f} GiB at batch size {MIN_BATCH}"
            )
        patch, topology = smaller
        shrinks += 1


def _shrink(
    patch: tuple[int, ...], topology: Topology, spacing: Sequence[float], median: Sequence[int]
) -> tuple[tuple[int, ...], Topology] | None:
    """One step smaller along the axis largest relative to the median shape (else the next)."""
    order = sorted(range(len(patch)), key=lambda a: (-patch[a] / median[a], a))
    for axis in order:
        trial = list(patch)
        trial[axis] -= topology.divisor[axis]
        if trial[axis] < 1:
            continue
        # Step by the divisor of the smaller patch: 256 (multiple of 64) -> 224 (of 32), not 192 (nnU-Net).
        _, trial_topology = topology_for(spacing, trial)
        size = patch[axis] - trial_topology.divisor[axis]
        if size < MIN_PATCH_EDGE:
            continue
        trial = list(patch)
        trial[axis] = size
        new_patch, new_topology = topology_for(spacing, trial)
        if math.prod(new_patch) < math.prod(patch) and new_topology.levels >= MIN_LEVELS:
            return new_patch, new_topology
    return None


def choose_batch_size(
    fit: PatchFit,
    fingerprint: Fingerprint,
    median_shape: Sequence[int],
    budget: Budget,
    in_channels: int,
    num_classes: int,
) -> tuple[int, str]:
    def need(batch: int) -> float:
        return estimate_memory_gb(
            fit.network, fit.patch, batch_size=batch, in_channels=in_channels, num_classes=num_classes
        )

    per_patch = need(1) - need(0)
    by_memory = int((budget.memory_gb - need(0)) // per_patch)
    dataset_voxels = float(np.prod(median_shape, dtype=np.float64)) * fingerprint.num_cases
    by_dataset = round(MAX_DATASET_FRACTION * dataset_voxels / math.prod(fit.patch))
    limits = [by_memory, by_dataset]
    compute = ""
    if budget.on_cpu:
        seconds = step_seconds(fit, 1, budget, in_channels, num_classes)
        fixed = step_seconds(fit, 0, budget, in_channels, num_classes)
        by_time = int((CPU_STEP_SECONDS - fixed) // (seconds - fixed))
        limits.append(by_time)
        compute = (
            f"a step of {CPU_STEP_SECONDS:g} s on {budget.where} allows {by_time} "
            f"(about {seconds - fixed:.3f} s each); "
        )
    batch = max(min(limits), MIN_BATCH)
    reason = (
        f"{batch}: {compute}memory allows {by_memory} patches ({per_patch:.2f} GiB each + {need(0):.2f} GiB for "
        f"weights and framework); {by_dataset} would cover {MAX_DATASET_FRACTION:.0%} of the dataset's voxels "
        f"({fingerprint.num_cases} x {shape_text(median_shape)}); at least {MIN_BATCH}"
    )
    return batch, reason


def step_seconds(fit: PatchFit, batch: int, budget: Budget, in_channels: int, num_classes: int) -> float:
    return budget.seconds(fit.network, fit.patch, batch, in_channels, num_classes)


def mm(values: Sequence[float]) -> str:
    return " x ".join(f"{float(v):.3g}" for v in values)


def shape_text(values: Sequence[float]) -> str:
    return " x ".join(str(int(v)) for v in values)
