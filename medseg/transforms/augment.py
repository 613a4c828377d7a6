"""Training augmentation of single patches, in torch: spatial (rotation, scaling), flips, intensity.

Spatial augmentation works in patient millimetres, so a rotation of an
anisotropic grid is a true rotation: a draw gives a matrix ``M`` (in voxel
units) that maps an output voxel's offset from the patch centre to the
position, relative to the same centre, where it is sampled in the case. The
sampler cuts a region just large enough for that (:func:`region_half_extent`),
and :func:`warp` samples it: linearly for images, nearest for labels, so labels
keep their values. Random numbers come from the caller's generators only, so
a seed fixes everything.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from medseg.config.schema import Augmentation


def _rotation(axis: int, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    a, b = [x for x in range(3) if x != axis]
    matrix = np.eye(3)
    matrix[a, a], matrix[a, b], matrix[b, a], matrix[b, b] = c, -s, s, c
    return matrix


def _draw_around_one(rng: np.random.Generator, low: float, high: float) -> float:
    """Half the draws below 1 and half above, where the range allows (nnU-Net's way for scale and gamma)."""
    if low < 1.0 and (high <= 1.0 or rng.random() < 0.5):
        return float(rng.uniform(low, min(high, 1.0)))
    return float(rng.uniform(max(low, 1.0), high))


def draw_spatial(rng: np.random.Generator, settings: Augmentation, spacing: tuple[float, ...]) -> np.ndarray | None:
    """A random rotation and zoom for one patch, as a ``(d, d)`` matrix in voxel units; None for none.

    Rotation (each axis within ``rotation_degrees``; in 2D about the slice normal)
    and zoom (within ``scale``; above 1 magnifies) are each applied with
    ``spatial_probability``.

    Args:
        rng: the source of randomness.
        settings: the pipeline's augmentation.
        spacing: voxel size (mm) along the patch's axes (2 or 3 numbers).
    """
    dims = len(spacing)
    rotate = settings.rotation_degrees > 0 and rng.random() < settings.spatial_probability
    zoom = tuple(settings.scale) != (1.0, 1.0) and rng.random() < settings.spatial_probability
    if not rotate and not zoom:
        return None
    physical = np.eye(3)
    if rotate:
        limit = math.radians(settings.rotation_degrees)
        axes = (2,) if dims == 2 else (0, 1, 2)
        for axis in axes:
            physical = physical @ _rotation(axis, float(rng.uniform(-limit, limit)))
    if zoom:
        physical = physical / _draw_around_one(rng, *settings.scale)
    physical = physical[:dims, :dims]
    sizes = np.asarray(spacing, dtype=np.float64)
    return (physical * sizes[np.newaxis, :]) / sizes[:, np.newaxis]


def region_half_extent(matrix: np.ndarray, patch: tuple[int, ...]) -> np.ndarray:
    """How far (voxels) from the patch centre the warped patch reaches along each axis."""
    return np.abs(matrix) @ ((np.asarray(patch, dtype=np.float64) - 1) / 2)


def warp(
    image: torch.Tensor,
    label: torch.Tensor,
    matrix: np.ndarray,
    centre: np.ndarray,
    patch: tuple[int, ...],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample a ``(C, *region)`` image and ``(1, *region)`` label at the warped patch's voxels.

    Output voxel ``x`` (offset from the patch centre) is read at ``centre + matrix @ x``.

    Args:
        image: float32 region around the patch.
        label: its labels (any integer or float type).
        matrix: from :func:`draw_spatial`.
        centre: the patch centre, in the region's voxel indices (continuous).
        patch: the output size.

    Returns:
        ``(C, *patch)`` float32 image (linear) and ``(1, *patch)`` labels (nearest, the label's dtype).
    """
    region = np.asarray(image.shape[1:], dtype=np.float64)
    # align_corners=True: normalised -1/+1 are the outer voxel centres, in the output and in the region.
    to_region = 2.0 / np.maximum(region - 1, 1)
    linear = to_region[:, np.newaxis] * matrix * ((np.asarray(patch, dtype=np.float64) - 1) / 2)[np.newaxis, :]
    shift = to_region * np.asarray(centre, dtype=np.float64) - 1.0
    theta = np.concatenate([linear[::-1, ::-1], shift[::-1, np.newaxis]], axis=1)  # torch wants x, y(, z) order
    grid = torch.nn.functional.affine_grid(
        torch.from_numpy(theta.astype(np.float32))[np.newaxis], [1, 1, *patch], align_corners=True
    )
    sampled = torch.nn.functional.grid_sample(
        image[np.newaxis], grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )[0]
    labels = torch.nn.functional.grid_sample(
        label[np.newaxis].to(torch.float32), grid, mode="nearest", padding_mode="zeros", align_corners=True
    )[0]
    return sampled, labels.round().to(label.dtype)


def flip(
    rng: np.random.Generator, axes: list[int], image: torch.Tensor, label: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror along each of ``axes`` (spatial axes of the patch) with probability 0.5."""
    chosen = [axis + 1 for axis in axes if rng.random() < 0.5]
    if not chosen:
        return image, label
    return torch.flip(image, chosen), torch.flip(label, chosen)


def intensity(
    rng: np.random.Generator, generator: torch.Generator, settings: Augmentation, image: torch.Tensor
) -> torch.Tensor:
    """Gaussian noise, brightness, contrast and gamma, each with ``intensity_probability``.

    Noise has a standard deviation drawn from ``[0, gaussian_noise_std]``;
    brightness multiplies by ``1 +- brightness``; contrast scales about the
    channel mean by ``1 +- contrast`` and keeps the channel's range; gamma maps
    the channel's range to [0, 1], raises it to a power within ``gamma``, maps
    it back and restores the channel's mean and standard deviation (nnU-Net's
    ``retain_stats``).
    """
    p = settings.intensity_probability
    if settings.gaussian_noise_std > 0 and rng.random() < p:
        sigma = float(rng.uniform(0.0, settings.gaussian_noise_std))
        image = image + sigma * torch.randn(image.shape, generator=generator, dtype=image.dtype)
    if settings.brightness > 0 and rng.random() < p:
        image = image * float(rng.uniform(1 - settings.brightness, 1 + settings.brightness))
    spatial = tuple(range(1, image.dim()))
    if settings.contrast > 0 and rng.random() < p:
        factor = float(rng.uniform(max(0.0, 1 - settings.contrast), 1 + settings.contrast))
        mean = image.mean(dim=spatial, keepdim=True)
        low, high = image.amin(dim=spatial, keepdim=True), image.amax(dim=spatial, keepdim=True)
        image = torch.minimum(torch.maximum((image - mean) * factor + mean, low), high)
    if tuple(settings.gamma) != (1.0, 1.0) and rng.random() < p:
        gamma = _draw_around_one(rng, *settings.gamma)
        mean, std = image.mean(dim=spatial, keepdim=True), image.std(dim=spatial, keepdim=True)
        low, high = image.amin(dim=spatial, keepdim=True), image.amax(dim=spatial, keepdim=True)
        span = (high - low).clamp(min=1e-7)
        image = ((image - low) / span).pow(gamma) * span + low
        new_mean, new_std = image.mean(dim=spatial, keepdim=True), image.std(dim=spatial, keepdim=True)
        image = (image - new_mean) / new_std.clamp(min=1e-7) * std + mean
    return image
