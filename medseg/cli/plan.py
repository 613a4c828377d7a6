"""``medseg plan DATASET``: fingerprint a training set and write the pipeline chosen for it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "measure a training dataset and write a complete, commented pipeline YAML for it"


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "plan",
        help=HELP,
        description=HELP + ". DATASET is an nnU-Net v2 raw folder, a Medical Segmentation Decathlon "
        "folder, or a CSV/JSON list of image/label files. Every case is checked first (all problems "
        "listed). The fingerprint (spacings, sizes, foreground intensities, label frequencies) "
        "decides target spacing, 2D/3D, patch and batch size within a memory budget, network depth "
        "and width, normalisation and augmentation; each choice is explained in a comment. "
        "For a CPU (--device cpu, or no CUDA GPU visible), the network is narrower and the patch "
        "smaller, so that a training step takes about a quarter of a second. "
        "Deterministic: the same data and options give the same file.",
    )
    parser.add_argument("dataset", type=Path, help="dataset folder or list file")
    parser.add_argument(
        "--output", "-o", type=Path, help="write the pipeline here (and the fingerprint beside it); default: stdout"
    )
    parser.add_argument(
        "--memory-gb",
        type=float,
        default=None,
        help="memory one training step may use, GiB (default: 8 for a GPU, 2 for a CPU)",
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="plan for training on this device (default: cuda when torch sees a CUDA GPU, else cpu)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads training will use, for --device cpu (default: torch's, i.e. the cores or OMP_NUM_THREADS)",
    )
    parser.add_argument(
        "--cpu-speed",
        type=float,
        default=None,
        metavar="FACTOR",
        help="for --device cpu: this machine's training-step time over the planner's reference (2.0: twice as "
        "slow); default: measured in a few seconds. Give it to plan for another machine, or reproducibly",
    )
    parser.add_argument("--dimensions", choices=("auto", "2", "3"), default="auto", help="force a 2D or 3D network")
    parser.add_argument(
        "--epochs", type=int, default=None, help="training epochs to plan for (default: 1000 on a GPU, ~8 h on a CPU)"
    )
    parser.add_argument("--name", default=None, help="the pipeline's name (default: the dataset's)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from medseg.cli._render import progress_bar, stderr
    from medseg.errors import ConfigError
    from medseg.workflows.plan import plan_dataset, plan_text, write_plan

    if not args.dataset.exists():
        raise FileNotFoundError(f"{args.dataset}: no such file or folder")
    if args.memory_gb is not None and args.memory_gb <= 0:
        raise ConfigError(f"--memory-gb must be positive, got {args.memory_gb}")
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {args.epochs}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {args.threads}")
    if args.cpu_speed is not None and not args.cpu_speed > 0:
        raise ConfigError(f"--cpu-speed must be a positive factor, got {args.cpu_speed}")
    dimensions = args.dimensions if args.dimensions == "auto" else int(args.dimensions)
    with progress_bar(not args.quiet) as progress:
        plan = plan_dataset(
            args.dataset,
            memory_gb=args.memory_gb,
            dimensions=dimensions,
            epochs=args.epochs,
            name=args.name,
            device=args.device,
            cpu_threads=args.threads,
            cpu_speed=args.cpu_speed,
            progress=progress,
        )
    pipeline, fingerprint = plan.pipeline, plan.fingerprint
    if args.output is None:
        sys.stdout.write(plan_text(plan))
    else:
        write_plan(plan, args.output)
    if not args.quiet:
        spacing = " x ".join(f"{v:g}" for v in pipeline.preprocessing.spacing)
        patch = " x ".join(str(v) for v in pipeline.training.patch_size)
        where = f" -> {args.output}" if args.output else ""
        device = f"a CPU ({plan.cpu_threads} threads)" if plan.device == "cpu" else "a GPU"
        stderr.print(
            f"planned {pipeline.network.dimensions}D U-Net for {fingerprint.num_cases} cases, to train on {device}: "
            f"spacing {spacing} mm, patch {patch}, batch {pipeline.training.batch_size}{where}"
        )
    return 0
