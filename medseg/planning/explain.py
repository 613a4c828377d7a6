"""The comments a planned pipeline carries above its keys: why each value was chosen, in words.

Keyed by the dotted path of the YAML key they explain (``"training.patch_size"``), as
:func:`medseg.config.dump_pipeline` writes them.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from medseg.planning.budget import BASE_FILTERS, CPU_BASE_FILTERS, CPU_STEP_SECONDS, MAX_FILTERS, MIN_BATCH, Budget
from medseg.planning.fingerprint import Fingerprint
from medseg.planning.patch import CPU_2D_SLICE_PERCENTILE, MAX_POOLS, MIN_EDGE, START_VOXELS, PatchFit, shape_text


def patch_comments(fit: PatchFit, median: Sequence[int], budget: Budget) -> dict[str, str]:
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
    shape_from = f"the median image shape {shape_text(median)}"
    if any(s > m for s, m in zip(fit.start, median)):  # fitted against the larger bound
        shape_from = (
            f"the slices' {CPU_2D_SLICE_PERCENTILE}th percentile shape {shape_text(fit.bound)} (median {shape_text(median)}: a 2D "
            f"patch on a CPU may cover most slices, as a slice larger than the patch takes four windows)"
        )
    return {
        "training.patch_size": (
            f"started at {shape_text(fit.start)}: {shape_from}, but at most "
            f"{round(START_VOXELS[len(median)] ** (1 / len(median)))}^{len(median)} voxels in the aspect ratio of the "
            f"spacing; {how}; sizes are multiples of {shape_text(fit.topology.divisor)} (the strides' product)"
        )
    }


def network_comments(fit: PatchFit, spacing: Sequence[float], budget: Budget) -> dict[str, str]:
    topology, network = fit.topology, fit.network
    bottom = tuple(p // d for p, d in zip(fit.patch, topology.divisor))
    dims = len(spacing)
    flat = [a for a in range(dims) if any(k[a] == 1 for k in topology.kernel_sizes)]
    filters = f"{budget.base_filters(dims)} doubling per level, capped at {budget.max_filters(dims)} ({topology.levels} levels)"
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
            f"bottleneck {shape_text(bottom)} voxels"
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


def standing_comments(budget: Budget, *, is_ct: bool, mirror_reason: str, mirror_axes: Sequence[int]) -> dict[str, str]:
    """The comments of the keys every plan sets by a fixed rule (orientation, augmentation, inference, ...)."""
    comments = {
        "preprocessing.crop_to_nonzero": (
            "off: CT air is -1000 HU, not 0, so cropping to non-zero voxels would remove nothing"
            if is_ct
            else "on: crop to the box around non-zero voxels (masked or skull-stripped images lose empty borders)"
        ),
        "preprocessing.orientation": (
            "LPS: every scan is turned into one voxel order (i to the patient's left, j posterior, k head) before "
            "training and inference, and masks are turned back onto the stored grid, so head-first and feet-first "
            "scans, RAS and LPS NIfTI teach the network the same sides (as MONAI's Orientationd and TotalSegmentator)"
        ),
        "training.foreground_oversampling": "a third of the patches are centred on a foreground voxel",
        "training.augmentation": (
            f"applied in order to every patch; each step is medseg's RandAffineMmd (rotation and zoom in mm) or a "
            f"MONAI dictionary transform by name with its arguments: add, remove or edit steps (e.g. "
            f"{{name: RandGaussianSmoothd, keys: [image], prob: 0.15}}). nnU-Net's set: rotation and zoom "
            f"(p 0.2 each), flips (p 0.5 per axis), noise, brightness, contrast, gamma (p 0.15 each); flips "
            f"{mirror_reason}"
        ),
        "inference.mirror_axes": (
            f"test-time augmentation: average {2 ** len(mirror_axes)} predictions mirrored along axes "
            f"{list(mirror_axes)}, the axes flipped in training"
        ),
        "inference.overlap": "sliding windows overlap by half a patch (nnU-Net's)",
        "inference.postprocessing": (
            "training keeps only the largest component of the labels where that raises the mean validation Dice of "
            "the exported epoch (nnU-Net's rule); set choose_on_validation: false to keep every prediction as it is"
        ),
    }
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
    return comments


def label_summary(fingerprint: Fingerprint) -> str:
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


def wrap(text: str) -> str:
    return "\n".join(textwrap.fill(line, width=110) for line in text.splitlines())
