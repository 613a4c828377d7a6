"""Plan a complete pipeline from a dataset fingerprint, with every choice explained.

The heuristics are nnU-Net's (v2 ``ExperimentPlanner``), written out one step
at a time: target spacing (:mod:`medseg.planning.spacing`), 2D or 3D, a patch
as large as the median image and the memory budget allow, the U-Net topology
that patch supports (:mod:`medseg.planning.topology`), the batch size, and
intensity normalisation. Each choice comes back as a comment, keyed by the
dotted path of the YAML key it explains (see :func:`medseg.config.dump_pipeline`).

Planning for a CPU (``device="cpu"``) keeps every rule but one budget more: a
training step's estimated time (:mod:`medseg.planning.compute`) on the given
threads must stay within :data:`CPU_STEP_SECONDS`, so the network is narrower
(:data:`CPU_BASE_FILTERS`, capped lower), the patch shrinks by the same rule as
for memory until a step fits, and the epochs are those of a night's run, not
nnU-Net's 250,000 steps. The device is always an argument, never detected here.
"""

from __future__ import annotations

import logging
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import ValidationError

from medseg.config.schema import (
    Channel,
    Inference,
    Label,
    Network,
    Normalization,
    Optimizer,
    Pipeline,
    Postprocessing,
    Preprocessing,
    Training,
    default_augmentation,
)
from medseg.errors import ConfigError
from medseg.planning.compute import estimate_step_seconds
from medseg.planning.context import (
    COARSENING_STEP,
    CPU_CONTEXT_SHARE,
    GPU_CONTEXT_SHARE,
    MAX_COARSENING,
    MIN_LABEL_VOXELS,
    Coverage,
    coarser_spacing,
    coverage,
    mirror_axes,
    smallest_label,
)
from medseg.planning.fingerprint import ChannelStats, Fingerprint
from medseg.planning.memory import estimate_memory_gb
from medseg.planning.spacing import choose_dimensions, choose_spacing
from medseg.planning.topology import Topology, check_patch, plan_topology, round_up
from medseg.transforms.normalize import BODY_HU

log = logging.getLogger(__name__)

#: Filters of the first level; doubled per level up to the cap (nnU-Net's numbers).
BASE_FILTERS = 32
MAX_FILTERS = {2: 512, 3: 320}
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
#: Batch size at least 2; at most what covers 5% of the dataset's voxels (against overfitting).
MIN_BATCH = 2
MAX_DATASET_FRACTION = 0.05
#: Deep supervision heads besides the full-resolution output (at 1/2 and 1/4 resolution).
MAX_HEADS = 2
#: nnU-Net's training budget.
DEFAULT_EPOCHS = 1000
ITERATIONS_PER_EPOCH = 250
#: On a CPU, shorter epochs: a time-limited run of minutes then still anneals its learning rate
#: in fine steps, may validate between epochs, and loses less to an interruption.
CPU_ITERATIONS_PER_EPOCH = 100
#: On a CPU: filters of the first level, and their cap. 3D: 16, a quarter of the work per voxel of
#: nnU-Net's 32. 2D: 8, because every level of a 2D U-Net costs about as much as the first (the
#: feature map shrinks 4x per level, the filters' square grows 4x): at 16 a 2D network took 1.8 us
#: per voxel at inference on two cores, 4.7x the MONAI recipe's 3D UNet (whose first convolution
#: already strides); at 8, 0.6-0.7 us (2026-12-03, this project's 2-vCPU machine).
CPU_BASE_FILTERS = {2: 8, 3: 16}
CPU_MAX_FILTERS = {2: 256, 3: 128}
#: On a CPU: the estimated time of one training step (s, data loading excluded) the network and patch must fit,
#: so that a 10-minute run takes about two thousand steps.
CPU_STEP_SECONDS = 0.25
#: On a CPU: AdamW's learning rate (nnU-Net's SGD needs far more steps than a CPU run takes).
CPU_LEARNING_RATE = 1e-3
#: On a CPU: the epochs planned are those that take about this long at the estimated step time.
CPU_TRAINING_HOURS = 8.0

