"""``medseg convert INPUT OUTPUT``: DICOM series to NIfTI, and NIfTI/NRRD/MHA into each other."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medseg.cli.exits import batch_exit

if TYPE_CHECKING:
    from medseg.workflows.convert import ConversionResult

HELP = "convert DICOM series to NIfTI (one file per series), or NIfTI/NRRD/MHA into each other"


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "convert",
        help=HELP,
        description=HELP + ". A DICOM folder or tree becomes one file per image series in OUTPUT "
        "(a folder), named from series number, description and a UID hash, plus a JSON sidecar with "
        "the series' attributes and SOP Instance UIDs. Each DICOM SEG or RTSTRUCT in the tree becomes a label "
        "map on the grid of the series it references, beside that series' file "
        "(<series>.rtstruct.nii.gz / <series>.seg.nii.gz, with a JSON of label names). "
        "A single image file converts to OUTPUT "
        "(format from its extension). Existing outputs are kept, so re-running resumes. "
        "Exit code 0: all converted; 1: some series failed (listed); 2: usage error.",
    )
    parser.add_argument("input", type=Path, help="DICOM folder/tree/file, or a NIfTI/NRRD/MHA file or folder of them")
    parser.add_argument(
        "output", type=Path, nargs="?", help="output folder (or output file for a single image file); or -o OUTPUT"
    )
    parser.add_argument("--output", "-o", type=Path, dest="output_option", metavar="OUTPUT", help="the same as OUTPUT")
    parser.add_argument(
        "--format", choices=("nifti", "nrrd", "mha"), default="nifti", help="format of series written into a folder"
    )
    parser.add_argument(
        "--irregular",
        choices=("refuse", "resample"),
        default="refuse",
        help="series with missing slices or uneven spacing: refuse (default) or resample onto a regular grid",
    )
    parser.add_argument(
        "--tilt",
        choices=("resample", "keep", "refuse"),
        default="resample",
        help="gantry-tilted series: resample onto an orthogonal grid (default), keep the sheared grid "
        "(NIfTI only), or refuse",
    )
    parser.add_argument("--include-localizers", action="store_true", help="also convert localizer/scout series")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    parser.add_argument("--no-sidecar", action="store_true", help="do not write the JSON sidecar files")
    parser.add_argument("--workers", type=int, default=None, help="processes for decoding compressed DICOM")
    parser.add_argument("--json", action="store_true", help="print what was converted as JSON instead of lines")
    to_dicom = parser.add_argument_group(
        "label map to DICOM",
        "with --series: INPUT is a NIfTI/NRRD/MHA label map drawn on that DICOM series, "
        "OUTPUT the SEG or RTSTRUCT file to write on its instances (read back and checked voxel for voxel)",
    )
    to_dicom.add_argument("--series", type=Path, help="the DICOM series (folder) the label map was drawn on")
    to_dicom.add_argument(
        "--to", choices=("seg", "rtstruct"), default="seg", help="DICOM SEG (default) or RT Structure Set"
    )
    to_dicom.add_argument(
        "--made",
        choices=("manual", "semiautomatic", "automatic"),
        default="manual",
        help="how the labels were made, as the file records it (default: manual, drawn by hand)",
    )
    to_dicom.add_argument(
        "--names",
        type=Path,
        help='JSON naming the labels: {"labels": {"1": "liver"}} (what convert writes) or a dataset.json',
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from medseg.cli._render import error_when_silent, print_json, progress_bar, stdout
    from medseg.errors import ConfigError
    from medseg.workflows.convert import ConvertOptions, DicomReadOptions, convert

    if args.output is not None and args.output_option is not None and args.output != args.output_option:
        raise ConfigError(f"two outputs given ({args.output} and --output {args.output_option}); give one")
    args.output = args.output or args.output_option
    if args.output is None:
        raise ConfigError("the output is missing: medseg convert INPUT OUTPUT (or -o OUTPUT)")
    if not args.input.exists():
        raise FileNotFoundError(f"{args.input}: no such file or folder")
    if args.workers is not None and args.workers < 1:
        raise FileNotFoundError(f"--workers must be at least 1, got {args.workers}")
    if args.series is not None:
        return _to_dicom(args)
    options = ConvertOptions(
        format=args.format,
        dicom=DicomReadOptions(irregular=args.irregular, tilt=args.tilt, workers=args.workers),
        include_localizers=args.include_localizers,
        overwrite=args.overwrite,
        sidecar=not args.no_sidecar,
    )
    with progress_bar(not args.quiet) as progress:
        report = convert(args.input, args.output, options=options, progress=progress)
    style = {"converted": "green", "exists": "cyan", "skipped": "yellow", "failed": "red"}
    counts = {s: sum(r.status == s for r in report.results) for s in style}
    if args.json:
        print_json(_summary(args.output, report.results, counts, report.skipped_files))
    for result in report.results:
        where = f" -> {result.output}" if result.output else ""
        note = f" ({result.message})" if result.message else ""
        stdout.print(f"[{style[result.status]}]{result.status:>9}[/] {result.name}{where}{note}")
        if result.status == "failed":
            error_when_silent("convert", f"{result.name}: {result.message}")
    if report.skipped_files:
        stdout.print(f"{len(report.skipped_files)} file(s) without an image skipped (see `medseg info --all`)")
    stdout.print(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "nothing to convert")
    return batch_exit(failed=len(report.failed), total=len(report.results))


def _to_dicom(args: argparse.Namespace) -> int:
    from medseg.cli._render import print_json, stdout
    from medseg.workflows.convert import DicomReadOptions, labels_to_dicom

    result = labels_to_dicom(
        args.input,
        args.series,
        args.output,
        kind=args.to,
        names=args.names,
        made=args.made.upper(),
        dicom=DicomReadOptions(irregular=args.irregular, tilt=args.tilt, workers=args.workers),
        overwrite=args.overwrite,
    )
    if args.json:
        counts = {status: int(status == result.status) for status in ("converted", "exists", "skipped", "failed")}
        print_json(_summary(args.output, [result], counts, []))
    note = f" ({result.message})" if result.message else ""
    stdout.print(f"{result.status:>9} {result.name} -> {result.output}{note}")
    return 0


def _summary(
    output: Path, results: list[ConversionResult], counts: dict[str, int], skipped: list[tuple[str, str]]
) -> dict[str, Any]:
    """What ``--json`` prints: every series or file with its status, output and message."""
    return {
        "output": str(output),
        "counts": counts,
        "results": [dataclasses.asdict(result) for result in results],
        "skipped_files": [{"path": path, "reason": reason} for path, reason in skipped],
    }
