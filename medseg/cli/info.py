"""``medseg info PATH``: what series or images a path holds, and what is wrong with them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = "list the image series in a DICOM folder (or describe a NIfTI/NRRD/MHA file)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "info",
        help=HELP,
        description=HELP + ". Every series found is listed with its UID, modality, size, spacing, "
        "orientation and any problems (missing slices, uneven spacing, gantry tilt, ...). "
        "Localizers are flagged. Non-image files are counted (listed with --all).",
    )
    parser.add_argument("path", type=Path, help="a DICOM folder or tree, a DICOM file, or a NIfTI/NRRD/MHA file")
    parser.add_argument("--json", action="store_true", help="print a JSON list of objects instead of text")
    parser.add_argument("--all", action="store_true", help="also list every skipped (non-image) file and why")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from medseg.cli._render import print_json, progress_bar
    from medseg.errors import InputError
    from medseg.io import image_format

    if not args.path.exists():
        raise FileNotFoundError(f"{args.path}: no such file or folder")
    if args.path.is_file() and image_format(args.path):
        entries, skipped = [_image_entry(args.path)], []
    else:
        from medseg.io.dicom import scan

        with progress_bar(not args.quiet) as progress:
            found = scan(args.path, progress=lambda done, total: progress("scan", done, total))
        entries = [s.to_dict() for s in found.series]
        skipped = [{"path": s.path, "reason": s.reason} for s in found.skipped]
    if args.json:
        print_json(entries)
        return 0 if entries else 1
    _print_text(entries, skipped, show_skipped=args.all)
    if not entries:
        raise InputError(f"{args.path}: no image series found")
    return 0


def _image_entry(path: Path) -> dict[str, Any]:
    from medseg.io import image_format, read_image

    volume = read_image(path)
    return {
        "path": str(path),
        "format": image_format(path),
        "series_uid": None,
        "modality": None,
        "description": path.name,
        "num_slices": volume.spatial_shape[2],
        **volume.geometry.to_dict(),
        "channels": volume.num_channels,
        "dtype": str(volume.dtype),
        "is_localizer": False,
        "problems": [] if volume.geometry.is_orthogonal else [{"code": "sheared", "message": "sheared grid"}],
    }


def _print_text(entries: list[dict[str, Any]], skipped: list[dict[str, str]], *, show_skipped: bool) -> None:
    from medseg.cli._render import stdout

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
        size = "x".join(str(n) for n in e["size"])
        spacing = " x ".join(f"{v:.4g}" for v in e["spacing"])
        flags = " [yellow]localizer[/]" if e.get("is_localizer") else ""
        stdout.print(
            f"[bold]{number}. {title or 'unnamed'}[/]{flags}  {e.get('modality') or '-'}  {e['num_slices']} slices  "
            f"{size}  {spacing} mm  {e['orientation']}"
        )
        if e.get("series_uid"):
            stdout.print(f"   UID {e['series_uid']}")
        if e.get("dtype"):
            stdout.print(f"   {e['channels']} channel(s) of {e['dtype']}, origin {e['origin']} mm")
        for problem in e["problems"]:
            stdout.print(f"   [red]![/] {problem['message']}")
    if skipped:
        stdout.print(f"{len(skipped)} file(s) skipped (no image){'' if show_skipped else '; --all lists them'}")
        if show_skipped:
            for s in skipped:
                stdout.print(f"   {s['path']}: {s['reason']}")