Device = Literal["cuda", "cpu"]


@dataclass(frozen=True)
class _Budget:
    """What a training step may cost: memory always; on a CPU, also time on ``threads`` threads."""

    memory_gb: float
    device: Device
    threads: int
    speed: float = 1.0  # this machine's step time over the formula's (medseg.planning.calibrate)

    @property
    def on_cpu(self) -> bool:
        return self.device == "cpu"

    def base_filters(self, dims: int) -> int:
        return CPU_BASE_FILTERS[dims] if self.on_cpu else BASE_FILTERS

    @property
    def iterations_per_epoch(self) -> int:
        return CPU_ITERATIONS_PER_EPOCH if self.on_cpu else ITERATIONS_PER_EPOCH

    def max_filters(self, dims: int) -> int:
        return (CPU_MAX_FILTERS if self.on_cpu else MAX_FILTERS)[dims]

    @property
    def where(self) -> str:
        return f"{self.threads} CPU thread{'s' if self.threads > 1 else ''}"

    def seconds(self, network: Network, patch: Sequence[int], batch: int, in_channels: int, classes: int) -> float:
        """The step time on this machine: the formula's, times the measured speed."""
        estimate = estimate_step_seconds(
            network, patch, batch_size=batch, in_channels=in_channels, num_classes=classes, threads=self.threads
        )
        return self.speed * estimate


@dataclass(frozen=True)
class _PatchFit:
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


