"""How much of a scan a patch sees, and how coarse a grid may get before small labels vanish.

A U-Net tells classes apart by what its patch shows. When a budget (step time on
a CPU, memory on a GPU) forces a small patch at full resolution, two organs of the
same density on either side of the body look alike through it. The planner then
trades resolution for context, as nnU-Net's ``3d_lowres`` configuration does: a
coarser target spacing, so that the same number of voxels covers more millimetres.
This module measures both sides of the trade:

* :func:`coverage`: the share of the median image extent a patch covers, per axis
  and as their geometric mean (the edge of a cube of the same volume share);
* :func:`smallest_label`: the label of smallest typical volume per case, and its
  diameter as a sphere (mm): the grid may not get so coarse that it is only a few
  voxels across;
* :func:`coarser_spacing`: one step of coarsening, fine axes first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medseg.planning.fingerprint import Fingerprint

#: On a CPU, a patch should cover at least this share of the median image extent (geometric
#: mean over the network's axes: 0.5 is an eighth of the volume in 3D). The MONAI tutorial's
#: 96 x 96 x 48 patch covers about 0.6 of a 168 x 168 x 68 abdomen at its own spacing.
CPU_CONTEXT_SHARE = 0.5
#: On a GPU the rule only guards extreme budgets: nnU-Net's full-resolution patches cover
#: 0.25-0.6 of typical CT and are kept (its low-resolution cascade is not planned here).
GPU_CONTEXT_SHARE = 0.25
#: Coarsening stops before the smallest label is fewer than this many voxels across.
MIN_LABEL_VOXELS = 10.0
#: Coarsening stops at this many times the full-resolution finest spacing.
MAX_COARSENING = 4.0
#: Each step multiplies the spacing of the fine axes by this factor (nnU-Net's is 1.03; coarser
#: steps cost a little precision and keep planning fast).
COARSENING_STEP = 1.1


@dataclass(frozen=True)
class Coverage:
    """The share of the median image extent a patch covers.

    Attributes:
        per_axis: per network axis, patch mm / median image mm, at most 1.
        share: their geometric mean.
        patch_mm: the patch's extent per axis (mm).
        image_mm: the median image's extent per axis (mm).
    """

    per_axis: tuple[float, ...]
    share: float
    patch_mm: tuple[float, ...]
    image_mm: tuple[float, ...]


@dataclass(frozen=True)
class LabelSize:
    """The label of smallest typical volume: its number, name, volume per case (mL), sphere diameter (mm)."""

    number: int
    name: str
    millilitres: float
    diameter_mm: float


def coverage(patch: Sequence[int], spacing: Sequence[float], median_shape: Sequence[int]) -> Coverage:
    """The share of the median image (``median_shape`` voxels at ``spacing``) that ``patch`` covers."""
    patch_mm = tuple(float(p) * float(s) for p, s in zip(patch, spacing))
    image_mm = tuple(float(m) * float(s) for m, s in zip(median_shape, spacing))
    per_axis = tuple(min(1.0, p / i) for p, i in zip(patch_mm, image_mm))
    share = float(np.prod(per_axis)) ** (1.0 / len(per_axis))
    return Coverage(per_axis=per_axis, share=share, patch_mm=patch_mm, image_mm=image_mm)


def smallest_label(fingerprint: Fingerprint) -> LabelSize | None:
    """The label with the smallest mean volume over the cases that hold it (None if no label occurs).

    Voxels are counted on each case's own grid; they are turned into millilitres with
    the median voxel volume. A label made of several pieces per case (nodules) counts
    as one sphere of their total volume, so its diameter is an upper bound.
    """
    voxel_ml = float(np.prod(fingerprint.median_spacing)) / 1000.0
    sizes = [
        (fingerprint.label_voxels.get(k, 0) / fingerprint.label_cases[k] * voxel_ml, k)
        for k in fingerprint.labels
        if fingerprint.label_cases.get(k, 0) > 0 and fingerprint.label_voxels.get(k, 0) > 0
    ]
    if not sizes:
        return None
    millilitres, number = min(sizes)
    diameter = (6.0 * millilitres * 1000.0 / math.pi) ** (1.0 / 3.0)
    return LabelSize(number=number, name=fingerprint.labels[number], millilitres=millilitres, diameter_mm=diameter)


def coarser_spacing(full: Sequence[float], factor: float, dims: int) -> tuple[float, float, float]:
    """The full-resolution spacing coarsened by ``factor``, fine axes first.

    In 3D every axis becomes at least ``factor`` x the finest full-resolution spacing,
    so the in-plane axes of thick-slice data catch up with the slice axis before it
    coarsens too. A 2D network works on ``i, j`` slices: only those two coarsen, and
    the slices (``k``) are kept.
    """
    if dims == 2:
        coarse = [float(s) * factor if axis < 2 else float(s) for axis, s in enumerate(full)]
    else:
        finest = min(full)
        coarse = [max(float(s), factor * finest) for s in full]
    return tuple(round(s, 4) for s in coarse)  # type: ignore[return-value]


#: A label lies on one side along an axis when its centroid is at least this far from the middle
#: (as a fraction of the image's extent) ...
SIDE_OFFSET = 0.08
#: ... on the same side in at least this share of the cases that hold it ...
SIDE_AGREEMENT = 0.9
#: ... and at least this many cases hold it.
SIDE_MIN_CASES = 3

_AXES = "ijk"


def mirror_axes(fingerprint: Fingerprint, dims: int) -> tuple[list[int], str]:
    """The axes along which mirroring keeps images plausible, and why the others are left out.

    Flipping an image along an axis (augmentation in training, test-time mirroring at
    inference) teaches the network that the mirrored anatomy carries the same labels.
    That holds for a structure in the middle (a brain, a prostate) and fails for one that
    always lies on one side: a flipped abdomen shows the liver where the spleen belongs,
    and two organs of the same density told apart by their side become one class
    (TotalSegmentator trains without mirroring for this reason). An axis is left out
    when some label's centroid (from the fingerprint's ``label_positions``) is
    :data:`SIDE_OFFSET` or more from the middle, on the same side, in
    :data:`SIDE_AGREEMENT` of at least :data:`SIDE_MIN_CASES` cases. Fingerprints
    without positions keep every axis (nnU-Net's default).
    """
    kept, dropped = [], []
    for axis in range(dims):
        sided = []
        for number, found in sorted(fingerprint.label_positions.items()):
            if len(found) < SIDE_MIN_CASES:
                continue
            offsets = np.asarray([p[axis] for p in found]) - 0.5
            median = float(np.median(offsets))
            agree = float(np.mean(np.sign(offsets) == np.sign(median)))
            if abs(median) >= SIDE_OFFSET and agree >= SIDE_AGREEMENT:
                name = fingerprint.labels.get(number, str(number))
                sided.append(f"{name} at {0.5 + median:.2f} ({agree:.0%} of {len(found)} cases on that side)")
        if sided:
            dropped.append(f"{_AXES[axis]}: {', '.join(sided[:3])}{', ...' if len(sided) > 3 else ''}")
        else:
            kept.append(axis)
    if not fingerprint.label_positions:
        return kept, f"along all {dims} axes (the fingerprint has no label positions to check)"
    if not dropped:
        return kept, f"along all {dims} axes: no label lies consistently on one side of the image"
    return kept, (
        f"along {kept if kept else 'no axis'}; not along the axes where a label always lies on one side of the image "
        f"(its centroid as a fraction of the extent; a mirrored image would show it where it never is): "
        + "; ".join(dropped)
    )
