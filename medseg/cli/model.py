"""``medseg model PATH [--json]``: what a model is, in any format the registry knows (:mod:`medseg.model_formats`)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "describe a model: its kind, labels, channels, spacing, patch, folds and size"


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "model",
        help=HELP,
        description=HELP + ". PATH is a medseg model folder (or the training RUN_DIR), an nnU-Net v2 "
        "trained-model folder (<Dataset>/<Trainer>__<Plans>__<configuration>/) or a MONAI bundle (folder "
        "or .zip); the kind is found from the folder's content. Only small files are read.",
    )
    parser.add_argument("path", type=Path, metavar="PATH", help="the model folder or bundle, or 'bundled'")
    parser.add_argument("--json", action="store_true", help="print the description as JSON")
    parser.add_argument(
        "--checkpoint", choices=("final", "best"), default="final", help="nnU-Net: which checkpoint (default: final)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    from medseg.cli._render import stdout
    from medseg.model_formats import ModelOptions, describe_model, resolve_path

    info = describe_model(resolve_path(args.path), ModelOptions(checkpoint=args.checkpoint))
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
        return 0
    rows = [
        ("kind", info.describe()),
        ("runs in medseg", "yes" if info.runnable else "no (weights missing)"),
        ("labels", ", ".join(f"{n} {name}" for n, name in info.labels.items()) or "-"),
        ("channels", ", ".join(info.channels) or "-"),
        ("modality", info.modality or "-"),
        ("dimensions", f"{info.dimensions}D" if info.dimensions else "-"),
        ("spacing (mm)", " x ".join(f"{v:g}" for v in info.spacing) if info.spacing else "-"),
        ("patch", " x ".join(map(str, info.patch_size)) if info.patch_size else "-"),
        ("weights", f"{info.parameters / 1e6:.2f} M parameters" if info.parameters else "-"),
        ("version", info.version or "-"),
    ]
    if info.trainer or info.configuration:
        rows.insert(2, ("trainer", f"{info.trainer or '-'} ({info.configuration or '-'})"))
    rows += [
        (key, f"{value:.3f}" if isinstance(value, float) else str(value))
        for key, value in info.source.items()
        if value not in (None, "")
    ]
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        stdout.print(f"{key:<{width}}  {value}", markup=False)
    return 0
