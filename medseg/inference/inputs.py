"""What ``medseg predict`` segments: the cases found in its inputs, each with its output name.

An input is a NIfTI/NRRD/MHA file, a folder of them, or a DICOM file, folder or
tree (every image series found by :func:`medseg.io.dicom.scan_files`; localizers
are left out). Each case gets a stable ``key`` (its path, plus the series UID for
DICOM) that sharding and resuming rely on, and an output ``name``:

* an image file ``<case>_0000.nii.gz`` (nnU-Net's channel suffix) or ``<case>.nii.gz``
  is case ``<case>``; with a multi-channel model, the files ``<case>_0000``,
  ``<case>_0001``, ... of one folder make one case;
* a DICOM series is named after the folder holding its files, plus its series
  number (and description) when that folder holds several series; a short hash of
  the series UID settles any remaining clash. Names pass through
  :func:`medseg.io.files.safe_name`, so no tag value can lead out of the output folder.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medseg.errors import ConfigError, InputError
from medseg.io import image_format
from medseg.io.dicom import DicomScan, DicomSeries, find_files, scan_files
from medseg.io.files import safe_name
from medseg.io.itk import ITK_SUFFIXES
from medseg.io.nifti import NIFTI_SUFFIXES

_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class Case:
    """One thing to segment.

    Attributes:
        key: stable identity (input path, plus the series UID for DICOM).
        name: the output name (a file stem or a folder name), safe for the file system.
        files: the image files (one per channel), or the DICOM series' files.
        series: the DICOM series, for DICOM inputs.
    """

    key: str
    name: str
    files: tuple[str, ...]
    series: DicomSeries | None = None

    @property
    def is_dicom(self) -> bool:
        return self.series is not None

    @property
    def series_uid(self) -> str | None:
        return None if self.series is None else self.series.series_uid

    @property
    def input_path(self) -> str:
        """What the manifest shows as the input: the image file, or the series' folder."""
        if self.series is None:
            return self.files[0]
        return os.path.commonpath([os.path.dirname(f) for f in self.files]) or "."


@dataclass
class CaseList:
    """The cases of a run, plus what was found and left out."""

    cases: list[Case] = field(default_factory=list)
    skipped_files: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    skipped_series: list[tuple[DicomSeries, str]] = field(default_factory=list)  # (series, reason)