def plan_pipeline(
    fingerprint: Fingerprint,
    *,
    name: str,
    memory_gb: float = 8.0,
    dimensions: Literal["auto", 2, 3] = "auto",
    epochs: int | None = None,
    device: Device = "cuda",
    cpu_threads: int = 2,
    cpu_speed: float = 1.0,
) -> tuple[Pipeline, dict[str, str]]:
    """A validated pipeline for the fingerprinted dataset, and why each value was chosen.

    Args:
        fingerprint: from :func:`medseg.planning.compute_fingerprint`.
        name: the pipeline's name.
        memory_gb: memory (GiB) one training step may use, as estimated by
            :func:`medseg.planning.memory.estimate_memory_gb` (fp32).
        dimensions: 2 or 3 to force a 2D or 3D network; "auto" chooses.
        epochs: training epochs (of 250 iterations); when None, nnU-Net's 1000 on a
            GPU, and on a CPU those of about :data:`CPU_TRAINING_HOURS` hours.
        device: what the pipeline will train on: ``"cuda"`` (nnU-Net's heuristics) or
            ``"cpu"`` (a narrower network and a patch whose training step fits
            :data:`CPU_STEP_SECONDS` on ``cpu_threads`` threads).
        cpu_threads: the threads a CPU training run will use (ignored for ``"cuda"``).
        cpu_speed: the training machine's step time over the formula's, as
            :func:`medseg.planning.calibrate.measure_cpu_speed` measures it (2.0: twice as
            slow as the machine the formula was fitted on); multiplies every CPU estimate.

    Returns:
        The pipeline and the comments to write above its keys, keyed by dotted
        path (``"training.patch_size"``). The same fingerprint and options give
        the same pipeline and comments.

    Raises:
        ConfigError: a bad option, images too small for a U-Net, or a memory
            budget too small for the smallest patch.
    """
    if device not in ("cuda", "cpu"):
        raise ConfigError(f"device must be 'cuda' or 'cpu', got {device!r}")
    if isinstance(cpu_threads, bool) or not isinstance(cpu_threads, int) or cpu_threads < 1:
        raise ConfigError(f"cpu_threads must be a positive whole number, got {cpu_threads!r}")
    if isinstance(cpu_speed, bool) or not isinstance(cpu_speed, (int, float)) or not 0 < cpu_speed < math.inf:
        raise ConfigError(f"cpu_speed must be a positive number, got {cpu_speed!r}")
    if isinstance(memory_gb, bool) or not isinstance(memory_gb, (int, float)) or not 0 < memory_gb < math.inf:
        raise ConfigError(f"memory_gb must be a positive number of GiB, got {memory_gb!r}")
    if dimensions not in ("auto", 2, 3):
        raise ConfigError(f"dimensions must be 'auto', 2 or 3, got {dimensions!r}")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise ConfigError(f"epochs must be a positive whole number, got {epochs!r}")
    comments: dict[str, str] = {}

    budget = _Budget(memory_gb=memory_gb, device=device, threads=cpu_threads, speed=float(cpu_speed))
    channels, normalization_reasons = _channels(fingerprint)
    comments["preprocessing.channels"] = "\n".join(normalization_reasons)
    is_ct = all(c.normalization.scheme == "ct" for c in channels)

    spacing_choice = choose_spacing(fingerprint)
    full_spacing = spacing_choice.spacing
    dims_choice = choose_dimensions(full_spacing, fingerprint.median_shape_at(full_spacing), dimensions)
    dims = dims_choice.dimensions
    comments["network.dimensions"] = dims_choice.reason
    crop_to_body, comments["preprocessing.crop_to_body"] = _body_crop(fingerprint, is_ct, dims, budget)
    sizes = fingerprint.cropped_to_body() if crop_to_body else fingerprint  # the shapes the network sees

    in_channels, num_classes = len(fingerprint.channels), max(fingerprint.labels) + 1
    resolution = _choose_resolution(sizes, full_spacing, dims, budget, in_channels, num_classes)
    spacing, fit, median_shape = resolution.spacing, resolution.fit, resolution.median_shape
    comments["preprocessing.spacing"] = spacing_choice.reason + (f"; {resolution.reason}" if resolution.reason else "")
    batch, batch_reason = _batch_size(fit, fingerprint, median_shape, budget, in_channels, num_classes)
    comments.update(_patch_comments(fit, median_shape[:dims], budget))
    comments["training.patch_size"] += f"; {resolution.context}"
    comments.update(_network_comments(fit, spacing[:dims], budget))
    comments["training.batch_size"] = batch_reason

    comments["preprocessing.crop_to_nonzero"] = (
        "off: CT air is -1000 HU, not 0, so cropping to non-zero voxels would remove nothing"
        if is_ct
        else "on: crop to the box around non-zero voxels (masked or skull-stripped images lose empty borders)"
    )
    comments["preprocessing.orientation"] = (
        "LPS: every scan is turned into one voxel order (i to the patient's left, j posterior, k head) before "
        "training and inference, and masks are turned back onto the stored grid, so head-first and feet-first "
        "scans, RAS and LPS NIfTI teach the network the same sides (as MONAI's Orientationd and TotalSegmentator)"
    )
    comments["labels"] = _label_summary(fingerprint)

    axes, mirror_reason = mirror_axes(fingerprint, dims)
    epochs, comments["training.epochs"] = _epochs(epochs, fit, batch, budget, in_channels, num_classes)
    optimizer, comments["training.optimizer"] = _optimizer(budget)
    comments["training.foreground_oversampling"] = "a third of the patches are centred on a foreground voxel"
    comments["training.augmentation"] = (
        f"applied in order to every patch; each step is medseg's RandAffineMmd (rotation and zoom in mm) or a MONAI "
        f"dictionary transform by name with its arguments: add, remove or edit steps (e.g. "
        f"{{name: RandGaussianSmoothd, keys: [image], prob: 0.15}}). nnU-Net's set: rotation and zoom "
        f"(p 0.2 each), flips (p 0.5 per axis), noise, brightness, contrast, gamma (p 0.15 each); flips {mirror_reason}"
    )
    comments["inference.mirror_axes"] = (
        f"test-time augmentation: average {2 ** len(axes)} predictions mirrored along axes {axes}, the axes flipped "
        f"in training"
    )
    comments["inference.overlap"] = "sliding windows overlap by half a patch (nnU-Net's)"
    comments["inference.postprocessing"] = (
        "training keeps only the largest component of the labels where that raises the mean validation Dice of "
        "the exported epoch (nnU-Net's rule); set choose_on_validation: false to keep every prediction as it is"
    )
    if budget.on_cpu:
        measured = (
            f", this machine measured at {budget.speed:g}x the formula's reference step time"
            if budget.speed != 1.0
            else ""
        )
        comments["training.planned_step_seconds"] = (
            f"the step time estimated for {budget.where}{measured} (data loading excluded); training reports it "
            f"when the real one differs by more than 30%"
        )
        comments["training.validation_share"] = (
            "under --time-limit, at most this share of the wall time validates (half of it kept for a closing "
            "validation of the final weights)"
        )

    modality = fingerprint.modality
    try:
        pipeline = Pipeline(
            name=name,
            description=(
                f"planned from {fingerprint.num_cases} {modality} case(s) for {_target(budget)}"
                + (f", at {resolution.factor:.2f}x the full-resolution spacing" if resolution.factor > 1 else "")
            ),
            modality=modality,
            labels={number: Label(name=label) for number, label in sorted(fingerprint.labels.items())},
            preprocessing=Preprocessing(
                spacing=spacing,
                channels=channels,
                crop_to_nonzero=not is_ct,
                crop_to_body=crop_to_body,
                orientation="LPS",
            ),
            network=fit.network,
            training=Training(
                patch_size=list(fit.patch),
                batch_size=batch,
                epochs=epochs,
                iterations_per_epoch=budget.iterations_per_epoch,
                optimizer=optimizer,
                schedule="poly",
                foreground_oversampling=0.33,
                augmentation=default_augmentation(axes),
                planned_step_seconds=(
                    round(_step_seconds(fit, batch, budget, in_channels, num_classes), 3) if budget.on_cpu else None
                ),
            ),
            inference=Inference(
                overlap=0.5, mirror_axes=axes, postprocessing=Postprocessing(choose_on_validation=True)
            ),
        )
    except ValidationError as exc:  # e.g. a hand-made fingerprint with label 0 or an empty name
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"the planned pipeline is invalid: {problems}") from exc
    check_patch(pipeline.network, pipeline.training.patch_size)
    log.info(
        "planned %r for %s: %dD, patch %s, batch %d, spacing %s",
        name,
        _target(budget),
        dims,
        list(fit.patch),
        batch,
        list(spacing),
    )
    return pipeline, {key: _wrap(text) for key, text in comments.items()}


