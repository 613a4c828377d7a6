"""Read a DICOM series into a :class:`~medseg.volume.Volume`, under an explicit policy.

What a series cannot promise (an even grid, an untilted gantry) is never
silently papered over: by default an irregular series is refused with the
numbers, and the caller may instead ask for it to be resampled onto a regular
grid. What was tolerated is logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from medseg.errors import ConfigError, DicomError
from medseg.geometry import Geometry
from medseg.io.dicom.discovery import DicomScan, DicomSeries, scan
from medseg.io.dicom.pixels import read_stored_values, to_physical
from medseg.io.dicom.stack import (
    DUPLICATE_POSITIONS,
    GANTRY_TILT,
    MISSING_SLICES,
    SCATTERED_POSITIONS,
    UNEVEN_SPACING,
    StackLayout,
)
from medseg.volume import SourceSeries, Volume, VolumeKind

log = logging.getLogger(__name__)

IrregularPolicy = Literal["refuse", "resample"]
TiltPolicy = Literal["resample", "keep", "refuse"]


@dataclass(frozen=True)
class DicomReadOptions:
    """How to treat series that are not a plain regular stack.

    Attributes:
        irregular: missing slices or uneven spacing: ``"refuse"`` (default) or
            ``"resample"`` onto a regular grid at the most common step.
        tilt: gantry tilt: ``"resample"`` onto an orthogonal grid (default),
            ``"keep"`` the sheared grid as acquired (exact voxels; NIfTI holds it
            in the sform, NRRD/MHA cannot), or ``"refuse"``.
        workers: processes for decoding compressed data (default: all cores).
    """

    irregular: IrregularPolicy = "refuse"
    tilt: TiltPolicy = "resample"
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.irregular not in ("refuse", "resample"):
            raise ConfigError(f"irregular must be 'refuse' or 'resample', got {self.irregular!r}")
        if self.tilt not in ("resample", "keep", "refuse"):
            raise ConfigError(f"tilt must be 'resample', 'keep' or 'refuse', got {self.tilt!r}")


def read_series(
    series: DicomSeries,
    *,
    options: DicomReadOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Volume:
    """Decode one series into an image volume in physical units (e.g. HU).

    Raises:
        DicomError: the series cannot be trusted under ``options`` (the message
            says why, with the numbers, and which option would accept it), or a
            file cannot be decoded.
    """
    options = options or DicomReadOptions()
    layout = series.layout
    name = series.describe()
    codes = layout.problem_codes
    for code in (DUPLICATE_POSITIONS, SCATTERED_POSITIONS):
        if code in codes:
            raise DicomError(f"series {name} ({series.series_uid}): {_message(layout, code)}; cannot build a volume")
    irregular = [c for c in (MISSING_SLICES, UNEVEN_SPACING) if c in codes]
    if irregular and options.irregular == "refuse":
        raise DicomError(
            f"series {name} ({series.series_uid}): {_message(layout, irregular[0])}; "
            "refused (use --irregular resample to interpolate onto a regular grid)"
        )
    tilted = GANTRY_TILT in codes
    if tilted and options.tilt == "refuse":
        raise DicomError(
            f"series {name} ({series.series_uid}): {_message(layout, GANTRY_TILT)}; "
            "refused (use --tilt resample or --tilt keep)"
        )

    stored = read_stored_values(layout.frames, workers=options.workers, progress=progress)
    values = to_physical(stored, [f.slope for f in layout.frames], [f.intercept for f in layout.frames])
    geometry = layout.geometry
    resampled = bool(irregular) or (tilted and options.tilt == "resample")
    if resampled:
        values, geometry = _resample_to_regular(values, layout)
        for code in irregular + ([GANTRY_TILT] if tilted else []):
            log.warning("series %s: %s; resampled onto a regular grid", series.series_uid, _message(layout, code))
    elif tilted:
        log.warning("series %s: %s; kept as a sheared grid", series.series_uid, _message(layout, GANTRY_TILT))

    # (k, j, i) in memory -> (i, j, k) view: Fortran-ordered, as NIfTI stores it.
    array = values.transpose(2, 1, 0)
    header = series.header
    frames = layout.frames
    multiframe = frames[0].frame_index is not None
    # Per-slice references hold only while k still is the acquired slice order.
    per_slice = () if resampled else frames
    source = SourceSeries(
        modality=header.modality,
        study_instance_uid=header.study_instance_uid,
        series_instance_uid=header.series_instance_uid,
        series_number=header.series_number,
        series_description=header.series_description,
        sop_class_uid=header.sop_class_uid,
        sop_instance_uids=tuple(f.sop_instance_uid for f in per_slice),
        frame_numbers=tuple(f.frame_index + 1 for f in per_slice) if multiframe else None,  # type: ignore[operator]
        files=tuple(f.path for f in per_slice),
        resampled=resampled,
        units=header.units,
    )
    log.info(
        "read series %s: %d slices, %s %s",
        series.series_uid,
        len(frames),
        "x".join(map(str, geometry.shape)),
        array.dtype,
    )
    return Volume(array, geometry, kind=VolumeKind.IMAGE, source=source, path=os.path.dirname(frames[0].path))


def read_dicom(
    path: str | os.PathLike[str],
    *,
    series_uid: str | None = None,
    options: DicomReadOptions | None = None,
) -> Volume:
    """Read the one image series under ``path`` (or the one named by ``series_uid``).

    Localizers are left out. Raises :class:`DicomError` when there is no series,
    or several and none was chosen (the message lists them).
    """
    found = scan(path)
    candidates = [s for s in found.volumes() if series_uid is None or s.series_uid == series_uid]
    if len(candidates) != 1:
        raise DicomError(_choice_message(path, found, candidates, series_uid))
    return read_series(candidates[0], options=options)


def _choice_message(path: object, found: DicomScan, candidates: list[DicomSeries], series_uid: str | None) -> str:
    if not candidates:
        what = f"no image series with UID {series_uid}" if series_uid else "no image series"
        skipped = f" ({len(found.skipped)} file(s) skipped, e.g. {found.skipped[0].reason})" if found.skipped else ""
        return f"{path}: {what}{skipped}"
    listing = "; ".join(f"{s.describe()} [{s.series_uid}]" for s in candidates[:5])
    return f"{path}: {len(candidates)} image series found, choose one by UID: {listing}"


def _message(layout: StackLayout, code: str) -> str:
    return next(p.message for p in layout.problems if p.code == code)


def _resample_to_regular(values: np.ndarray, layout: StackLayout) -> tuple[np.ndarray, Geometry]:
    """Interpolate slices at arbitrary positions onto an orthogonal, evenly spaced grid.

    The new grid starts at the first slice, keeps its in-plane axes and spacing
    and steps along the slice normal by the most common slice step. Each new
    slice is linearly interpolated between the two acquired slices around it,
    each first shifted in-plane by its own offset (the gantry-tilt shear).
    Integer data stays integer (rounded); voxels outside the acquired slab take
    the series' minimum (air).
    """
    row, column, normal = layout.row_direction, layout.column_direction, layout.normal
    step = layout.nominal_step
    distances = layout.distances - layout.distances[0]
    positions = np.array([f.position for f in layout.frames], dtype=np.float64)
    offsets = positions - positions[0] - np.outer(distances, normal)
    spacing_row, spacing_col = layout.frames[0].pixel_spacing
    # In-plane shift of each acquired slice, in (row index, column index) units.
    shifts = np.stack([offsets @ column / spacing_row, offsets @ row / spacing_col], axis=1)
    count = int(round(distances[-1] / step)) + 1
    fill = float(values.min())
    integer = np.issubdtype(values.dtype, np.integer)
    out = np.empty((count, *values.shape[1:]), dtype=values.dtype)
    for k in range(count):
        target = k * step
        upper = int(np.clip(np.searchsorted(distances, target), 1, len(distances) - 1))
        lower = upper - 1
        gap = distances[upper] - distances[lower]
        weight = float(np.clip((target - distances[lower]) / gap, 0.0, 1.0))
        plane = (1 - weight) * _shifted(values[lower], shifts[lower], fill) if weight < 1 else 0.0
        if weight > 0:
            plane = plane + weight * _shifted(values[upper], shifts[upper], fill)
        out[k] = np.rint(plane) if integer else plane
    affine = np.eye(4)
    affine[:3, 0] = row * spacing_col
    affine[:3, 1] = column * spacing_row
    affine[:3, 2] = normal * step
    affine[:3, 3] = positions[0]
    geometry = Geometry((values.shape[2], values.shape[1], count), affine, layout.geometry.frame_of_reference_uid)
    return out, geometry


def _shifted(plane: np.ndarray, shift: np.ndarray, fill: float) -> np.ndarray:
    """The slice as seen from the target grid: the value at index ``x`` is the slice's at ``x - shift``."""
    if np.allclose(shift, 0, atol=1e-6):
        return plane.astype(np.float64)
    return ndimage.shift(plane.astype(np.float64), shift, order=1, mode="constant", cval=fill)
