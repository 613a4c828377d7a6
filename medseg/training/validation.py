"""Validation: predict whole prepared cases by sliding window, and score them with Dice.

Prediction runs on the prepared grid (the pipeline's spacing and normalisation):
a 3D network slides a patch-sized window over the volume, a 2D network does so
over each axial slice (the last axis, as the patch sampler cuts them), and
overlapping windows are blended with Gaussian weights, as nnU-Net does. The
window is :class:`medseg.inference.window.SlidingWindow` (MONAI's positions and
weights), the same one ``medseg predict`` uses, without mirroring.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
import torch

from medseg.config.schema import Pipeline
from medseg.inference.postprocess import keep_largest_component
from medseg.inference.window import SlidingWindow, cpu_window_batch, plan_windows, slices_per_batch
from medseg.models.devices import autocast

#: Under a time limit, validations overlap their windows by at most this much (MONAI's default):
#: about a third of the windows of nnU-Net's 0.5 in 3D, for a score that ranks epochs the same way.
TIME_LIMITED_OVERLAP = 0.25


@torch.no_grad()
def predict_logits(
    network: torch.nn.Module,
    image: np.ndarray,
    pipeline: Pipeline,
    *,
    device: torch.device,
    overlap: float | None = None,
) -> torch.Tensor:
    """Class scores ``(classes, I, J, K)`` (float32, on the CPU) for a prepared ``(C, I, J, K)`` image.

    The network must be in eval mode. On CUDA the forward passes run under autocast.
    ``overlap`` replaces the pipeline's ``inference.overlap``.
    """
    window = SlidingWindow(
        network,
        roi=pipeline.training.patch_size,
        overlap=pipeline.inference.overlap if overlap is None else overlap,
        batch_size=window_batch(pipeline, device),
        device=device,
        accumulate_on=torch.device("cpu"),
    )
    return window.logits(np.asarray(image, dtype=np.float32))


def window_batch(pipeline: Pipeline, device: torch.device) -> int:
    """Windows per forward pass: the pipeline's, on the CPU raised for small windows (as ``medseg predict``)."""
    batch = pipeline.inference.batch_size
    return batch if device.type == "cuda" else cpu_window_batch(pipeline.training.patch_size, batch)


def validation_overlap(overlap: float) -> float:
    """The window overlap of validations under a time limit: the pipeline's, at most :data:`TIME_LIMITED_OVERLAP`."""
    return min(overlap, TIME_LIMITED_OVERLAP)


def window_count(
    shape: Sequence[int], pipeline: Pipeline, *, overlap: float | None = None, device: torch.device | None = None
) -> int:
    """The forward passes (of :func:`window_batch` windows) a validation of an image of ``shape`` runs."""
    patch = list(pipeline.training.patch_size)
    roi = patch if len(patch) == 3 else [*patch, 1]
    if overlap is None:
        overlap = validation_overlap(pipeline.inference.overlap)
    windows = plan_windows(shape, roi, overlap).count
    device = device or torch.device("cpu")
    per_pass = window_batch(pipeline, device) * (slices_per_batch(patch, device) if len(patch) == 2 else 1)
    return math.ceil(windows / per_pass)


@torch.no_grad()
def time_window(network: torch.nn.Module, pipeline: Pipeline, *, device: torch.device, repeats: int = 2) -> float:
    """Seconds of one forward pass of a validation window batch (the best of ``repeats``, after a warm-up).

    The network is put in eval mode for the timing and back in training mode after it;
    instance normalisation keeps no running statistics, so nothing it learns changes.
    """
    patch = list(pipeline.training.patch_size)
    batch = window_batch(pipeline, device) * (slices_per_batch(patch, device) if len(patch) == 2 else 1)
    channels = len(pipeline.preprocessing.channels)
    window = torch.zeros(batch, channels, *patch, device=device)
    was_training = network.training
    network.eval()
    best = math.inf
    try:
        with autocast(device):
            network(window)  # warm-up: allocations, kernel choice
            for _ in range(repeats):
                started = time.perf_counter()
                network(window)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                best = min(best, time.perf_counter() - started)
    finally:
        network.train(was_training)
    return best


def dice_per_label(prediction: np.ndarray, truth: np.ndarray, labels: Sequence[int]) -> list[float]:
    """Dice of each label between two label maps of one shape; NaN where both lack the label."""
    scores = []
    for label in labels:
        predicted, expected = prediction == label, truth == label
        total = int(predicted.sum()) + int(expected.sum())
        scores.append(2.0 * int(np.logical_and(predicted, expected).sum()) / total if total else math.nan)
    return scores


def largest_component_dice(prediction: np.ndarray, truth: np.ndarray, labels: Sequence[int]) -> list[float]:
    """:func:`dice_per_label` after keeping only the largest connected component of each label (a copy)."""
    kept = np.array(prediction)
    for label in labels:
        keep_largest_component(kept, int(label))
    return dice_per_label(kept, truth, labels)


def largest_component_labels(
    labels: Sequence[int], without: Sequence[float], with_largest: Sequence[float]
) -> tuple[list[int], str]:
    """The labels whose mean validation Dice rises when only their largest component is kept, and why.

    nnU-Net's rule (``determine_postprocessing``): a label gets the step when its mean Dice over
    the validation cases is strictly higher with it; a tie or a loss (a label of several true
    pieces, e.g. nodules) leaves the label as predicted.
    """
    chosen, notes = [], []
    for label, before, after in zip(labels, without, with_largest):
        if math.isnan(before) or math.isnan(after):
            continue
        if after > before:
            chosen.append(int(label))
        notes.append(f"{label}: {before:.4f} -> {after:.4f}")
    reason = (
        "chosen on the validation cases of the exported epoch (nnU-Net's rule: a label keeps only its largest "
        "component where that raises its mean validation Dice); Dice without -> with: " + ", ".join(notes)
    )
    return chosen, reason


def mean_ignoring_nan(values: Sequence[float]) -> float:
    """The mean of the values that are not NaN (NaN when none is)."""
    present = [v for v in values if not math.isnan(v)]
    return sum(present) / len(present) if present else math.nan
