"""Validation: predict whole prepared cases by sliding window, and score them with Dice.

Prediction runs on the prepared grid (the pipeline's spacing and normalisation):
a 3D network slides a patch-sized window over the volume, a 2D network does so
over each axial slice (the last axis, as the patch sampler cuts them), and
overlapping windows are blended with Gaussian weights, as nnU-Net does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from medseg.config.schema import Pipeline
from medseg.training.devices import autocast

#: 2D prediction: slices per forward pass (each still windowed to the patch size).
SLICES_PER_BATCH = 16


@torch.no_grad()
def predict_logits(
    network: torch.nn.Module, image: np.ndarray, pipeline: Pipeline, *, device: torch.device
) -> torch.Tensor:
    """Class scores ``(classes, I, J, K)`` (float32, on the CPU) for a prepared ``(C, I, J, K)`` image.

    The network must be in eval mode. On CUDA the forward passes run under autocast.
    """
    settings = pipeline.inference
    roi = list(pipeline.training.patch_size)

    def window(inputs: torch.Tensor) -> torch.Tensor:
        return sliding_window_inference(
            inputs.to(device),
            roi_size=roi,
            sw_batch_size=settings.batch_size,
            predictor=network,
            overlap=settings.overlap,
            mode="gaussian",
            device=torch.device("cpu"),
        ).float()

    volume = torch.from_numpy(np.array(image, dtype=np.float32))  # a writable copy (cached cases are read-only maps)
    with autocast(device):
        if pipeline.network.dimensions == 3:
            return window(volume[None])[0]
        slices = volume.permute(3, 0, 1, 2)  # (K, C, I, J): one 2D image per axial slice
        parts = [window(slices[start : start + SLICES_PER_BATCH]) for start in range(0, len(slices), SLICES_PER_BATCH)]
        return torch.cat(parts).permute(1, 2, 3, 0)  # back to (classes, I, J, K)


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
