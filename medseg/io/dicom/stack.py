"""The geometry of a stack of parallel slices, and what is wrong with it.

Slices are ordered by their position along the slice normal (never by file
name or InstanceNumber). The stack is then checked for duplicate positions,
missing slices, uneven spacing, gantry tilt and positions off a line; each
finding is a :class:`Problem` carrying the numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medseg.geometry import Geometry
from medseg.io.dicom.headers import Frame

# Problem codes. The first four can be repaired by resampling onto a regular grid.
MISSING_SLICES = "missing_slices"
UNEVEN_SPACING = "uneven_spacing"
GANTRY_TILT = "gantry_tilt"
DUPLICATE_POSITIONS = "duplicate_positions"
DUPLICATE_FILES = "duplicate_files"
SCATTERED_POSITIONS = "scattered_positions"
SINGLE_SLICE = "single_slice"
VARYING_RESCALE = "varying_rescale"
MISSING_UID = "missing_series_uid"


@dataclass(frozen=True)
class Problem:
    """Something about a series a user should know before trusting it."""

    code: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class StackLayout:
    """Slices in order, where they lie, and the grid they span as acquired."""

    frames: tuple[Frame, ...]
    distances: np.ndarray  # mm along the slice normal, ascending, one per frame
    geometry: Geometry  # as acquired: k step is the mean step; sheared if the gantry was tilted
    nominal_step: float  # the most common slice step in mm (median)
    row_direction: np.ndarray
    column_direction: np.ndarray
    normal: np.ndarray
    problems: tuple[Problem, ...]

    @property
    def problem_codes(self) -> set[str]:
        return {p.code for p in self.problems}


def analyze_stack(frames: Sequence[Frame]) -> StackLayout:
    """Order frames along the slice normal and check the spacing between them."""
    first = frames[0]
    row = _unit(first.orientation[:3])
    column = _unit(first.orientation[3:])
    normal = _unit(np.cross(row, column))
    positions = np.array([f.position for f in frames], dtype=np.float64)
    distances = positions @ normal
    order = np.argsort(distances, kind="stable")
    ordered = [frames[i] for i in order]
    positions, distances = positions[order], distances[order]
    problems: list[Problem] = []

    # The same instance found twice (a copied file) is harmless: keep one.
    seen: dict[tuple[str, int | None], int] = {}
    keep = []
    for index, frame in enumerate(ordered):
        key = (frame.sop_instance_uid or frame.path, frame.frame_index)
        if key in seen:
            continue
        seen[key] = index
        keep.append(index)
    if len(keep) < len(ordered):
        dropped = len(ordered) - len(keep)
        problems.append(Problem(DUPLICATE_FILES, f"{dropped} file(s) repeat an instance already read; kept one copy"))
        ordered = [ordered[i] for i in keep]
        positions, distances = positions[keep], distances[keep]

    spacing_row, spacing_col = first.pixel_spacing
    n = len(ordered)
    if n == 1:
        step = first.slice_thickness or 1.0
        problems.append(Problem(SINGLE_SLICE, f"a single slice; its thickness {step:g} mm is used as k spacing"))
        stack_vector = normal * step
        nominal = step
    else:
        steps = np.diff(distances)
        duplicates = int(np.sum(steps < 1e-3))
        if duplicates:
            at = distances[1:][steps < 1e-3][0]
            problems.append(
                Problem(
                    DUPLICATE_POSITIONS,
                    f"{duplicates} slice(s) share a position with another slice (first at {at:.3f} mm along "
                    f"the normal); the series mixes several stacks or has repeated slices",
                )
            )
        distinct = steps[steps >= 1e-3]
        nominal = float(np.median(distinct)) if distinct.size else 1.0
        tolerance = max(0.01, 0.01 * nominal)
        problems.extend(_spacing_problems(distinct, nominal, tolerance))
        irregular = any(p.code in (MISSING_SLICES, UNEVEN_SPACING) for p in problems)
        total = positions[-1] - positions[0]
        along = float(total @ normal)
        if along > 0:
            problems.extend(_tilt_problems(positions, total, along, normal, nominal, tolerance))
            # Regular stacks use the mean step (exact to the last digit of the positions).
            stack_vector = total / along * (nominal if irregular else along / (n - 1))
        else:
            stack_vector = normal * nominal
    affine = np.eye(4)
    affine[:3, 0] = row * spacing_col
    affine[:3, 1] = column * spacing_row
    affine[:3, 2] = stack_vector
    affine[:3, 3] = positions[0]
    geometry = Geometry(
        (first.columns, first.rows, n), affine, frame_of_reference_uid=first.header.frame_of_reference_uid
    )
    if len({(f.slope, f.intercept) for f in ordered}) > 1:
        problems.append(Problem(VARYING_RESCALE, "rescale slope/intercept vary between slices; values become float"))
    return StackLayout(
        frames=tuple(ordered),
        distances=distances,
        geometry=geometry,
        nominal_step=nominal,
        row_direction=row,
        column_direction=column,
        normal=normal,
        problems=tuple(problems),
    )


def _spacing_problems(steps: np.ndarray, nominal: float, tolerance: float) -> list[Problem]:
    multiples = np.rint(steps / nominal)
    is_gap = (multiples >= 2) & (np.abs(steps - multiples * nominal) <= tolerance * multiples)
    off = np.abs(steps - nominal) > tolerance
    problems = []
    if np.any(is_gap):
        missing = int(np.sum(multiples[is_gap] - 1))
        largest = float(np.max(steps[is_gap]))
        problems.append(
            Problem(
                MISSING_SLICES,
                f"{missing} slice(s) missing: {int(np.sum(is_gap))} gap(s) up to {largest:.3g} mm "
                f"in a stack spaced {nominal:.3g} mm",
            )
        )
    if np.any(off & ~is_gap):
        uneven = steps[off & ~is_gap]
        problems.append(
            Problem(
                UNEVEN_SPACING,
                f"uneven slice spacing: {uneven.size} step(s) differ from {nominal:.4g} mm "
                f"(range {float(np.min(steps)):.4g} to {float(np.max(steps)):.4g} mm)",
            )
        )
    return problems


def _tilt_problems(
    positions: np.ndarray, total: np.ndarray, along: float, normal: np.ndarray, nominal: float, tolerance: float
) -> list[Problem]:
    problems = []
    in_plane = total - along * normal
    shift = float(np.linalg.norm(in_plane))
    if shift > tolerance:
        angle = math.degrees(math.atan2(shift, along))
        per_slice = shift / along * nominal
        problems.append(
            Problem(
                GANTRY_TILT,
                f"gantry tilt of {angle:.2f} degrees: slices shift {per_slice:.3g} mm in-plane per "
                f"{nominal:.3g} mm step",
            )
        )
    # Every position must lie on the line from the first to the last.
    t = (positions - positions[0]) @ normal / along
    off_line = np.linalg.norm(positions - positions[0] - np.outer(t, total), axis=1)
    worst = float(np.max(off_line))
    if worst > max(tolerance, 0.05):
        problems.append(
            Problem(
                SCATTERED_POSITIONS,
                f"slice positions do not lie on a line: up to {worst:.3g} mm off (not one stack)",
            )
        )
    return problems


def _unit(vector: Sequence[float]) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float64)
    norm = float(np.linalg.norm(v))
    if norm < 1e-6:
        raise ValueError(f"zero-length direction {list(v)}")
    return v / norm