def collect_cases(
    inputs: Sequence[str | os.PathLike[str]],
    *,
    channels: int = 1,
    include_localizers: bool = False,
    exclude: str | os.PathLike[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CaseList:
    """Find every case in ``inputs``, sorted by key.

    Args:
        inputs: files and folders, as given on the command line.
        channels: input channels the model takes; more than one groups image files
            by their ``_NNNN`` channel suffix.
        include_localizers: also segment localizer/scout series.
        exclude: a folder whose files are never inputs (the output folder, when it lies
            inside an input folder, so that a rerun does not segment its own results).
        progress: ``(files_read, files_total)`` while DICOM headers are scanned.

    Raises:
        InputError: an input does not exist, or a multi-channel case lacks a channel.
    """
    found = CaseList()
    image_files: list[str] = []
    other_files: list[str] = []
    for given in inputs:
        path = Path(given)
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        for name in find_files(path):
            (image_files if image_format(name) else other_files).append(name)
    excluded = None if exclude is None else os.path.abspath(exclude) + os.sep
    image_files = _absolute(image_files, excluded)
    other_files = _absolute(other_files, excluded)
    found.cases.extend(_image_cases(image_files, channels))
    if other_files:
        scanned: DicomScan = scan_files(other_files, progress=progress)
        found.skipped_files.extend((s.path, s.reason) for s in scanned.skipped)
        series = []
        for s in scanned.series:
            if s.is_localizer and not include_localizers:
                found.skipped_series.append((s, "localizer"))
            else:
                series.append(s)
        found.cases.extend(_series_cases(series))
    found.cases.sort(key=lambda case: case.key)
    _make_names_unique(found.cases)
    return found


def case_stem(path: str | os.PathLike[str]) -> str:
    """A file's name without its image extension (``.nii.gz``, ``.nrrd``, ...)."""
    name = os.path.basename(os.fspath(path))
    for suffix in sorted(NIFTI_SUFFIXES + ITK_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def split_channel(stem: str) -> tuple[str, int | None]:
    """``"case_0001"`` -> ``("case", 1)``; a stem without the suffix -> ``(stem, None)``."""
    match = _CHANNEL_SUFFIX.match(stem)
    if match is None:
        return stem, None
    return match["case"], int(match["channel"])


def select_shard(cases: Sequence[Case], shard: tuple[int, int] | None) -> list[Case]:
    """The cases of shard ``(index, count)`` (1-based index): every count-th case by key."""
    if shard is None:
        return list(cases)
    index, count = shard
    return [case for position, case in enumerate(cases) if position % count == index - 1]


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/8"`` -> ``(2, 8)``; the index counts from 1.

    Raises:
        ConfigError: not ``I/N`` with ``1 <= I <= N``.
    """
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None or not 1 <= int(match[1]) <= int(match[2]):
        raise ConfigError(f"--shard must be I/N with 1 <= I <= N (e.g. 1/4), got {text!r}")
    return int(match[1]), int(match[2])


def shard_from_environment(environ: dict[str, str] | None = None) -> tuple[int, int] | None:
    """The shard of a SLURM job array task (``SLURM_ARRAY_TASK_ID`` / ``_COUNT`` / ``_MIN``), if any.

    Raises:
        ConfigError: the variables are not numbers, or the task lies outside the array.
    """
    env = os.environ if environ is None else environ
    task, count = env.get("SLURM_ARRAY_TASK_ID"), env.get("SLURM_ARRAY_TASK_COUNT")
    if not task or not count:
        return None
    try:
        index = int(task) - int(env.get("SLURM_ARRAY_TASK_MIN", "0")) + 1
        total = int(count)
    except ValueError:
        raise ConfigError(f"SLURM_ARRAY_TASK_ID={task!r} / SLURM_ARRAY_TASK_COUNT={count!r} are not numbers") from None
    if not 1 <= index <= total:
        raise ConfigError(
            f"SLURM array task {task} is outside the array's {total} tasks (set SLURM_ARRAY_TASK_MIN or use --shard)"
        )
    return index, total


def _absolute(files: list[str], excluded: str | None) -> list[str]:
    paths = dict.fromkeys(os.path.abspath(f) for f in files)
    return sorted(p for p in paths if excluded is None or not p.startswith(excluded))


def _image_cases(files: list[str], channels: int) -> list[Case]:
    if channels <= 1:
        cases = []
        for f in files:
            case, _ = split_channel(case_stem(f))
            cases.append(Case(key=f, name=safe_name(case), files=(f,)))
        return cases
    groups: dict[tuple[str, str], dict[int, str]] = {}
    for f in files:
        case, channel = split_channel(case_stem(f))
        if channel is None:
            raise InputError(
                f"{f}: the model takes {channels} channels; name each channel's file <case>_0000, <case>_0001, ..."
            )
        groups.setdefault((os.path.dirname(f), case), {})[channel] = f
    cases = []
    for (folder, case), by_channel in sorted(groups.items()):
        missing = [c for c in range(channels) if c not in by_channel]
        if missing:
            listed = ", ".join(f"_{c:04d}" for c in missing)
            raise InputError(f"{os.path.join(folder, case)}: channel file(s) {listed} missing (the model takes {channels})")
        ordered = tuple(by_channel[c] for c in range(channels))
        cases.append(Case(key=ordered[0], name=safe_name(case), files=ordered))
    return cases


def _series_cases(series: list[DicomSeries]) -> list[Case]:
    by_folder: dict[str, list[DicomSeries]] = {}
    for s in series:
        folder = os.path.commonpath([os.path.dirname(f) for f in s.files])
        by_folder.setdefault(folder, []).append(s)
    cases = []
    for folder, members in by_folder.items():
        base = os.path.basename(folder) or "dicom"
        for s in members:
            header = s.header
            extra: list[object] = []
            if len(members) > 1:
                extra = [header.series_number, header.series_description, s.part]
            number = "" if header.series_number is None else f"{header.series_number:08d}"
            key = f"{folder}#{number}#{s.series_uid or header.group_key}#{s.part or ''}"
            cases.append(Case(key=key, name=safe_name(base, *extra), files=s.files, series=s))
    return cases


def _make_names_unique(cases: list[Case]) -> None:
    """Append a short hash of the key to every name that more than one case has."""
    counts: dict[str, int] = {}
    for case in cases:
        counts[case.name.lower()] = counts.get(case.name.lower(), 0) + 1
    for index, case in enumerate(cases):
        if counts[case.name.lower()] > 1:
            digest = hashlib.sha1(case.key.encode()).hexdigest()[:8]
            cases[index] = Case(case.key, safe_name(case.name, digest), case.files, case.series)
