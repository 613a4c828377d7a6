"""The grid a model works on: target spacing, and 2D or 3D.

Each choice comes with a sentence that explains it with the dataset's numbers;
the planner writes it above the key in the pipeline YAML.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from medseg.planning.fingerprint import Fingerprint

#: An axis this many times coarser than the others (and with this many times fewer
#: voxels) is anisotropic: its target spacing is a low percentile, not the median (nnU-Net's 3).
ANISOTROPY_THRESHOLD = 3.0
#: Percentile of the anisotropic axis's spacings used as its target (nnU-Net's 10).
ANISOTROPIC_PERCENTILE = 10.0
#: Above this ratio of coarsest to finest target spacing (slices along k), "auto" plans 2D.
TWO_D_ANISOTROPY = 6.0

_AXES = "ijk"


@dataclass(frozen=True)
class SpacingChoice:
    """The target spacing and why."""

    spacing: tuple[float, float, float]
    reason: str


@dataclass(frozen=True)
class DimensionChoice:
    """2D or 3D, and why."""

    dimensions: Literal[2, 3]
    reason: str


def choose_spacing(fingerprint: Fingerprint) -> SpacingChoice:
    """The median spacing, except an anisotropic axis, which takes its 10th percentile.

    An axis counts as anisotropic (nnU-Net's rule) when its median spacing is
    more than :data:`ANISOTROPY_THRESHOLD` times the coarser of the other two
    *and* it has that many times fewer voxels than the smaller of them. Thin-slice
    cases then keep more of their slices (resampling 2 mm slices to a 5 mm median
    would discard detail that cannot be interpolated back), but never finer than
    the other axes.
    """
    spacings = np.asarray(fingerprint.spacings, dtype=np.float64)
    median = np.median(spacings, axis=0)
    target = median.copy()
    n = fingerprint.num_cases
    text = f"median spacing of {n} case(s) is {_mm(median)} mm (i x j x k)"
    sizes = np.median(np.asarray(fingerprint.shapes, dtype=np.float64), axis=0)
    worst = int(np.argmax(median))
    others = [a for a in range(3) if a != worst]
    coarser_other = max(median[a] for a in others)
    aniso_spacing = median[worst] > ANISOTROPY_THRESHOLD * coarser_other
    aniso_voxels = sizes[worst] * ANISOTROPY_THRESHOLD < min(sizes[a] for a in others)
    if aniso_spacing and aniso_voxels:
        low = float(np.percentile(spacings[:, worst], ANISOTROPIC_PERCENTILE))
        target[worst] = max(low, coarser_other)
        raised = f", raised to the other axes' {coarser_other:.3g} mm" if low < coarser_other else ""
        text += (
            f"; {_AXES[worst]} is {median[worst] / coarser_other:.1f}x coarser than the others and has "
            f"{sizes[worst]:.0f} vs {min(sizes[a] for a in others):.0f} voxels, so its target is the "
            f"{ANISOTROPIC_PERCENTILE:.0f}th percentile of its spacings, {low:.3g} mm{raised}: thin-slice cases "
            f"keep detail that resampling to the median would lose"
        )
    elif aniso_spacing:
        text += (
            f"; used as the target: {_AXES[worst]} is {median[worst] / coarser_other:.1f}x coarser than the others "
            f"but has enough voxels ({sizes[worst]:.0f} vs {min(sizes[a] for a in others):.0f})"
        )
    else:
        text += f"; used as the target (no axis is over {ANISOTROPY_THRESHOLD:g}x coarser than the others)"
    spacing = tuple(round(float(v), 4) for v in target)
    return SpacingChoice(spacing=spacing, reason=text)  # type: ignore[arg-type]


def choose_dimensions(
    spacing: tuple[float, float, float], median_shape: tuple[int, int, int], requested: Literal["auto", 2, 3]
) -> DimensionChoice:
    """3D, unless requested otherwise or the slices (along k) are very thick or single.

    A 2D network works on ``i, j`` slices along ``k``. "auto" chooses it when the
    median shape has one slice, or when ``k`` is the coarsest axis and more than
    :data:`TWO_D_ANISOTROPY` times coarser than the finest: a 3D U-Net would then
    only convolve within slices for its first levels anyway.
    """
    ratio = max(spacing) / min(spacing)
    coarsest = int(np.argmax(spacing))
    numbers = f"target spacing {_mm(spacing)} mm: coarsest/finest = {ratio:.1f}"
    if requested in (2, 3):
        reason = f"{requested}D as requested ({numbers})"
        if requested == 2 and coarsest != 2 and ratio > ANISOTROPY_THRESHOLD:
            reason += f"; note: 2D slices along k, but the coarse axis is {_AXES[coarsest]}"
        return DimensionChoice(dimensions=requested, reason=reason)
    if median_shape[2] == 1:
        return DimensionChoice(dimensions=2, reason="2D: the images are single slices (median k size is 1)")
    if ratio > TWO_D_ANISOTROPY and coarsest == 2:
        return DimensionChoice(
            dimensions=2,
            reason=f"2D (slice by slice along k): {numbers} > {TWO_D_ANISOTROPY:g}, too anisotropic for a 3D U-Net",
        )
    reason = f"3D: {numbers}"
    if ratio > TWO_D_ANISOTROPY:
        reason += f" > {TWO_D_ANISOTROPY:g}, but the coarse axis is {_AXES[coarsest]}, not the slice axis k"
    else:
        reason += f" <= {TWO_D_ANISOTROPY:g}"
    return DimensionChoice(dimensions=3, reason=reason)


def _mm(values: object) -> str:
    return " x ".join(f"{float(v):.3g}" for v in values)  # type: ignore[attr-defined]
