"""Plan a complete pipeline from a dataset fingerprint, with every choice explained.

The heuristics are nnU-Net's (v2 ``ExperimentPlanner``), written out one step
at a time: target spacing (:mod:`medseg.planning.spacing`), 2D or 3D, a patch
as large as the median image and the budget allow, the U-Net topology that patch
supports, the batch size (:mod:`medseg.planning.patch`), and intensity
normalisation (here). Each choice comes back as a comment
(:mod:`medseg.planning.explain`), keyed by the dotted path of the YAML key it
explains (see :func:`medseg.config.dump_pipeline`).

Planning for a CPU (``device="cpu"``) keeps every rule but one budget more
(:mod:`medseg.planning.budget`): a training step's estimated time on the given
threads must stay within a target, so the network is narrower, the patch shrinks
by the same rule as for memory until a step fits, and the epochs are those of a
night's run, not nnU-Net's 250,000 steps. The device is always an argument, never
detected here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Literal

import numpy as np
from pydantic import ValidationError

from medseg.config.schema import (
    Channel,
    Inference,
    Label,
    Normalization,
    Pipeline,
    Postprocessing,
    Preprocessing,
    Training,
    default_augmentation,
)
from medseg.errors import ConfigError
from medseg.planning.budget import Budget, Device, choose_epochs, choose_optimizer, describe_budget
from medseg.planning.context import mirror_axes
from medseg.planning.explain import label_summary, network_comments, patch_comments, standing_comments, wrap
from medseg.planning.fingerprint import ChannelStats, Fingerprint
from medseg.planning.patch import choose_batch_size, choose_resolution, step_seconds
from medseg.planning.spacing import choose_dimensions, choose_spacing
from medseg.planning.topology import check_patch
from medseg.transforms.normalize import BODY_HU

log = logging.getLogger(__name__)


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
            GPU, and on a CPU those of about :data:`~medseg.planning.budget.CPU_TRAINING_HOURS` hours.
        device: what the pipeline will train on: ``"cuda"`` (nnU-Net's heuristics) or
            ``"cpu"`` (a narrower network and a patch whose training step fits
            :data:`~medseg.planning.budget.CPU_STEP_SECONDS` on ``cpu_threads`` threads).
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
    _check_options(memory_gb, dimensions, epochs, device, cpu_threads, cpu_speed)
    budget = Budget(memory_gb=memory_gb, device=device, threads=cpu_threads, speed=float(cpu_speed))
    channels, normalization_reasons = _channels(fingerprint)
    comments: dict[str, str] = {"preprocessing.channels": "\n".join(normalization_reasons)}
    is_ct = all(c.normalization.scheme == "ct" for c in channels)

    spacing_choice = choose_spacing(fingerprint)
    full_spacing = spacing_choice.spacing
    dims_choice = choose_dimensions(full_spacing, fingerprint.median_shape_at(full_spacing), dimensions)
    dims = dims_choice.dimensions
    comments["network.dimensions"] = dims_choice.reason
    crop_to_body, comments["preprocessing.crop_to_body"] = _body_crop(fingerprint, is_ct, dims, budget)
    sizes = fingerprint.cropped_to_body() if crop_to_body else fingerprint  # the shapes the network sees

    in_channels, num_classes = len(fingerprint.channels), max(fingerprint.labels) + 1
    resolution = choose_resolution(sizes, full_spacing, dims, budget, in_channels, num_classes)
    fit, median_shape = resolution.fit, resolution.median_shape
    comments["preprocessing.spacing"] = spacing_choice.reason + (f"; {resolution.reason}" if resolution.reason else "")
    batch, batch_reason = choose_batch_size(fit, fingerprint, median_shape, budget, in_channels, num_classes)
    comments.update(patch_comments(fit, median_shape[:dims], budget))
    comments["training.patch_size"] += f"; {resolution.context}"
    comments.update(network_comments(fit, resolution.spacing[:dims], budget))
    comments["training.batch_size"] = batch_reason
    comments["labels"] = label_summary(fingerprint)

    axes, mirror_reason = mirror_axes(fingerprint, dims)
    step = step_seconds(fit, batch, budget, in_channels, num_classes) if budget.on_cpu else None
    epochs, comments["training.epochs"] = choose_epochs(epochs, step, batch, budget)
    optimizer, comments["training.optimizer"] = choose_optimizer(budget)
    comments.update(standing_comments(budget, is_ct=is_ct, mirror_reason=mirror_reason, mirror_axes=axes))

    pipeline = _validated(
        lambda: Pipeline(
            name=name,
            description=(
                f"planned from {fingerprint.num_cases} {fingerprint.modality} case(s) for {describe_budget(budget)}"
                + (f", at {resolution.factor:.2f}x the full-resolution spacing" if resolution.factor > 1 else "")
            ),
            modality=fingerprint.modality,
            labels={number: Label(name=label) for number, label in sorted(fingerprint.labels.items())},
            preprocessing=Preprocessing(
                spacing=resolution.spacing,
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
                planned_step_seconds=round(step, 3) if step is not None else None,
            ),
            inference=Inference(
                overlap=0.5, mirror_axes=axes, postprocessing=Postprocessing(choose_on_validation=True)
            ),
        )
    )
    log.info(
        "planned %r for %s: %dD, patch %s, batch %d, spacing %s",
        name,
        describe_budget(budget),
        dims,
        list(fit.patch),
        batch,
        list(resolution.spacing),
    )
    return pipeline, {key: wrap(text) for key, text in comments.items()}


def _check_options(
    memory_gb: float, dimensions: object, epochs: int | None, device: str, cpu_threads: int, cpu_speed: float
) -> None:
    """Raise ConfigError naming the first option of :func:`plan_pipeline` with a bad value."""
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


def _validated(build: Callable[[], Pipeline]) -> Pipeline:
    """The pipeline ``build`` makes, checked by the schema and against the network's topology.

    Raises:
        ConfigError: e.g. a hand-made fingerprint with label 0 or an empty name.
    """
    try:
        pipeline = build()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"the planned pipeline is invalid: {problems}") from exc
    check_patch(pipeline.network, pipeline.training.patch_size)
    return pipeline


# -- normalisation and cropping ---------------------------------------------------------------


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


def _body_crop(fingerprint: Fingerprint, is_ct: bool, dims: int, budget: Budget) -> tuple[bool, str]:
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
