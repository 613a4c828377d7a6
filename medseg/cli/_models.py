"""The ``--model`` options that predict, pacs segment, listen and demo share, and their checks."""

from __future__ import annotations

import argparse
from pathlib import Path

MODEL_HELP = (
    "a model: a medseg model folder (or the RUN_DIR of medseg train), an nnU-Net v2 trained-model folder "
    "(Dataset/Trainer__Plans__configuration), or a MONAI bundle folder or .zip; 'bundled' for the phantom "
    "model shipped with medseg. Give --model more than once to merge several models' labels into one map"
)


def add_model_arguments(parser: argparse.ArgumentParser, *, required: bool = True, several: bool = True) -> None:
    """``--model/-m`` (repeatable where ``several``), ``--folds`` and ``--checkpoint``."""
    parser.add_argument(
        "--model",
        "-m",
        type=Path,
        required=required,
        action="append" if several else "store",
        default=None,
        help=MODEL_HELP if several else MODEL_HELP.rsplit(". Give", 1)[0],
    )
    parser.add_argument(
        "--folds",
        default=None,
        metavar="LIST",
        help="nnU-Net models: comma-separated folds to average, e.g. 0,1,2 (default: every fold present)",
    )
    parser.add_argument(
        "--checkpoint",
        choices=("final", "best"),
        default="final",
        help="nnU-Net models: checkpoint_final.pth (default) or checkpoint_best.pth",
    )
    parser.add_argument(
        "--orientation",
        choices=("stored", "ras"),
        default=None,
        help="nnU-Net models: hand the network the voxels as the scan stores them (stored, as nnUNetv2_predict) "
        "or reordered to RAS (ras, as TotalSegmentator); default: ras for TotalSegmentator models, else stored",
    )


def resolve_models(args: argparse.Namespace) -> list[Path]:
    """The models asked for ('bundled' resolved), checked from their small files before any work.

    Raises:
        ModelError: a path that is not a model medseg runs, or a fold asked for that is missing.
        ConfigError: a malformed --folds.
    """
    from medseg.model_formats import check_models, resolve_path

    given = args.model if isinstance(args.model, list) else [args.model]
    models = [resolve_path(path) for path in given]
    check_models(models, model_options(args))
    return models


def parse_folds(text: str | tuple[int, ...] | None) -> tuple[int, ...] | None:
    """``"0,1,2"`` -> ``(0, 1, 2)``; None stays None.

    Raises:
        ConfigError: not a comma-separated list of whole numbers.
    """
    from medseg.errors import ConfigError

    if text is None or isinstance(text, tuple):
        return text
    try:
        folds = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        folds = ()
    if not folds or any(f < 0 for f in folds):
        raise ConfigError(f"--folds takes comma-separated fold numbers such as 0,1,2, got {text!r}")
    return folds


def model_options(args: argparse.Namespace):  # -> medseg.model_formats.ModelOptions
    """The nnU-Net options given (folds parsed).

    Raises:
        ConfigError: a malformed --folds.
    """
    from medseg.model_formats import ModelOptions

    return ModelOptions(folds=parse_folds(args.folds), checkpoint=args.checkpoint, orientation=args.orientation)


def model_argument(models: list[Path]) -> Path | list[Path]:
    """What the workflows take: one path, or the list to merge."""
    return models[0] if len(models) == 1 else models
