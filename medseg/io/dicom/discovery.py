"""Find every image series in a folder tree.

Files are grouped by SeriesInstanceUID, then split where one UID holds several
stacks: by orientation, image size, pixel spacing, echo, temporal position or
stack, and by acquisition when that is what separates repeated positions.
Non-DICOM files and non-image objects are skipped and listed.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import InputError
from medseg.geometry import Geometry
from medseg.io.dicom.headers import Frame, SeriesHeader, SkippedFile, read_frames
from medseg.io.dicom.stack import MISSING_UID, Problem, StackLayout, analyze_stack
from medseg.parallel import default_workers, ordered_map

ProgressCallback = Callable[[int, int], None]

# Below this many files, forking workers costs more than it saves.
_MIN_FILES_FOR_POOL = 64


@dataclass(frozen=True)
class DicomSeries:
    """One stack of parallel slices, ready to be read as a :class:`~medseg.volume.Volume`."""

    header: SeriesHeader
    layout: StackLayout
    part: str | None = None  # what sets this stack apart when its UID holds several, e.g. "echo 2"

    @property
    def frames(self) -> tuple[Frame, ...]:
        return self.layout.frames

    @property
    def geometry(self) -> Geometry:
        """The grid as acquired (sheared for a tilted gantry; nominal step if irregular)."""
        return self.layout.geometry

    @property
    def problems(self) -> tuple[Problem, ...]:
        if self.header.series_instance_uid is None:
            blank = Problem(
                MISSING_UID,
                "no SeriesInstanceUID (anonymised?): slices grouped by folder, frame of reference and description",
            )
            return (blank, *self.layout.problems)
        return self.layout.problems

    @property
    def series_uid(self) -> str | None:
        """SeriesInstanceUID; None where an anonymiser blanked it."""
        return self.header.series_instance_uid

    @property
    def is_localizer(self) -> bool:
        return self.header.is_localizer

    @property
    def files(self) -> tuple[str, ...]:
        """Distinct files in slice order."""
        return tuple(dict.fromkeys(f.path for f in self.frames))

    @property
    def transfer_syntaxes(self) -> tuple[str, ...]:
        """Distinct transfer syntaxes of the files (an archive may have re-encoded only some)."""
        return tuple(dict.fromkeys(f.header.transfer_syntax_uid for f in self.frames))

    def describe(self) -> str:
        """A short human name: number, description and part."""
        bits = [f"#{self.header.series_number}" if self.header.series_number is not None else None]
        bits += [self.header.series_description, self.part]
        return " ".join(b for b in bits if b) or self.series_uid or self.header.group_key

    def to_dict(self) -> dict[str, Any]:
        """The series as plain JSON-able data (what ``medseg info --json`` prints)."""
        return {
            "series_uid": self.series_uid,
            "study_uid": self.header.study_instance_uid,
            "frame_of_reference_uid": self.header.frame_of_reference_uid,
            "modality": self.header.modality,
            "series_number": self.header.series_number,
            "description": self.header.series_description,
            "part": self.part,
            "sop_class_uid": self.header.sop_class_uid,
            "transfer_syntax_uid": self.header.transfer_syntax_uid,
            "image_type": list(self.header.image_type),
            "units": self.header.units,
            "num_slices": len(self.frames),
            "num_files": len(self.files),
            **self.geometry.to_dict(),
            "is_localizer": self.is_localizer,
            "problems": [{"code": p.code, "message": p.message} for p in self.problems],
            "first_file": self.frames[0].path,
        }


@dataclass(frozen=True)
class DicomScan:
    """What a folder tree holds: image series and the files that were skipped."""

    series: tuple[DicomSeries, ...]
    skipped: tuple[SkippedFile, ...] = field(default=())

    def volumes(self, *, include_localizers: bool = False) -> tuple[DicomSeries, ...]:
        """The series worth reading as volumes (localizers left out by default)."""
        return tuple(s for s in self.series if include_localizers or not s.is_localizer)


def find_files(path: str | os.PathLike[str]) -> list[str]:
    """Every regular file under ``path`` (or ``path`` itself), sorted, hidden ones left out."""
    root = Path(path)
    if root.is_file():
        return [str(root)]
    if not root.is_dir():
        raise InputError(f"{root}: no such file or folder")
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(folder, f) for f in sorted(files) if not f.startswith("."))
    return found


def scan(
    path: str | os.PathLike[str],
    *,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
) -> DicomScan:
    """Discover every DICOM image series under ``path``.

    Args:
        path: a folder (searched recursively) or a single file.
        workers: processes for reading headers (default: one per core; 1 for none).
        progress: called as ``progress(done, total)`` while headers are read.

    Raises:
        InputError: ``path`` does not exist.
    """
    return scan_files(find_files(path), workers=workers, progress=progress)


def scan_files(
    files: Sequence[str], *, workers: int | None = None, progress: ProgressCallback | None = None
) -> DicomScan:
    """Like :func:`scan`, for an explicit list of files; large lists are read by one process per core."""
    frames: list[Frame] = []
    skipped: list[SkippedFile] = []
    workers = workers if workers is not None else default_workers()
    results = ordered_map(read_frames, files, workers=workers, min_items=_MIN_FILES_FOR_POOL)
    for done, result in enumerate(results, start=1):
        if isinstance(result, SkippedFile):
            skipped.append(result)
        else:
            frames.extend(result)
        if progress is not None:
            progress(done, len(files))
    return DicomScan(series=tuple(group_series(frames)), skipped=tuple(skipped))


def group_series(frames: Iterable[Frame]) -> list[DicomSeries]:
    """Split frames into stacks and analyse each; ordered by series number and UID."""
    by_uid: dict[str, list[Frame]] = defaultdict(list)
    for frame in frames:
        by_uid[frame.header.group_key].append(frame)
    result: list[DicomSeries] = []
    for uid_frames in by_uid.values():
        stacks = _split(uid_frames)
        parts = _part_names(stacks)
        for stack, part in zip(stacks, parts):
            layout = analyze_stack(stack)
            result.append(DicomSeries(header=layout.frames[0].header, layout=layout, part=part))
    result.sort(
        key=lambda s: (s.header.series_number is None, s.header.series_number or 0, s.header.group_key, s.part or "")
    )
    return result


# Frame attributes that split one series UID into several stacks, with how a part is named.
_SPLITTERS: tuple[tuple[str, Callable[[Frame], Any]], ...] = (
    ("localizer", lambda f: f.header.is_localizer),
    ("size", lambda f: (f.columns, f.rows)),
    ("spacing", lambda f: tuple(round(v, 4) for v in f.pixel_spacing)),
    ("echo", lambda f: f.echo),
    ("time", lambda f: f.temporal_index),
    ("stack", lambda f: f.stack_id),
)


def _split(frames: Sequence[Frame]) -> list[list[Frame]]:
    groups: dict[tuple[Any, ...], list[Frame]] = defaultdict(list)
    orientations: list[np.ndarray] = []
    for frame in frames:
        key = tuple(get(frame) for _, get in _SPLITTERS) + (_orientation_bucket(frame, orientations),)
        groups[key].append(frame)
    stacks = []
    for group in groups.values():
        stacks.extend(_split_by_acquisition(group))
    return stacks


def _orientation_bucket(frame: Frame, known: list[np.ndarray]) -> int:
    """Index of the orientation this frame shares (within 1e-3) with earlier frames."""
    orientation = np.asarray(frame.orientation)
    for index, other in enumerate(known):
        if np.max(np.abs(orientation - other)) < 1e-3:
            return index
    known.append(orientation)
    return len(known) - 1


def _split_by_acquisition(frames: list[Frame]) -> list[list[Frame]]:
    """Split by AcquisitionNumber only when that is what separates repeated positions.

    Some scanners number every slice as its own acquisition; splitting on it
    blindly would shatter a volume into single slices.
    """
    if not _has_repeated_positions(frames):
        return [frames]
    by_acquisition: dict[int | None, list[Frame]] = defaultdict(list)
    for frame in frames:
        by_acquisition[frame.acquisition_number].append(frame)
    if len(by_acquisition) > 1 and not any(_has_repeated_positions(g) for g in by_acquisition.values()):
        return [by_acquisition[k] for k in sorted(by_acquisition, key=lambda a: (a is None, a or 0))]
    return [frames]


def _has_repeated_positions(frames: Sequence[Frame]) -> bool:
    seen = set()
    for frame in frames:
        key = tuple(round(v, 2) for v in frame.position)
        if key in seen:
            return True
        seen.add(key)
    return False


def _part_names(stacks: list[list[Frame]]) -> list[str | None]:
    """Name each stack by the attributes that differ between the stacks of one UID."""
    if len(stacks) == 1:
        return [None]
    names = []
    for index, stack in enumerate(stacks, start=1):
        first = stack[0]
        bits = []
        if len({s[0].acquisition_number for s in stacks}) > 1:
            bits.append(f"acq {first.acquisition_number}")
        if len({s[0].echo for s in stacks}) > 1:
            bits.append(f"echo {first.echo:g}" if first.echo is not None else "no echo")
        if len({s[0].temporal_index for s in stacks}) > 1:
            bits.append(f"time {first.temporal_index}")
        if first.header.is_localizer and not all(s[0].header.is_localizer for s in stacks):
            bits.append("localizer")
        names.append(" ".join(bits) if bits else f"part {index}")
    return names

