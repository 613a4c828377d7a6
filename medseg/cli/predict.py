"""``medseg predict --model MODEL INPUT... --output OUT``: batch segmentation written back on each scan's grid."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medseg.cli._models import add_model_arguments, model_argument, model_options, resolve_models
from medseg.cli.exits import batch_exit

if TYPE_CHECKING:
    from medseg.workflows.predict import CaseResult, PredictReport

HELP = "segment scans (NIfTI/NRRD/MHA files, DICOM folders or trees) with a trained model"


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "predict",
        help=HELP,
        description=HELP + ". Every image series found is segmented (localizers are skipped) and its "
        "mask written on the scan's own grid: OUT/<case>.nii.gz for an image file <case>[_0000].nii.gz; "
        "OUT/<name>/<name>.nii.gz, .seg.dcm, .rtstruct.dcm for a DICOM series (name from its folder). "
        "OUT/manifest.csv lists every case (status, outputs, seconds, SEG self-check) and OUT/run.json "
        "what made them (versions, device, model hash, input hashes, settings). A failed case is "
        "reported and the batch goes on; re-running the same command skips finished cases. "
        "Exit code 0: all segmented; 1: some cases failed; 2: usage error.",
    )
    parser.add_argument("inputs", type=Path, nargs="+", metavar="INPUT", help="image files, folders, DICOM trees")
    add_model_arguments(parser)
    parser.add_argument("--output", "-o", type=Path, required=True, metavar="OUT", help="the output folder")
    parser.add_argument(
        "--format",
        default="nifti",
        metavar="LIST",
        help="comma-separated outputs: nifti, seg (DICOM SEG), rtstruct (default: nifti); "
        "seg and rtstruct need DICOM inputs",
    )
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: CUDA when available"
    )
    parser.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="mirror test-time augmentation over the model's mirror axes (default: on for CUDA, off on CPU; "
        "nnU-Net models: on, as nnUNetv2_predict)",
    )
    parser.add_argument(
        "--overlap",
        type=float,
        default=None,
        metavar="F",
        help="sliding-window overlap, 0 <= F < 1 (nnU-Net models: default 0.5, a tile step of 1 - F)",
    )
    parser.add_argument("--batch-size", type=int, default=None, metavar="N", help="windows per forward pass")
    parser.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="segment only part I of N (1-based) of the cases; SLURM job arrays set it from "
        "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT",
    )
    parser.add_argument("--stats", action="store_true", help="per label volume (mL) and intensity, as JSON and CSV")
    parser.add_argument("--preview", action="store_true", help="a PNG per case: the mask over three orthogonal slices")
    parser.add_argument(
        "--strict", action="store_true", help="refuse scans the model was not trained for (default: warn)"
    )
    parser.add_argument(
        "--irregular",
        choices=("refuse", "resample"),
        default="refuse",
        help="DICOM series with missing slices or uneven spacing: refuse (default) or resample (NIfTI only)",
    )
    parser.add_argument("--include-localizers", action="store_true", help="also segment localizer/scout series")
    parser.add_argument("--overwrite", action="store_true", help="segment again cases whose outputs exist")
    parser.add_argument(
        "--report", action="store_true", help="then write OUT/report.html, the batch report of medseg report"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary of the run instead of the case lines")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from medseg.cli._render import error_when_silent, print_json, progress_bar, stdout
    from medseg.errors import ConfigError
    from medseg.workflows.predict import (
        FORMATS,
        DicomReadOptions,
        InferenceSettings,
        PredictOptions,
        predict,
        resolve_shard,
    )

    formats = tuple(dict.fromkeys(f.strip().lower() for f in args.format.split(",") if f.strip()))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ConfigError(f"--format takes a comma-separated list of {', '.join(FORMATS)}, got {args.format!r}")
    if args.overlap is not None and not 0 <= args.overlap < 1:
        raise ConfigError(f"--overlap must be at least 0 and below 1, got {args.overlap}")
    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    for path in args.inputs:
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder")
    models = resolve_models(args)
    shard = resolve_shard(args.shard)
    options = PredictOptions(
        formats=formats,
        device=args.device,
        inference=InferenceSettings(overlap=args.overlap, batch_size=args.batch_size, tta=args.tta),
        shard=shard,
        stats=args.stats,
        preview=args.preview,
        strict=args.strict,
        overwrite=args.overwrite,
        include_localizers=args.include_localizers,
        dicom=DicomReadOptions(irregular=args.irregular, tilt="keep"),
        model_options=model_options(args),
    )
    with progress_bar(not args.quiet) as progress:
        report = predict(args.inputs, args.output, model=model_argument(models), options=options, progress=progress)
    style = {"done": "green", "exists": "cyan", "skipped": "yellow", "failed": "red"}
    counts = {s: sum(r.status == s for r in report.results) for s in style}
    if args.json:
        print_json(_summary(report, counts, shard))
    for result in report.results:
        seconds = f" {result.seconds:.1f} s" if result.status == "done" else ""
        note = f" ({result.message})" if result.message else ""
        stdout.print(f"[{style[result.status]}]{result.status:>7}[/] {result.name}{seconds}{note}")
        for warning in result.warnings:
            stdout.print(f"[yellow]        warning:[/] {warning}")
        for flag in [*result.flags, *report.batch_flags.get(result.name, [])]:
            stdout.print(f"[magenta]        flagged:[/] {flag}")
        if result.status == "failed":
            error_when_silent("predict", f"{result.name}: {result.message}")
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no scans found"
    flagged = {r.name for r in report.results if r.flags} | set(report.batch_flags)
    if flagged:
        summary += f" ({len(flagged)} flagged for review)"
    where = f"shard {shard[0]}/{shard[1]} of {report.cases_total} case(s): " if shard else ""
    stdout.print(f"{where}{summary} in {report.seconds:.1f} s; manifest: {report.output / 'manifest.csv'}")
    if args.report and report.cases_total:
        from medseg.workflows.report import write_report

        stdout.print(f"report: {write_report(report.output).path}")
    return batch_exit(failed=len(report.failed), total=report.cases_total)


def _summary(report: PredictReport, counts: dict[str, int], shard: tuple[int, int] | None) -> dict[str, Any]:
    """What ``--json`` prints: the run's counts and files, and every case as the manifest has it."""
    return {
        "output": str(report.output),
        "manifest": str(report.output / "manifest.csv"),
        "shard": None if shard is None else f"{shard[0]}/{shard[1]}",
        "cases_total": report.cases_total,
        "counts": counts,
        "seconds": round(report.seconds, 2),
        "cases": [_case(result, report) for result in report.results],
        "skipped_files": [{"path": path, "reason": reason} for path, reason in report.skipped_files],
    }


def _case(result: CaseResult, report: PredictReport) -> dict[str, Any]:
    """One case of ``--json``: the manifest's columns, the quality flags with them."""
    case = {
        f.name: getattr(result, f.name)
        for f in dataclasses.fields(result)
        if f.name not in ("quality", "recorded_flags")
    }
    quality = result.quality
    return {
        **case,
        "seconds": round(result.seconds, 2),
        "flags": list(result.flags),
        "batch_flags": report.batch_flags.get(result.name, []),
        "confidence": None if quality is None else quality.confidence,
        "volumes_ml": None if quality is None else quality.volumes_ml,
    }
