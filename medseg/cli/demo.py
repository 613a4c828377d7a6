"""``medseg demo``: the bundled model on the sample CT, DICOM in, NIfTI + DICOM SEG out, scored."""

from __future__ import annotations

import argparse
from pathlib import Path

from medseg.cli._models import add_model_arguments

HELP = "segment the sample CT with the bundled model and score the result (a first run, and a self-test)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo",
        help=HELP,
        description=HELP + ". Writes the sample phantom CT (a DICOM series with known liver, spleen and "
        "kidney labels) into OUTPUT/input, segments it with the model shipped in the package exactly as "
        "`medseg predict --format nifti,seg --stats --preview` does (OUTPUT/masks), scores the DICOM SEG "
        "against the true labels (OUTPUT/evaluation.csv) and writes OUTPUT/summary.json. "
        "Takes well under a minute on a laptop CPU. "
        "Exit code 0: every label reached Dice > 0.8; 1: it did not, or a step failed; 2: usage error.",
    )
    parser.add_argument(
        "--output",
        "-o",
        type=Path,
        default=Path("medseg-demo"),
        metavar="OUTPUT",
        help="the demo folder: new, empty, or one a previous demo wrote (default: ./medseg-demo)",
    )
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: CUDA when available"
    )
    add_model_arguments(parser, required=False, several=False)
    parser.add_argument(
        "--json", action="store_true", help="print summary.json (outputs, Dice, times) instead of lines"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from medseg.cli._models import resolve_models
    from medseg.cli._render import print_json, progress_bar, stdout
    from medseg.workflows.demo import MIN_DICE, run_demo

    if args.model is not None:
        args.model = resolve_models(args)[0]
    with progress_bar(not args.quiet) as progress:
        demo = run_demo(args.output, device=args.device, model=args.model, progress=progress)
    if args.json:
        print_json({"output": str(demo.output), **demo.summary()})
    names = {
        "nifti": "mask (NIfTI)",
        "seg": "mask (DICOM SEG)",
        "stats_csv": "statistics",
        "preview": "preview",
        "evaluation": "scores",
        "summary": "summary",
    }
    stdout.print(f"sample CT (DICOM): {demo.scan.dicom}")
    for kind, label in names.items():
        if kind in demo.outputs:
            stdout.print(f"{label + ':':<18} {demo.outputs[kind]}")
    if demo.seg_check:
        stdout.print(f"{'SEG check:':<18} {demo.seg_check}")
    for name, value in demo.dice.items():
        style = "green" if value > MIN_DICE else "red"
        stdout.print(f"Dice {name:<13} [{style}]{value:.3f}[/]")
    verdict = "[green]passed[/]" if demo.passed else f"[red]FAILED[/] (every label needs Dice > {MIN_DICE})"
    stdout.print(f"demo {verdict} on {demo.device} in {demo.seconds['total']:.1f} s")
    return 0 if demo.passed else 1
