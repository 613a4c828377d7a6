"""How much memory one training step of a DynUNet takes: a calibrated, documented formula.

One forward and backward pass keeps every feature map of the network for the
backward pass, so memory grows with the *feature-map units*: for each level
``l``, the voxels of its feature map times its number of filters,

    units = sum_l  prod(patch / cumulative_stride_l) * filters_l

and the estimate for a batch of ``B`` patches is

    bytes = B * (BYTES_PER_UNIT * units + BYTES_PER_OUTPUT * voxels * classes * (1 + heads))
            + BYTES_PER_PARAMETER * parameters + FIXED_BYTES

The second term covers the outputs: MONAI's DynUNet upsamples every deep
supervision head to the full patch and the loss keeps their softmax.

Calibration (fp32, MONAI 1.6 DynUNet with instance norm, PyTorch 2.13 on CPU; peak
resident memory growth of one forward + backward pass with a cross-entropy loss
on every head, minus the gradients of the weights), fitted by least squares
over ten networks (3D patches 64x64x32 to 128x128x64 with batch 1-2, 4-30
classes, one anisotropic 160x160x24 network; 2D 256x256 x4 and 512x512 x2):
50.4 bytes per unit and 8.4 per output value; every prediction falls within 7%
of its measurement. Mixed precision (bfloat16 autocast) took 0.6x the fp32
memory in the same test, so these estimates are conservative for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from medseg.config.schema import Network, Pipeline

#: Bytes per feature-map unit (voxel x filter) over a forward + backward pass; fitted.
BYTES_PER_UNIT = 50.0
#: Bytes per output value (voxel x class x head); fitted.
BYTES_PER_OUTPUT = 8.0
#: fp32 weights, their gradients and SGD's momentum, plus one spare copy.
BYTES_PER_PARAMETER = 16.0
#: The framework itself (the measured CPU process held 0.35 GiB before the model).
FIXED_BYTES = 0.35 * 2**30

GIB = 2**30


def feature_map_units(patch_size: Sequence[int], strides: Sequence[Sequence[int]], filters: Sequence[int]) -> int:
    """Sum over levels of feature-map voxels times filters, for one patch."""
    shape = np.asarray(patch_size, dtype=np.float64)
    units = 0.0
    for stride, width in zip(strides, filters):
        shape = shape / np.asarray(stride, dtype=np.float64)
        units += float(np.prod(shape)) * width
    return round(units)


def count_parameters(network: Network, *, in_channels: int, num_classes: int) -> int:
    """Weights of the DynUNet that ``network`` describes, as :func:`medseg.models.networks.build_network` builds it.

    Convolutions (without bias), two affine normalisations per block, 1x1 output heads (with bias).
    """
    filters, kernels, strides = network.filters, network.kernel_sizes, network.strides
    total = 0
    for level, width in enumerate(filters):  # encoder: two convolutions per level
        before = in_channels if level == 0 else filters[level - 1]
        total += (before + width) * width * math.prod(kernels[level]) + 4 * width
    for level in range(len(filters) - 1):  # decoder: transposed conv, then two convolutions
        width = filters[level]
        total += filters[level + 1] * width * math.prod(strides[level + 1])
        total += (2 * width + width) * width * math.prod(kernels[level + 1]) + 4 * width
    heads = network.deep_supervision_heads if network.deep_supervision else 0
    total += sum((filters[level] + 1) * num_classes for level in range(heads + 1))  # 1x1 output convolutions
    return total


def estimate_memory_gb(
    network: Network, patch_size: Sequence[int], *, batch_size: int, in_channels: int, num_classes: int
) -> float:
    """Estimated memory (GiB) of one fp32 training step at this patch and batch size."""
    heads = network.deep_supervision_heads if network.deep_supervision else 0
    units = feature_map_units(patch_size, network.strides, network.filters)
    outputs = math.prod(patch_size) * num_classes * (1 + heads)
    per_patch = BYTES_PER_UNIT * units + BYTES_PER_OUTPUT * outputs
    parameters = count_parameters(network, in_channels=in_channels, num_classes=num_classes)
    return (batch_size * per_patch + BYTES_PER_PARAMETER * parameters + FIXED_BYTES) / GIB


def pipeline_memory_gb(pipeline: Pipeline) -> float:
    """:func:`estimate_memory_gb` for a pipeline's network, patch and batch size."""
    return estimate_memory_gb(
        pipeline.network,
        pipeline.training.patch_size,
        batch_size=pipeline.training.batch_size,
        in_channels=len(pipeline.preprocessing.channels),
        num_classes=pipeline.num_classes,
    )
