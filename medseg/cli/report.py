"""``medseg report OUT``: one self-contained HTML page to see a whole prediction batch at once."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "write an HTML report of a prediction output folder (summary, sortable case table, volume plots)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "report",
        help=HELP,
        description=HELP + ". OUT is a `medseg predict` output folder. The page opens from disk, with no "
        "server and no network: counts, time, model and versions; every case with its status, volumes, "
        "quality flags, confidence, warnings, seconds and a thumbnail of its preview, sortable and "
        "filterable; per-label volume plots with the flagged cases in red; and a button exporting the "
        "flagged cases as CSV. Exit code 0: written; 1: the folder or references could not be read; 2: usage error.",
    )
    parser.add_argument("folder", type=Path, metavar="OUT", help="the output folder of medseg predict")
    parser.add_argument(
        "--reference",
        type=Path,
        default=None,
        metavar="REF",
        help="reference label maps (file or folder, paired by case name as in medseg evaluate): "
        "adds Dice and HD95 per label",
    )
    parser.add_argument(
        "--output", "-o", type=Path, default=None, metavar="FILE", help="the HTML file (default: OUT/report.html)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from medseg.cli._render import progress_bar, stderr, stdout
    from medseg.workflows.report import write_report

    for path in (args.folder, args.reference):
        if path is not None and not path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder")
    with progress_bar(not args.quiet and args.reference is not None) as progress:
        result = write_report(args.folder, reference=args.reference, output=args.output, progress=progress)
    for warning in result.warnings:
        stderr.print(f"[yellow]warning:[/] {escape(warning)}")
    counts = result.counts
    stdout.print(
        f"{counts['cases']} case(s): {counts['done']} done, {counts['failed']} failed, {counts['flagged']} flagged; "
        f"wrote {escape(str(result.path))}"
    )
    return 0
