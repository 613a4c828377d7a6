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
from collections.abc import Sequence

import numpy as np
import torch

from medseg.config.schema import Pipeline
from medseg.inference.window import SlidingWindow


@torch.no_grad()
def predict_logits(
    network: torch.nn.Module, image: np.ndarray, pipeline: Pipeline, *, device: torch.device
) -> torch.Tensor:
    """Class scores ``(classes, I, J, K)`` (float32, on the CPU) for a prepared ``(C, I, J, K)`` image.

    The network must be in eval mode. On CUDA the forward passes run under autocast.
    """
    settings = pipeline.inference
    window = SlidingWindow(
        network,
        roi=pipeline.training.patch_size,
        overlap=settings.overlap,
        batch_size=settings.batch_size,
        device=device,
        accumulate_on=torch.device("cpu"),
    )
    return window.logits(np.asarray(image, dtype=np.float32))


def dice_per_label(prediction: np.ndarray, truth: np.ndarray, labels: Sequence[int]) -> list[float]:
    """Dice of each label between two label maps of one shape; NaN where both lack the label."""
    scores = []
    for label in labels:
        predicted, expected = prediction == label, truth == label
        total = int(predicted.sum()) + int(expected.sum())
        scores.append(2.0 * int(np.logical_and(predicted, expected).sum()) / total if total else math.nan)
    return scores


def mean_ignoring_nan(values: Sequence[float]) -> float:
    """The mean of the values that are not NaN (NaN when none is)."""
    present = [v for v in values if not math.isnan(v)]
    return sum(present) / len(present) if present else math.nan