# -- resolution and context ------------------------------------------------------------


@dataclass(frozen=True)
class _Resolution:
    """The grid the network works on, the patch fitted to it, and why."""

    spacing: tuple[float, float, float]
    median_shape: tuple[int, int, int]
    fit: _PatchFit
    seen: Coverage
    factor: float  # spacing of the finest network axis / its full-resolution spacing
    reason: str  # for preprocessing.spacing: empty at full resolution
    context: str  # for training.patch_size: what the patch sees


def _choose_resolution(
    fingerprint: Fingerprint,
    full: tuple[float, float, float],
    dims: int,
    budget: _Budget,
    in_channels: int,
    num_classes: int,
) -> _Resolution:
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

    def attempt(spacing: tuple[float, float, float]) -> tuple[tuple[int, int, int], _PatchFit, Coverage]:
        median = fingerprint.median_shape_at(spacing)
        fit = _fit_patch(spacing[:dims], median[:dims], budget, in_channels, num_classes)
        bound = _patch_bound(fingerprint, spacing, median[:dims], budget)
        if bound != median[:dims]:  # most slices, where the budget allows a patch no smaller anywhere
            larger = _fit_patch(spacing[:dims], bound, budget, in_channels, num_classes)
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
            f"low resolution (context before resolution): at {_mm(full)} mm, the budget ({_target(budget)}) "
            f"allowed a patch of {_mm(full_seen.patch_mm)} mm, {full_seen.share:.0%} of the median image "
            f"({_mm(full_seen.image_mm)} mm; target {target:.0%}), so the spacing was coarsened {factor:.2f}x "
            f"to {_mm(spacing)} mm; predictions are resampled back to each scan's own grid"
        )
        if stop:
            reason += f"; {stop}"
    if min(seen.per_axis) >= 1.0:
        context = f"it covers the whole median image ({_mm(seen.image_mm)} mm)"
    else:
        context = (
            f"it covers {_mm(seen.patch_mm)} mm, {seen.share:.0%} of the median image "
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
    return _Resolution(spacing, median, fit, seen, factor, reason, context)


def _patch_bound(
    fingerprint: Fingerprint, spacing: Sequence[float], median: Sequence[int], budget: _Budget
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


def _mm(values: Sequence[float]) -> str:
    return " x ".join(f"{float(v):.3g}" for v in values)


# -- patch, network, batch -------------------------------------------------------------


def _target(budget: _Budget) -> str:
    if budget.on_cpu:
        speed = f", {budget.speed:g}x the reference step time" if budget.speed != 1.0 else ""
        return f"a CPU ({budget.where}{speed}, {CPU_STEP_SECONDS:g} s per step) and {budget.memory_gb:g} GiB"
    return f"{budget.memory_gb:g} GiB"


def _network(topology: Topology, budget: _Budget) -> Network:
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


def _topology(spacing: Sequence[float], patch: Sequence[int]) -> tuple[tuple[int, ...], Topology]:
    """nnU-Net's topology for ``patch``, and the patch rounded up to what it divides."""
    topology = plan_topology(spacing, patch, max_pools=MAX_POOLS[len(spacing)], min_edge=MIN_EDGE)
    return round_up(patch, topology.divisor), topology


def _fit_patch(
    spacing: Sequence[float], median: Sequence[int], budget: _Budget, in_channels: int, num_classes: int
) -> _PatchFit:
    """The largest patch (up to ``median``, the shape it may grow to) whose training step at batch 2 fits the budget.

    Starts from a patch with the aspect ratio of 1/spacing, clipped to ``median`` (the
    median shape, or :func:`_patch_bound`'s); while too large (memory, and on a CPU the step's time), shrinks the axis
    that is largest relative to the median shape by one step of what the topology
    needs the size to be a multiple of. On a CPU, a patch that cannot shrink further
    is kept even when its step is estimated over the time budget (the memory budget
    is a hard limit, the time budget a target).
    """
    dims = len(spacing)
    inverse = 1.0 / np.asarray(spacing, dtype=np.float64)
    scaled = inverse * (START_VOXELS[dims] / np.prod(inverse)) ** (1.0 / dims)
    start = tuple(max(1, min(round(float(s)), m)) for s, m in zip(scaled, median))
    patch, topology = _topology(spacing, start)
    shrinks = 0
    start_seconds = None
    while True:
        if topology.levels < MIN_LEVELS:
            raise ConfigError(
                f"images of {_shape(median)} voxels (median, at the target spacing) are too small for a U-Net: "
                f"it needs {MIN_LEVELS} levels, i.e. feature maps halved twice to at least {MIN_EDGE} voxels"
            )
        network = _network(topology, budget)
        need = estimate_memory_gb(
            network, patch, batch_size=MIN_BATCH, in_channels=in_channels, num_classes=num_classes
        )
        seconds = None
        if budget.on_cpu:
            seconds = budget.seconds(network, patch, MIN_BATCH, in_channels, num_classes)
            start_seconds = seconds if start_seconds is None else start_seconds
        fits_time = seconds is None or seconds <= CPU_STEP_SECONDS
        if need <= budget.memory_gb and fits_time:
            return _PatchFit(patch, start, topology, network, need, shrinks, seconds, start_seconds, bound=tuple(median))
        smaller = _shrink(patch, topology, spacing, median)
        if smaller is None:
            if need <= budget.memory_gb:  # only the time budget is missed: keep the smallest patch
                log.warning("the smallest patch, %s, needs %.2f s per step on %s", _shape(patch), seconds, budget.where)
                return _PatchFit(
                    patch, start, topology, network, need, shrinks, seconds, start_seconds, True, tuple(median)
                )
            raise ConfigError(
                f"memory_gb={budget.memory_gb:g} is too small: the smallest patch, {_shape(patch)} voxels, needs "
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
        _, trial_topology = _topology(spacing, trial)
        size = patch[axis] - trial_topology.divisor[axis]
        if size < MIN_PATCH_EDGE:
            continue
        trial = list(patch)
        trial[axis] = size
        new_patch, new_topology = _topology(spacing, trial)
        if math.prod(new_patch) < math.prod(patch) and new_topology.levels >= MIN_LEVELS:
            return new_patch, new_topology
    return None


def _batch_size(
    fit: _PatchFit,
    fingerprint: Fingerprint,
    median_shape: Sequence[int],
    budget: _Budget,
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
        seconds = _step_seconds(fit, 1, budget, in_channels, num_classes)
        fixed = _step_seconds(fit, 0, budget, in_channels, num_classes)
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
        f"({fingerprint.num_cases} x {_shape(median_shape)}); at least {MIN_BATCH}"
    )
    return batch, reason


def _optimizer(budget: _Budget) -> tuple[Optimizer, str]:
    """nnU-Net's SGD on a GPU; AdamW on a CPU, where a run is hundreds to a few thousand steps."""
    if not budget.on_cpu:
        sgd = Optimizer(name="sgd", learning_rate=0.01, weight_decay=3e-5, momentum=0.99, nesterov=True)
        return sgd, "nnU-Net's: SGD, Nesterov momentum 0.99, learning rate 0.01 decayed by 'poly'"
    adamw = Optimizer(name="adamw", learning_rate=CPU_LEARNING_RATE, weight_decay=3e-5)
    return adamw, (
        f"planned for a CPU: AdamW, learning rate {CPU_LEARNING_RATE:g} decayed by 'poly'. nnU-Net's SGD (momentum "
        f"0.99) is tuned for 250,000 steps; a CPU run takes hundreds to a few thousand, where AdamW learns much "
        f"faster (a 168 x 168 x 68 CT, 4 CPU minutes: validation Dice 0.73 against SGD's 0.50 after 10)"
    )


def _step_seconds(fit: _PatchFit, batch: int, budget: _Budget, in_channels: int, num_classes: int) -> float:
    return budget.seconds(fit.network, fit.patch, batch, in_channels, num_classes)


def _epochs(
    epochs: int | None, fit: _PatchFit, batch: int, budget: _Budget, in_channels: int, num_classes: int
) -> tuple[int, str]:
    """The epochs to train, and why: as requested, nnU-Net's 1000, or on a CPU about a night's run."""
    if epochs is not None:
        reason = "as requested"
    elif not budget.on_cpu:
        epochs, reason = DEFAULT_EPOCHS, "nnU-Net's budget"
    else:
        step = _step_seconds(fit, batch, budget, in_channels, num_classes)
        epoch_hours = budget.iterations_per_epoch * step / 3600
        nnunet_steps = DEFAULT_EPOCHS * ITERATIONS_PER_EPOCH
        most = nnunet_steps // budget.iterations_per_epoch
        epochs = max(1, min(most, round(CPU_TRAINING_HOURS / epoch_hours)))
        reason = (
            f"planned for a CPU: about {epochs * epoch_hours:.1f} h at the estimated {step:.2f} s per step "
            f"(nnU-Net's {nnunet_steps:,} steps would take {nnunet_steps * step / 3600:.0f} h); "
            f"`medseg train --time-limit` stops sooner and exports the best epoch"
        )
    return epochs, (
        f"{reason}: {epochs} epochs x {budget.iterations_per_epoch} iterations = "
        f"{epochs * budget.iterations_per_epoch:,} steps of {batch} patches"
    )


# -- normalisation ---------------------------------------------------------------------


def _channels(fingerprint: Fingerprint) -> tuple[list[Channel], list[str]]:
    single_ct = fingerprint.modality.strip().upper() == "CT" and len(fingerprint.channels) == 1
    channels, reasons = [], []
    for stats in fingerprint.channels:
        if single_ct or stats.name.strip().upper() == "CT":
            normalization, reason = _ct_normalization(stats)
        else:
            normalization = Normalization(scheme="zscore")
            reason = (
                f"{stats.name}: z-score per image with its own mean and std "
                f"(not CT: intensities have no fixed scale across scans)"
            )
        channels.append(Channel(name=stats.name, normalization=normalization))
        reasons.append(reason)
    return channels, reasons


def _body_crop(fingerprint: Fingerprint, is_ct: bool, dims: int, budget: _Budget) -> tuple[bool, str]:
    """Whether a 2D CPU plan crops each CT to its body's box, and why (other plans keep the whole scan)."""
    if not is_ct:
        return False, "off: not CT"
    if not budget.on_cpu:
        return False, "off: the whole scan, as nnU-Net plans it (cropping to the body is not measured on a GPU)"
    if dims != 2:
        return False, (
            "off: a 3D plan keeps the whole scan (measured: on the robustness benchmark's context CT the crop made "
            "the low-resolution plan finer, its patch saw less, and mean Dice fell from 0.886 to 0.833)"
        )
    if not fingerprint.body_shapes:
        return False, "off: the fingerprint has no body boxes (computed before medseg measured them)"
    if not fingerprint.body_crop_safe:
        cases = ", ".join(str(i) for i in fingerprint.labels_outside_body[:5])
        return False, (
            f"off: in {len(fingerprint.labels_outside_body)} training case(s) (index {cases}"
            f"{', ...' if len(fingerprint.labels_outside_body) > 5 else ''}) labels lie outside the box of voxels "
            f"above {BODY_HU:g} HU, so cropping to the body would cut them away"
        )
    whole = float(np.median([math.prod(s) for s in fingerprint.shapes]))
    body = float(np.median([math.prod(s) for s in fingerprint.body_shapes]))
    return True, (
        f"on: crop to the box of voxels above {BODY_HU:g} HU (the body; air is about -1000 HU), the MONAI tutorial's "
        f"CropForegroundd: the median box holds {body / whole:.0%} of a scan's voxels, so training samples and "
        f"inference windows spend less on air; every training case's labels lie inside its box; scan voxels "
        f"outside it are labelled background"
    )


def _ct_normalization(stats: ChannelStats) -> tuple[Normalization, str]:
    low, high = round(stats.percentile_00_5, 2), round(stats.percentile_99_5, 2)
    if high <= low:  # a constant foreground: keep the clip valid
        log.warning("foreground of channel %r is constant (%g); clip widened to 1", stats.name, low)
        high = low + 1.0
    std = max(round(stats.std, 3), 0.001)
    normalization = Normalization(scheme="ct", clip=(low, high), mean=round(stats.mean, 3), std=std)
    reason = (
        f"{stats.name}: clip to the foreground's 0.5/99.5 percentiles [{low:g}, {high:g}], then subtract the "
        f"foreground mean {stats.mean:.1f} and divide by its std {stats.std:.1f}: the same numbers for every image"
    )
    return normalization, reason


# -- comments --------------------------------------------------------------------------


def _patch_comments(fit: _PatchFit, median: Sequence[int], budget: _Budget) -> dict[str, str]:
    memory_gb = budget.memory_gb
    if budget.on_cpu:
        over = " (still over: the smallest patch)" if fit.over_time else ""
        relation = ">" if fit.over_time else "<="
        fits = f"{relation} {CPU_STEP_SECONDS:g} s{over} ({fit.memory_gb:.2f} GiB <= {memory_gb:g} GiB)"
        if fit.shrinks:
            how = (
                f"planned for a CPU: shrunk {fit.shrinks} time(s) along the axis largest relative to the median shape, "
                f"from an estimated {fit.start_seconds:.2f} s per step at batch {MIN_BATCH} on {budget.where} "
                f"to {fit.seconds:.2f} s {fits}"
            )
        else:
            how = (
                f"planned for a CPU: a step at batch {MIN_BATCH} takes an estimated {fit.seconds:.2f} s on "
                f"{budget.where} {fits}, so no shrinking"
            )
    elif fit.shrinks:
        how = (
            f"shrunk {fit.shrinks} time(s), each time along the axis largest relative to the median shape, "
            f"until a step at batch {MIN_BATCH} needed {fit.memory_gb:.2f} GiB <= {memory_gb:g} GiB"
        )
    else:
        how = f"a step at batch {MIN_BATCH} needs {fit.memory_gb:.2f} GiB <= {memory_gb:g} GiB, so no shrinking"
    shape_from = f"the median image shape {_shape(median)}"
    if any(s > m for s, m in zip(fit.start, median)):  # fitted against the larger bound
        shape_from = (
            f"the slices' {CPU_2D_SLICE_PERCENTILE}th percentile shape {_shape(fit.bound)} (median {_shape(median)}: a 2D "
            f"patch on a CPU may cover most slices, as a slice larger than the patch takes four windows)"
        )
    return {
        "training.patch_size": (
            f"started at {_shape(fit.start)}: {shape_from}, but at most "
            f"{round(START_VOXELS[len(median)] ** (1 / len(median)))}^{len(median)} voxels in the aspect ratio of the "
            f"spacing; {how}; sizes are multiples of {_shape(fit.topology.divisor)} (the strides' product)"
        )
    }


def _network_comments(fit: _PatchFit, spacing: Sequence[float], budget: _Budget) -> dict[str, str]:
    topology, network = fit.topology, fit.network
    bottom = tuple(p // d for p, d in zip(fit.patch, topology.divisor))
    dims = len(spacing)
    flat = [a for a in range(dims) if any(k[a] == 1 for k in topology.kernel_sizes)]
    filters = (
        f"{budget.base_filters(dims)} doubling per level, capped at {budget.max_filters(dims)} ({topology.levels} levels)"
    )
    if budget.on_cpu:
        filters = (
            f"planned for a CPU: {filters}; nnU-Net's {BASE_FILTERS} (capped at {MAX_FILTERS[dims]}) would cost "
            f"about {(BASE_FILTERS / CPU_BASE_FILTERS[dims]) ** 2:g}x the multiply-accumulates per voxel"
        )
    comments = {
        "network.filters": filters,
        "network.strides": (
            f"halvings per axis {list(topology.pools_per_axis)}: an axis is halved while its feature map stays >= "
            f"{MIN_EDGE} voxels (at most {MAX_POOLS[dims]} times) and its spacing is within 2x of the finest; "
            f"bottleneck {_shape(bottom)} voxels"
        ),
        "network.kernel_sizes": (
            "3 along every axis"
            if not flat
            else f"1 along axis {flat} at levels whose spacing there is >= 2x the finest (no convolution across "
            f"thick slices at full resolution), else 3"
        ),
    }
    comments["network.deep_supervision_heads"] = (
        f"losses also at 1/2{' and 1/4' if network.deep_supervision_heads > 1 else ''} resolution; each head "
        f"costs a full-size output (DynUNet upsamples it), and deeper ones would weigh little (1/8, 1/16, ...)"
    )
    return comments


def _label_summary(fingerprint: Fingerprint) -> str:
    foreground = sum(fingerprint.label_voxels.values()) or 1
    n = fingerprint.num_cases
    rarest = min(fingerprint.labels, key=lambda k: (fingerprint.label_cases[k], fingerprint.label_voxels[k], k))
    text = (
        f"{len(fingerprint.labels)} label(s); the rarest, {fingerprint.labels[rarest]}, is in "
        f"{fingerprint.label_cases[rarest]}/{n} cases and "
        f"{fingerprint.label_voxels[rarest] / foreground:.1%} of the foreground voxels"
    )
    missing = [f"{k} ({v})" for k, v in sorted(fingerprint.labels.items()) if fingerprint.label_cases[k] == 0]
    if missing:
        text += f"; never present: {', '.join(missing)}"
    return text


def _shape(values: Sequence[float]) -> str:
    return " x ".join(str(int(v)) for v in values)


def _wrap(text: str) -> str:
    return "\n".join(textwrap.fill(line, width=110) for line in text.splitlines())
