"""Convert scans between formats: DICOM trees to NIfTI (one file per series), and
NIfTI/NRRD/MHA into each other.

A DICOM SEG or RT Structure Set in the tree becomes a label map on the grid of the
series it references, written beside that series' file as
``<series name>.<seg|rtstruct>[-<n>]<ext>`` with a JSON of its label names
(``{"labels": {"1": "Liver", ...}}``). Labels keep the file's numbers (SEG segment
numbers, RTSTRUCT ROI numbers where they all lie in 1..255, else 1, 2, ... in ROI
order); where segments overlap, the higher number wins.

Each series succeeds or fails on its own; a failure is reported and the rest
go on. Outputs are written atomically and existing ones are kept unless
``overwrite`` is set, so an interrupted run can simply be repeated.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from medseg import __version__
from medseg.datasets.manifest import parse_labels, read_json
from medseg.errors import InputError, MedsegError
from medseg.io import IMAGE_SUFFIXES, image_format, read_dicom, read_image, write_image
from medseg.io.dicom import DicomReadOptions, DicomScan, DicomSeries, find_files, read_series, scan_files
from medseg.io.dicom_outputs import AlgorithmIdentity
from medseg.io.files import safe_name, write_atomically
from medseg.io.labels import dicom_label_kind, read_label, referenced_series
from medseg.volume import Segment, Volume, VolumeKind

log = logging.getLogger(__name__)

Status = Literal["converted", "exists", "failed", "skipped"]
OUTPUT_FORMATS = {"nifti": ".nii.gz", "nrrd": ".nrrd", "mha": ".mha"}


@dataclass(frozen=True)
class ConversionResult:
    """What became of one input series or image file."""

    source: str  # the input file, or the first file of a DICOM series
    name: str  # a short human name of the input
    status: Status
    output: str | None = None
    series_uid: str | None = None
    message: str = ""


@dataclass
class ConversionReport:
    """Every result of a run, plus the files that held no image."""

    results: list[ConversionResult] = field(default_factory=list)
    skipped_files: list[tuple[str, str]] = field(default_factory=list)

    @property
    def failed(self) -> list[ConversionResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class ConvertOptions:
    """Settings of :func:`convert`.

    Attributes:
        format: output format for series and folders: ``nifti``, ``nrrd`` or ``mha``.
        dicom: how to treat irregular or tilted DICOM series.
        include_localizers: also convert localizer/scout series.
        overwrite: replace outputs that already exist (default: keep them).
        sidecar: write ``<name>.json`` beside each DICOM-derived output with the
            series' attributes and its SOP Instance UIDs in slice order.
    """

    format: str = "nifti"
    dicom: DicomReadOptions = field(default_factory=DicomReadOptions)
    include_localizers: bool = False
    overwrite: bool = False
    sidecar: bool = True

    def __post_init__(self) -> None:
        if self.format not in OUTPUT_FORMATS:
            raise InputError(f"unknown output format {self.format!r}; choose one of {', '.join(OUTPUT_FORMATS)}")


ProgressCallback = Callable[[str, int, int], None]  # (stage, done, total)


def convert(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    options: ConvertOptions | None = None,
    progress: ProgressCallback | None = None,
) -> ConversionReport:
    """Convert a DICOM tree, an image file or a folder of image files.

    * A single NIfTI/NRRD/MHA file: ``output`` is the file to write (its
      extension picks the format), or an existing folder to write into.
    * A folder or DICOM file: every image series becomes
      ``output/<name><ext>``; image files found in the folder are converted too.

    Raises:
        InputError: ``source`` does not exist, or ``output`` cannot be used.
    """
    options = options or ConvertOptions()
    source, output = Path(source), Path(output)
    report = ConversionReport()
    if source.is_file() and image_format(source):
        target = output / _image_name(source, options.format) if output.is_dir() else output
        if not image_format(target):
            raise InputError(
                f"{output}: name the output file with one of {', '.join(IMAGE_SUFFIXES)}, or give a folder"
            )
        report.results.append(_convert_image(source, target, options))
        return report
    if output.exists() and not output.is_dir():
        raise InputError(f"{output}: exists and is not a folder; DICOM series are written into a folder")

    files = find_files(source)
    images = [f for f in files if image_format(f)]
    others = [f for f in files if not image_format(f)]

    def scan_progress(done: int, total: int) -> None:
        if progress is not None:
            progress("scan", done, total)

    found = scan_files(others, progress=scan_progress) if others else DicomScan(series=())
    report.skipped_files.extend((s.path, s.reason) for s in found.skipped)
    names = _series_names(found.series)
    todo = [s for s in found.series if options.include_localizers or not s.is_localizer]
    for series in found.series:
        if series not in todo:
            report.results.append(
                ConversionResult(
                    series.frames[0].path, series.describe(), "skipped", None, series.series_uid, "localizer"
                )
            )
    kinds = {Path(s.path): dicom_label_kind(s.path) for s in found.skipped}
    labels = {path: kind for path, kind in kinds.items() if kind is not None}
    report.skipped_files = [(path, why) for path, why in report.skipped_files if Path(path) not in labels]
    total = len(todo) + len(images) + len(labels)
    for done, series in enumerate(todo, start=1):
        report.results.append(
            _convert_series(series, output / (names[id(series)] + OUTPUT_FORMATS[options.format]), options)
        )
        if progress is not None:
            progress("convert", done, total)
    for done, image in enumerate(images, start=len(todo) + 1):
        report.results.append(_convert_image(Path(image), output / _image_name(Path(image), options.format), options))
        if progress is not None:
            progress("convert", done, total)
    taken: dict[str, int] = {}
    for done, (path, kind) in enumerate(labels.items(), start=len(todo) + len(images) + 1):
        report.results.append(_convert_label(path, kind, found.series, names, output, taken, options))
        if progress is not None:
            progress("convert", done, total)
    return report


def _convert_series(series: DicomSeries, target: Path, options: ConvertOptions) -> ConversionResult:
    name, first = series.describe(), series.frames[0].path
    if target.exists() and not options.overwrite:
        return ConversionResult(first, name, "exists", str(target), series.series_uid, "kept (use --overwrite)")
    try:
        volume = read_series(series, options=options.dicom)
        write_image(volume, target)
        if options.sidecar:
            sidecar = _sidecar(series, volume)
            write_atomically(target.with_name(_stem(target) + ".json"), lambda tmp: tmp.write_text(sidecar))
    except MedsegError as exc:
        log.warning("%s", exc)
        return ConversionResult(first, name, "failed", None, series.series_uid, str(exc))
    log.info("converted %s (%s) -> %s", name, series.series_uid, target)
    return ConversionResult(first, name, "converted", str(target), series.series_uid)


def _convert_label(
    path: Path,
    kind: str,
    series: tuple[DicomSeries, ...],
    names: dict[int, str],
    output: Path,
    taken: dict[str, int],
    options: ConvertOptions,
) -> ConversionResult:
    """A SEG or RTSTRUCT (``kind``) as a label map on its series' grid, beside that series' output."""
    try:
        referenced = referenced_series(path)
        match = next((s for s in series if s.series_uid in referenced), None)
        if match is None:
            shown = ", ".join(referenced) or "no series"
            raise InputError(f"{path}: references {shown}, which this folder does not hold; convert it with its series")
        stem = f"{names[id(match)]}.{kind.lower()}"
        taken[stem] = taken.get(stem, 0) + 1
        if taken[stem] > 1:
            stem = f"{stem}-{taken[stem]}"
        target = output / (stem + OUTPUT_FORMATS[options.format])
        if target.exists() and not options.overwrite:
            kept = "kept (use --overwrite)"
            return ConversionResult(str(path), path.name, "exists", str(target), match.series_uid, kept)
        image = read_series(match, options=options.dicom)
        reading = read_label(path, reference=image.geometry, series_uid=match.series_uid)
        write_image(reading.volume, target)
        table = {
            "kind": kind,
            "source": str(path),
            "series_instance_uid": match.series_uid,
            "labels": {str(s.number): s.name for s in reading.volume.segments},
        }
        write_atomically(output / f"{stem}.json", lambda tmp: tmp.write_text(json.dumps(table, indent=2) + "\n"))
    except MedsegError as exc:
        log.warning("%s", exc)
        return ConversionResult(str(path), path.name, "failed", None, None, str(exc))
    log.info("converted %s %s -> %s", kind, path, target)
    return ConversionResult(str(path), f"{kind} {path.name}", "converted", str(target), match.series_uid)


def labels_to_dicom(
    labels: str | os.PathLike[str],
    series: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    kind: Literal["seg", "rtstruct"] = "seg",
    names: str | os.PathLike[str] | None = None,
    made: Literal["MANUAL", "SEMIAUTOMATIC", "AUTOMATIC"] = "MANUAL",
    dicom: DicomReadOptions | None = None,
    overwrite: bool = False,
) -> ConversionResult:
    """Write a label map drawn on a DICOM series as a SEG or RTSTRUCT on that series' instances.

    Args:
        labels: the label map (NIfTI, NRRD, MHA) on the series' grid (within 0.01 mm).
        series: the DICOM series (a folder holding one image series, or one of its files).
        output: the file to write.
        kind: ``"seg"`` or ``"rtstruct"``.
        names: a JSON naming the labels: what :func:`convert` writes beside a label map
            (``{"labels": {"1": "liver"}}``) or a ``dataset.json``; default ``label N``.
        made: how the labels were made, as the file records it (SEG Segment Algorithm Type,
            RTSTRUCT ROI Generation Algorithm); drawn by hand by default.
        dicom: how to read the series.
        overwrite: replace ``output`` when it exists.

    Raises:
        InputError: unreadable inputs, a label map off the series' grid, an output that exists,
            or a file that does not read back as the label map.
    """
    from medseg.io.rtstruct import read_rtstruct, write_rtstruct  # highdicom: loaded for RTSTRUCT only
    from medseg.io.seg import check_seg, write_seg  # highdicom: loaded for SEG only

    labels, series, output = Path(labels), Path(series), Path(output)
    if kind not in ("seg", "rtstruct"):
        raise InputError(f"unknown DICOM label kind {kind!r}; choose seg or rtstruct")
    if output.exists() and not overwrite:
        return ConversionResult(str(labels), labels.name, "exists", str(output), None, "kept (use --overwrite)")
    image = read_dicom(series, options=dicom)
    label_map = read_image(labels, kind=VolumeKind.LABEL)
    image.geometry.require_same_grid(label_map.geometry, tolerance_mm=0.01, what=f"{labels.name} and the series' grid")
    table: dict[int, str] = {}
    if names is not None:
        data = read_json(Path(names))
        raw = data.get("labels") if isinstance(data, dict) else None
        if isinstance(raw, dict) and all(str(k).isdigit() for k in raw):
            table = {int(k): str(v) for k, v in raw.items() if int(k) > 0}
        else:
            table = parse_labels(raw, Path(names))
    segments = tuple(Segment(number, name) for number, name in sorted(table.items()))
    on_series = image.with_array(label_map.channel(0), kind=VolumeKind.LABEL, segments=segments)
    algorithm = AlgorithmIdentity("medseg-convert", __version__, kind=made)
    if kind == "seg":
        write_seg(on_series, output, algorithm=algorithm)
        check = check_seg(output, on_series)
        if not check.ok:
            raise InputError(f"{output}: {check.message}")
    else:
        write_rtstruct(on_series, output, algorithm=algorithm)
        back = read_rtstruct(output, reference=image.geometry).channel(0)
        if not (back == on_series.channel(0)).all():
            raise InputError(f"{output}: the structure set does not read back as {labels.name}")
    log.info("converted %s -> %s %s", labels, kind.upper(), output)
    return ConversionResult(str(labels), labels.name, "converted", str(output), image.source.series_instance_uid)


def _convert_image(source: Path, target: Path, options: ConvertOptions) -> ConversionResult:
    if target.exists() and not options.overwrite:
        return ConversionResult(str(source), source.name, "exists", str(target), None, "kept (use --overwrite)")
    if target.resolve() == source.resolve():
        return ConversionResult(str(source), source.name, "failed", None, None, "output would overwrite the input")
    try:
        write_image(read_image(source), target)
    except MedsegError as exc:
        log.warning("%s", exc)
        return ConversionResult(str(source), source.name, "failed", None, None, str(exc))
    return ConversionResult(str(source), source.name, "converted", str(target))


def _series_names(series: tuple[DicomSeries, ...]) -> dict[int, str]:
    """Stable, unique, file-system-safe names: number, description, part; a UID hash on clashes."""
    names: dict[int, str] = {}
    for s in series:
        h = s.header
        number = f"{h.series_number:04d}" if h.series_number is not None and h.series_number >= 0 else None
        names[id(s)] = safe_name(number, h.series_description, s.part) if (number or h.series_description) else ""
    counts: dict[str, int] = {}
    for name in names.values():
        counts[name] = counts.get(name, 0) + 1
    for s in series:
        if not names[id(s)] or counts[names[id(s)]] > 1:
            digest = hashlib.sha1(f"{s.header.group_key}/{s.part}".encode()).hexdigest()[:8]
            names[id(s)] = safe_name(names[id(s)] or "series", digest)
    return names


def _stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _image_name(source: Path, fmt: str) -> str:
    return safe_name(_stem(source)) + OUTPUT_FORMATS[fmt]


def _sidecar(series: DicomSeries, volume: Volume) -> str:
    """The series' attributes, the grid written (which differs from the acquired one if
    resampled) and the SOP Instance UIDs of the acquired slices, in order along the normal."""
    info = series.to_dict()
    info.pop("first_file", None)
    info["acquired"] = {k: info.pop(k) for k in ("size", "spacing", "origin", "direction", "orientation")}
    info.update(volume.geometry.to_dict())
    info["resampled"] = volume.source.resampled
    info["sop_instance_uids"] = [f.sop_instance_uid for f in series.frames]
    return json.dumps(info, indent=2) + "\n"
