"""``medseg info PATH``: what series or images a path holds, and what is wrong with them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from medseg.cli.exits import Exit

HELP = "list the image series in a DICOM folder and the NIfTI/NRRD/MHA files in a tree (or describe one file)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "info",
        help=HELP,
        description=HELP + ". Every DICOM series found is listed with its folder, modality, size, spacing, "
        "orientation, UID and any problems (missing slices, uneven spacing, gantry tilt, ...); every "
        "NIfTI/NRRD/MHA file with the same, read from its header. "
        "Localizers are flagged. Non-image files are counted (listed with --all).",
    )
    parser.add_argument("path", type=Path, help="a DICOM folder or tree, a DICOM file, or a NIfTI/NRRD/MHA file")
    parser.add_argument("--json", action="store_true", help="print a JSON list of objects instead of text")
    parser.add_argument("--all", action="store_true", help="also list every skipped (non-image) file and why")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from medseg.cli._render import print_json, progress_bar
    from medseg.errors import InputError
    from medseg.workflows.info import inventory

    with progress_bar(not args.quiet) as progress:
        found = inventory(args.path, progress=progress)
    if args.json:
        print_json(found.entries)
        return Exit.OK if found.entries else Exit.USAGE
    _print_text(found.entries, found.skipped, show_skipped=args.all)
    if not found.entries:
        raise InputError(f"{args.path}: no image series found")
    return Exit.OK


def _print_text(entries: list[dict[str, Any]], skipped: list[dict[str, str]], *, show_skipped: bool) -> None:
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from medseg.cli._render import stdout

    if entries:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
        for heading in ("", "folder", "series or file", "modality", "slices", "size", "spacing mm", "orientation"):
            table.add_column(heading, justify="right" if heading in ("", "slices") else "left")
        for number, e in enumerate(entries, start=1):
            title = " ".join(
                str(x)
                for x in (
                    f"#{e['series_number']}" if e.get("series_number") is not None else None,
                    e.get("description"),
                    f"[{e['part']}]" if e.get("part") else None,
                )
                if x
            )
            flags = " [yellow]localizer[/]" if e.get("is_localizer") else ""
            table.add_row(
                f"{number}.",
                escape(e["folder"]),
                f"[bold]{escape(title or 'unnamed')}[/]{flags}",
                escape(e.get("modality") or "-"),
                str(e["num_slices"]),
                "x".join(str(n) for n in e["size"]),
                " x ".join(f"{v:.4g}" for v in e["spacing"]),
                e["orientation"],
            )
        # Piped into a file or another program: no terminal width to fit, so no row is cut.
        (stdout if stdout.is_terminal else Console(width=1000, highlight=False, quiet=stdout.quiet)).print(table)
    for number, e in enumerate(entries, start=1):
        details = [f"UID {e['series_uid']}"] if e.get("series_uid") else []
        if e.get("dtype"):
            details.append(f"{e['channels']} channel(s) of {e['dtype']}, origin {e['origin']} mm")
        details += [f"[red]![/] {escape(problem['message'])}" for problem in e["problems"]]
        for index, line in enumerate(details):
            stdout.print(f"{f'{number}.' if index == 0 else '':<3}{line}")
    if skipped:
        stdout.print(f"{len(skipped)} file(s) skipped (no image){'' if show_skipped else '; --all lists them'}")
        if show_skipped:
            for s in skipped:
                stdout.print(f"   {escape(s['path'])}: {escape(s['reason'])}")
