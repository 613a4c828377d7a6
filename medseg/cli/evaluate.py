"""``medseg evaluate PRED REF``: Dice, HD95, surface Dice and volumes per case and label."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from medseg.cli.exits import batch_exit

if TYPE_CHECKING:
    from rich.table import Table

    from medseg.workflows.evaluate import Evaluation

HELP = "score predicted label maps against references (Dice, IoU, HD95, ASSD, surface Dice, volume)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "evaluate",
        help=HELP,
        description=HELP + ". PRED and REF are label files (NIfTI, NRRD, MHA, DICOM SEG) or folders of them; "
        "cases pair by name (X.nii.gz is case X; a `medseg predict` folder X/ is case X). Writes a CSV "
        "(one row per case and label), a JSON summary and a box plot PNG beside it. "
        "Exit code 0: all paired cases scored; 1: some case could not be scored, or none paired; 2: usage error.",
    )
    parser.add_argument("predictions", type=Path, metavar="PRED", help="predicted label file or folder")
    parser.add_argument("references", type=Path, metavar="REF", help="reference label file or folder")
    parser.add_argument(
        "--labels",
        default=None,
        help="comma-separated label numbers or names to score, e.g. 1,2 or liver,spleen "
        "(default: every label in the references)",
    )
    parser.add_argument(
        "--tolerance", type=float, default=2.0, metavar="MM", help="surface Dice tolerance in mm (default 2)"
    )
    parser.add_argument(
        "--output",
        "-o",
        type=Path,
        default=None,
        metavar="FILE",
        help="CSV to write; the .json summary and .png plot go beside it "
        "(default: PRED/evaluation.csv, or evaluation.csv beside a PRED file)",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes scoring cases side by side (default 1)")
    parser.add_argument("--json", action="store_true", help="print the JSON summary (as written) instead of the table")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from medseg.cli._render import errors, print_json, progress_bar, stderr, stdout
    from medseg.errors import ConfigError
    from medseg.workflows.evaluate import evaluate, write_evaluation

    for path in (args.predictions, args.references):
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder")
    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    labels = None
    if args.labels is not None:
        labels = [item.strip() for item in args.labels.split(",") if item.strip()]
        if not labels:
            raise ConfigError(f"--labels names no label: {args.labels!r}")
    output = args.output or (
        args.predictions / "evaluation.csv" if args.predictions.is_dir() else args.predictions.parent / "evaluation.csv"
    )
    with progress_bar(not args.quiet) as progress:
        evaluation = evaluate(
            args.predictions,
            args.references,
            labels=labels,
            tolerance_mm=args.tolerance,
            workers=args.workers,
            progress=progress,
        )
    written = write_evaluation(evaluation, output)
    if args.json:
        print_json({**evaluation.summary_dict(), "outputs": [str(p) for p in written]})
    else:
        stdout.print(_table(evaluation))
    for warning in evaluation.warnings:
        stderr.print(f"[yellow]warning:[/] {escape(warning)}")
    for side, ids in (("prediction", evaluation.unmatched_predictions), ("reference", evaluation.unmatched_references)):
        if ids:
            listed = ", ".join(ids[:10]) + (f", ... ({len(ids)} in all)" if len(ids) > 10 else "")
            stderr.print(f"[yellow]warning:[/] {len(ids)} case(s) with a {side} only, not scored: {escape(listed)}")
    for failure in evaluation.failures:
        errors.print(f"[red]failed:[/] {escape(failure.case_id)}: {escape(failure.message)}")
    if not args.json:
        stdout.print("wrote " + escape(", ".join(str(p) for p in written)))
    if not evaluation.cases and not evaluation.failures:
        errors.print("[red]no case scored[/]: no prediction and reference share a case id")
    return batch_exit(failed=len(evaluation.failures), total=len(evaluation.cases) + len(evaluation.failures))


def _table(evaluation: Evaluation) -> Table:
    """Per label: cases scored, Dice, HD95 and NSD as mean/median, missed and spurious counts."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        title=f"{len(evaluation.cases)} case(s); mean/median; surface Dice at {evaluation.tolerance_mm:g} mm",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for heading in ("label", "cases", "Dice", "HD95 mm", "NSD", "missed", "spurious"):
        table.add_column(heading, justify="left" if heading == "label" else "right", no_wrap=heading != "label")
    for s in evaluation.summary():
        dice, hd95, nsd = s.metrics["dice"], s.metrics["hd95_mm"], s.metrics["nsd"]
        table.add_row(
            escape(f"{s.label} {s.name}" if s.name != f"label {s.label}" else str(s.label)),
            str(s.cases - s.statuses["absent"]),
            f"{_fmt(dice.mean, 3)}/{_fmt(dice.median, 3)}",
            f"{_fmt(hd95.mean, 2)}/{_fmt(hd95.median, 2)}",
            f"{_fmt(nsd.mean, 3)}/{_fmt(nsd.median, 3)}",
            str(s.statuses["missed"]),
            str(s.statuses["spurious"]),
        )
    return table


def _fmt(value: float, digits: int) -> str:
    return "-" if value != value else f"{value:.{digits}f}"
