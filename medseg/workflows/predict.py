"""Batch segmentation: every case found in the inputs, written back on its scan's grid.

:func:`predict` loads the model once, finds the cases (:mod:`medseg.inference.inputs`),
keeps those of its shard, and for each one: reads it, checks it against the model
(:mod:`medseg.inference.guardrails`), segments it (:class:`~medseg.inference.engine.Segmenter`)
and writes the outputs asked for. Output layout, for ``OUT``:

* an image file input ``<case>.nii.gz`` (or ``<case>_0000.nii.gz``): ``OUT/<case>.nii.gz``,
  and beside it ``<case>.stats.json``, ``<case>.stats.csv``, ``<case>.preview.png``;
* a DICOM series: a folder ``OUT/<name>/`` holding ``<name>.nii.gz``, ``<name>.seg.dcm``,
  ``<name>.rtstruct.dcm`` and the statistics and preview;
* ``OUT/manifest.csv`` and ``OUT/run.json`` (:mod:`medseg.inference.records`).

A case that fails is reported and the batch goes on. A case's outputs are written
under temporary names and renamed together at its end, so a killed run leaves no
partial file; a case whose outputs all exist is skipped, so re-running the same
command finishes an interrupted batch without computing anything twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from medseg.errors import ConfigError, InputError, MedsegError
from medseg.inference.engine import InferenceSettings, Segmenter
from medseg.inference.guardrails import check_image
from medseg.inference.inputs import Case, collect_cases, parse_shard, select_shard, shard_from_environment
from medseg.inference.preview import write_preview
from medseg.inference.quality import CaseQuality, assess_case, batch_flags
from medseg.inference.records import (
    environment,
    files_sha256,
    format_volumes,
    now,
    read_manifest,
    record_batch_flags,
    record_case,
    record_run,
)
from medseg.io import read_image, write_image
from medseg.io.dicom import DicomReadOptions, read_series
from medseg.io.files import atomic_path
from medseg.metrics.statistics import label_statistics, write_statistics
from medseg.model_formats import ModelOptions, is_loaded, load_segmenter
from medseg.volume import Volume

log = logging.getLogger(__name__)

FORMATS = ("nifti", "seg", "rtstruct")
Status = Literal["done", "exists", "failed", "skipped"]
#: ``(stage, done, total)``: ``scan`` (files), ``cases`` (cases finished) and ``windows`` (of the current case).
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class PredictOptions:
    """Settings of :func:`predict`.

    Attributes:
        formats: any of ``nifti``, ``seg`` (DICOM SEG), ``rtstruct``; SEG and RTSTRUCT need a DICOM source.
        device: ``auto``, ``cpu`` or ``cuda``.
        inference: overlap, windows per batch and mirroring (None: the model's and device's defaults).
        shard: ``(index, count)``, index from 1: segment every count-th case only.
        stats: write per-label volumes and intensities (JSON and CSV).
        preview: write a PNG of the mask over three orthogonal slices.
        strict: refuse images the guardrails warn about, instead of warning.
        overwrite: segment cases whose outputs exist (default: skip them).
        include_localizers: also segment localizer/scout series.
        dicom: how irregular and tilted series are read; tilted ones are kept on their
            acquired (sheared) grid by default, so the mask lands on the acquired slices.
        model_options: nnU-Net folds, checkpoint and orientation (:class:`~medseg.model_formats.ModelOptions`).
    """

    formats: tuple[str, ...] = ("nifti",)
    device: str = "auto"
    inference: InferenceSettings = field(default_factory=InferenceSettings)
    shard: tuple[int, int] | None = None
    stats: bool = False
    preview: bool = False
    strict: bool = False
    overwrite: bool = False
    include_localizers: bool = False
    dicom: DicomReadOptions = field(default_factory=lambda: DicomReadOptions(tilt="keep"))
    model_options: ModelOptions = field(default_factory=ModelOptions)

    def __post_init__(self) -> None:
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown or not self.formats:
            raise ConfigError(
                f"formats: unknown output format(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)}"
            )


@dataclass(frozen=True)
class CaseResult:
    """What became of one case."""

    name: str
    input: str
    series_uid: str | None
    status: Status
    outputs: tuple[str, ...] = ()
    seconds: float = 0.0
    message: str = ""
    warnings: tuple[str, ...] = ()
    seg_check: str = ""
    quality: CaseQuality | None = None
    recorded_flags: tuple[str, ...] = ()  # of a case segmented before (status "exists"), from the manifest

    @property
    def flags(self) -> tuple[str, ...]:
        """The case's own quality flags: this run's, or those recorded when it was segmented."""
        return self.quality.flags if self.quality is not None else self.recorded_flags


@dataclass
class PredictReport:
    """Every case's result, plus what was found and left out.

    ``batch_flags``: per case of the output folder (this run's and earlier ones'), the flags
    from holding its label volumes against the whole batch; only cases that have any.
    """

    output: Path
    results: list[CaseResult] = field(default_factory=list)
    skipped_files: list[tuple[str, str]] = field(default_factory=list)
    cases_total: int = 0  # before sharding
    seconds: float = 0.0
    batch_flags: dict[str, list[str]] = field(default_factory=dict)

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed


def resolve_shard(text: str | None) -> tuple[int, int] | None:
    """The shard to run: ``--shard I/N`` as given, else a SLURM job array's (``SLURM_ARRAY_TASK_ID``), else None.

    Raises:
        ConfigError: a malformed shard.
    """
    return parse_shard(text) if text is not None else shard_from_environment()


def predict(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | Segmenter,
    options: PredictOptions | None = None,
    progress: Progress | None = None,
) -> PredictReport:
    """Segment every case in ``inputs`` into ``output``.

    Args:
        inputs: image files, folders of them, DICOM files, folders or trees.
        output: the output folder (created).
        model: a model (folder, ``RUN_DIR``, nnU-Net folder, MONAI bundle), a list of them to merge,
            or a loaded segmenter (:func:`~medseg.model_formats.load_segmenter`).
        options: formats, device, inference settings, shard, extras.
        progress: ``(stage, done, total)`` callbacks.

    Returns:
        The report; the same results are in ``output/manifest.csv``.

    Raises:
        InputError: an input is missing, or the output is a file.
        ConfigError: SEG/RTSTRUCT are asked for but no input is DICOM.
        ModelError: the model folder cannot be loaded.
    """
    started = time.monotonic()
    options = options or PredictOptions()
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    segmenter = (
        model
        if is_loaded(model)
        else load_segmenter(model, device=options.device, settings=options.inference, options=options.model_options)
    )
    found = collect_cases(
        inputs,
        channels=len(segmenter.facts.channels),
        include_localizers=options.include_localizers,
        exclude=out,
        progress=None if progress is None else lambda done, total: progress("scan", done, total),
    )
    dicom_only = [f for f in options.formats if f in ("seg", "rtstruct")]
    if dicom_only and found.cases and not any(c.is_dicom for c in found.cases):
        raise ConfigError(
            f"{' and '.join(f.upper() for f in dicom_only)} need a DICOM source; the inputs are image files "
            "(use --format nifti)"
        )
    report = PredictReport(out, skipped_files=found.skipped_files, cases_total=len(found.cases))
    cases = select_shard(found.cases, options.shard)
    session = f"{now()}#{os.getpid()}#{secrets.token_hex(3)}"
    out.mkdir(parents=True, exist_ok=True)
    record_run(out, _run_facts(segmenter, options, session_start=now(), cases=len(cases)), key=session)
    for series, reason in found.skipped_series:
        report.results.append(
            CaseResult(
                series.describe(), os.path.dirname(series.files[0]), series.series_uid, "skipped", message=reason
            )
        )
    done_before = read_manifest(out)
    for index, case in enumerate(cases, start=1):
        result = _run_case(case, out, segmenter, options, done_before.get(case.name), progress)
        report.results.append(result)
        if progress is not None:
            progress("cases", index, len(cases))
    report.batch_flags = record_batch_flags(out, batch_flags)
    report.seconds = time.monotonic() - started
    counts = {s: sum(r.status == s for r in report.results) for s in ("done", "exists", "failed", "skipped")}
    facts = _run_facts(segmenter, options, session_start=None, cases=len(cases))
    facts["session"].update(finished=now(), seconds=round(report.seconds, 2), **counts)
    record_run(out, facts, key=session)
    return report


def output_paths(case: Case, out: Path, options: PredictOptions) -> dict[str, Path]:
    """Where each output of ``case`` goes (only those that apply to it)."""
    folder = out / case.name if case.is_dicom else out
    stem = folder / case.name
    paths = {}
    if "nifti" in options.formats:
        paths["nifti"] = Path(f"{stem}.nii.gz")
    if case.is_dicom:
        if "seg" in options.formats:
            paths["seg"] = Path(f"{stem}.seg.dcm")
        if "rtstruct" in options.formats:
            paths["rtstruct"] = Path(f"{stem}.rtstruct.dcm")
    if options.stats:
        paths["stats_json"] = Path(f"{stem}.stats.json")
        paths["stats_csv"] = Path(f"{stem}.stats.csv")
    if options.preview:
        paths["preview"] = Path(f"{stem}.preview.png")
    return paths


def _run_case(
    case: Case,
    out: Path,
    segmenter: Segmenter,
    options: PredictOptions,
    before: dict[str, str] | None,
    progress: Progress | None,
) -> CaseResult:
    started = time.monotonic()
    paths = output_paths(case, out, options)
    shown = [str(p) for p in paths.values()]
    if not options.overwrite and all(p.exists() for p in paths.values()):
        message = "outputs exist (use --overwrite to redo)"
        if before is not None and before.get("status") == "done" and before.get("message"):
            message = f"{message}; {before['message']}"
        recorded = tuple(f for f in (before or {}).get("flags", "").split(";") if f)
        return CaseResult(
            case.name,
            case.input_path,
            case.series_uid,
            "exists",
            tuple(shown),
            message=message,
            recorded_flags=recorded,
        )
    _remove_leftovers(paths.values())
    warnings: list[str] = []
    try:
        image = _read(case, options)
        warnings = check_image(image, segmenter.facts, fingerprint=segmenter.fingerprint, strict=options.strict)
        for warning in warnings:
            log.warning("%s: %s", case.name, warning)
        labels, confidence = segmenter.segment_with_confidence(
            image, progress=None if progress is None else lambda done, total: progress("windows", done, total)
        )
        quality = assess_case(labels, confidence, fingerprint=segmenter.fingerprint)
        del confidence
        for flag in quality.flags:
            log.info("%s: flagged: %s", case.name, flag)
        notes: list[str] = list(getattr(segmenter, "last_notes", ()))  # a merge of several models says what it resolved
        if image.source.resampled and any(kind in paths for kind in ("seg", "rtstruct")):
            paths = {kind: path for kind, path in paths.items() if kind not in ("seg", "rtstruct")}
            notes.append(
                "SEG/RTSTRUCT not written: the series was resampled (irregular slices), so its slices are "
                "not the stored instances"
            )
        seg_check = _write_outputs(image, labels, paths, segmenter, quality)
    except (MedsegError, OSError) as exc:
        message = str(exc)
        log.warning("%s: %s", case.name, message)
        result = CaseResult(
            case.name,
            case.input_path,
            case.series_uid,
            "failed",
            (),
            time.monotonic() - started,
            message,
            tuple(warnings),
        )
        _record(out, case, result, input_hash=None)
        return result
    dropped = [f for f in options.formats if f in ("seg", "rtstruct") and not case.is_dicom]
    if dropped:
        notes.append(f"{', '.join(f.upper() for f in dropped)} not written: an image file has no DICOM source")
    seconds = time.monotonic() - started
    written = tuple(str(p) for p in paths.values())
    result = CaseResult(
        case.name,
        case.input_path,
        case.series_uid,
        "done",
        written,
        seconds,
        "; ".join(notes),
        tuple(warnings),
        seg_check,
        quality,
    )
    _record(out, case, result, input_hash=files_sha256(case.files))
    log.info("segmented %s in %.1f s -> %s", case.name, seconds, ", ".join(written))
    return result


def _remove_leftovers(paths: Iterable[Path]) -> None:
    """Delete temporary files a killed run left for these outputs (``.<name>.<random><ext>``, see atomic_path)."""
    for path in paths:
        if path.parent.is_dir():
            for leftover in path.parent.glob(f".{path.name}.*"):
                leftover.unlink(missing_ok=True)


def _read(case: Case, options: PredictOptions) -> Volume:
    if case.series is not None:
        return read_series(case.series, options=options.dicom)
    volumes = [read_image(f) for f in case.files]
    if len(volumes) == 1:
        return volumes[0]
    import numpy as np

    first = volumes[0]
    for path, other in zip(case.files[1:], volumes[1:]):
        first.geometry.require_same_grid(other.geometry, tolerance_mm=0.01, what=f"{path} and {case.files[0]}")
    return first.with_array(np.concatenate([v.array for v in volumes]))


def _write_outputs(
    image: Volume, labels: Volume, paths: dict[str, Path], segmenter: Segmenter, quality: CaseQuality
) -> str:
    """Write every output under a temporary name, then rename them together; returns the SEG self-check."""

    seg_check = ""
    with contextlib.ExitStack() as stack:
        tmp = {kind: stack.enter_context(atomic_path(path)) for kind, path in paths.items()}
        if "nifti" in tmp:
            write_image(labels, tmp["nifti"])
        if "seg" in tmp:
            from medseg.io.seg import check_seg, write_seg  # highdicom: loaded for SEG only

            write_seg(labels, tmp["seg"], algorithm=_algorithm(segmenter))
            check = check_seg(tmp["seg"], labels)
            seg_check = check.message
            if not check.ok:
                raise InputError(f"{paths['seg']}: the SEG self-check failed: {check.message}")
        if "rtstruct" in tmp:
            from medseg.io.rtstruct import write_rtstruct  # highdicom: loaded for RTSTRUCT only

            write_rtstruct(labels, tmp["rtstruct"], algorithm=_algorithm(segmenter))
        if "stats_json" in tmp:
            signals = quality.to_dict()
            write_statistics(
                label_statistics(labels, image),
                tmp["stats_json"],
                tmp["stats_csv"],
                extra=signals["labels"],
                case={"confidence": signals["confidence"], "flags": signals["flags"]},
            )
        if "preview" in tmp:
            write_preview(image, labels, tmp["preview"])
    return seg_check


def _algorithm(segmenter: Segmenter):  # -> medseg.io.seg.AlgorithmIdentity
    from medseg.io.seg import AlgorithmIdentity  # highdicom: loaded for SEG only

    identity = segmenter.model_identity
    return AlgorithmIdentity(name=identity["name"], version=identity["version"])


def _record(out: Path, case: Case, result: CaseResult, *, input_hash: str | None) -> None:
    row = {
        "case": result.name,
        "input": result.input,
        "series_uid": result.series_uid,
        "status": result.status,
        "outputs": list(result.outputs),
        "seconds": result.seconds,
        "seg_check": result.seg_check,
        "warnings": list(result.warnings),
        "message": result.message,
        "flags": list(result.flags),
        "confidence": None if result.quality is None else result.quality.confidence,
        "volumes_ml": "" if result.quality is None else format_volumes(result.quality.volumes_ml),
    }
    facts = {
        "input": result.input,
        "files": len(case.files),
        "series_uid": result.series_uid,
        "input_sha256": input_hash,
        "status": result.status,
        "seconds": round(result.seconds, 3),
        "finished": now(),
    }
    if result.quality is not None:
        facts["quality"] = result.quality.to_dict()
    record_case(out, row, facts)


def _run_facts(segmenter: Segmenter, options: PredictOptions, *, session_start: str | None, cases: int) -> dict:
    session: dict = {
        "shard": None if options.shard is None else f"{options.shard[0]}/{options.shard[1]}",
        "cases": cases,
    }
    if session_start is not None:
        session["started"] = session_start
    settings = segmenter.effective_settings
    return {
        "environment": environment(),
        "device": str(segmenter.device),
        "model": segmenter.model_identity,
        "settings": {
            "formats": list(options.formats),
            "overlap": settings.overlap,
            "batch_size": settings.batch_size,
            "tta": settings.tta,
            "stats": options.stats,
            "preview": options.preview,
            "strict": options.strict,
            "irregular": options.dicom.irregular,
            "tilt": options.dicom.tilt,
        },
        "session": session,
    }
