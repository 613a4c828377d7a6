#!/usr/bin/env python
"""The CPU phantom experiment: ``medseg plan`` + ``train --time-limit`` vs the plain MONAI recipe, same minutes.

What it does, in one run, on the CPU:

1. writes CT phantoms with ``medseg.synthetic.write_phantom_dataset`` (nnU-Net layout,
   ``--train-cases`` labelled training cases and ``--test-cases`` unseen ones with
   their labels in ``labelsTs``; seed fixed, so every run sees the same data);
2. **medseg**, through its command line exactly as a user runs it
   (``sys.executable -m medseg ...``)::

       medseg plan DATASET --device cpu --output WORK/medseg/plan.yaml
       medseg train DATASET --output WORK/medseg/run --pipeline WORK/medseg/plan.yaml \\
           --time-limit MINUTES --device cpu
       medseg predict --model WORK/medseg/run/model DATASET/imagesTs/*.nii.gz \\
           --output WORK/medseg/predictions --device cpu
       medseg evaluate WORK/medseg/predictions DATASET/labelsTs --output WORK/medseg/evaluation.csv

3. **the plain MONAI recipe**, in this process, tutorial style (the spleen
   segmentation tutorial): ``CacheDataset`` over ``LoadImaged``, ``EnsureChannelFirstd``,
   ``ScaleIntensityRanged`` (its -57..164 HU window), ``CropForegroundd``,
   ``Orientationd(RAS)``, ``Spacingd`` (to the training images' median spacing, which is
   also medseg's target: the tutorial's 1.5 x 1.5 x 2 mm would multiply the phantoms'
   voxels by ten), then ``RandCropByPosNegLabeld`` (4 crops per image, half centred on
   foreground) and a ``DataLoader`` of 2 images; ``UNet`` with channels (16, 32, 64, 128,
   256), strides 2, two residual units and batch norm; ``DiceCELoss``; Adam at 1e-4;
   trained on **all** training cases (medseg holds a fifth out for validation) for the
   same wall-clock minutes, counted from the start of caching as medseg's time limit
   counts its preparation, keeping the last weights; predicted with
   ``sliding_window_inference`` and brought back to each case's own grid with
   ``Invertd``, as the tutorial does; written as NIfTI with the image's affine;
4. scores both with the same code: ``medseg evaluate`` against ``labelsTs``;
5. prints a table (method, steps, minutes, mean Dice per label and overall) and
   writes it to ``WORK/results.json``.

The tutorial's 96^3 patch is larger than a whole phantom (about 92 x 74 x 40 voxels
at the median spacing), so the MONAI patch is 64 x 64 x 32 (the tutorial's share of
an abdomen; ``benchmarks/train_throughput.py`` times the same recipe). Both methods
use torch's threads (``--threads`` sets them for both, through ``OMP_NUM_THREADS``).
The machine should be otherwise idle: both methods are limited by wall-clock time.

Example (the issue's experiment: about 25 minutes)::

    .venv/bin/python benchmarks/phantom_experiment.py --minutes 10 --workdir /tmp/phantom-experiment
    .venv/bin/python benchmarks/phantom_experiment.py --minutes 0.5 --train-cases 4 --test-cases 2  # smoke test
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # medseg from this checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_throughput's MONAI recipe

from train_throughput import (  # noqa: E402
    TUTORIAL_BATCH,
    TUTORIAL_CHANNELS,
    TUTORIAL_PATCH,
    TUTORIAL_SAMPLES,
    cpu_line,
    monai_files,
    monai_preprocessing,
    monai_training_transforms,
    monai_unet,
    versions,
)

warnings.filterwarnings("ignore", category=FutureWarning, module="monai")
SEED = 0
#: The tutorial's sliding-window settings: 4 windows per forward pass, MONAI's default overlap (0.25).
SW_BATCH = 4


@dataclass
class Outcome:
    """One method's result."""

    method: str
    steps: int = 0
    train_minutes: float = math.nan
    dice: dict[str, float] = field(default_factory=dict)  # label name -> mean Dice over the test cases
    error: str = ""

    @property
    def mean_dice(self) -> float:
        values = [v for v in self.dice.values() if not math.isnan(v)]
        return sum(values) / len(values) if values else math.nan


class StageError(RuntimeError):
    """A stage of the experiment failed; the message says which and where its log is."""


# -- medseg, through its command line -------------------------------------------------------


def medseg_cli(args: Sequence[str], log: Path, env: dict[str, str]) -> float:
    """Run ``python -m medseg ARGS`` with its output in ``log``; returns the wall time (s)."""
    command = [sys.executable, "-m", "medseg", *args]
    started = time.monotonic()
    with log.open("w") as out:
        out.write("$ " + " ".join(command) + "\n")
        out.flush()
        # in the log's folder: `python -m` puts the working directory first on sys.path, before PYTHONPATH
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, check=False, cwd=log.parent)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        tail = log.read_text().strip().splitlines()[-3:]
        raise StageError(f"medseg {args[0]} exited with {result.returncode} (see {log}): {' | '.join(tail)}")
    return seconds


def steps_trained(run: Path, iterations_per_epoch: int) -> int:
    """Steps of a ``medseg train`` run: whole epochs from metrics.csv, the last one's from train.log if cut short."""
    with (run / "metrics.csv").open() as f:
        epochs = sum(1 for _ in csv.DictReader(f))
    cut = re.search(r"stopped after epoch (\d+) of \d+ \((\d+) of its", (run / "train.log").read_text())
    if cut and int(cut.group(1)) == epochs:
        return (epochs - 1) * iterations_per_epoch + int(cut.group(2))
    return epochs * iterations_per_epoch


def run_medseg(dataset: Path, work: Path, *, minutes: float, env: dict[str, str], log) -> Outcome:
    """plan, train, predict, evaluate: the user's commands."""
    from medseg.config import load_pipeline

    outcome = Outcome("medseg (plan + train)")
    work.mkdir(parents=True, exist_ok=True)
    plan, run, predictions = work / "plan.yaml", work / "run", work / "predictions"
    seconds = medseg_cli(["plan", str(dataset), "--device", "cpu", "--output", str(plan)], work / "plan.log", env)
    pipeline = load_pipeline(plan)
    log(
        f"medseg plan: {seconds:.0f} s; filters {pipeline.network.filters}, patch {pipeline.training.patch_size}, "
        f"batch {pipeline.training.batch_size} ({plan})"
    )
    train = ["train", str(dataset), "--output", str(run), "--pipeline", str(plan), "--time-limit", f"{minutes:g}"]
    seconds = medseg_cli([*train, "--device", "cpu"], work / "train.log", env)
    outcome.train_minutes = seconds / 60
    outcome.steps = steps_trained(run, pipeline.training.iterations_per_epoch)
    log(f"medseg train: {seconds / 60:.1f} min, {outcome.steps} steps ({work / 'train.log'})")
    images = sorted(str(p) for p in (dataset / "imagesTs").glob("*_0000.nii.gz"))
    predict = ["predict", "--model", str(run / "model"), *images, "--output", str(predictions), "--device", "cpu"]
    seconds = medseg_cli(predict, work / "predict.log", env)
    log(f"medseg predict: {len(images)} case(s) in {seconds:.0f} s")
    outcome.dice = evaluate(predictions, dataset / "labelsTs", work / "evaluation.csv", env)
    return outcome


def evaluation_summary(predictions: Path, references: Path, csv_path: Path, env: dict[str, str]) -> dict:
    """``medseg evaluate``; its JSON summary, checked: every reference case scored."""
    command = ["evaluate", str(predictions), str(references), "--output", str(csv_path)]
    medseg_cli(command, csv_path.with_suffix(".log"), env)
    summary = json.loads(csv_path.with_suffix(".json").read_text())
    if summary.get("failed") or summary.get("unmatched_references"):
        raise StageError(f"{csv_path.with_suffix('.json')}: cases failed or went unscored")
    return summary


def evaluate(predictions: Path, references: Path, csv_path: Path, env: dict[str, str]) -> dict[str, float]:
    """``medseg evaluate``; the mean Dice of each label from its JSON summary."""
    summary = evaluation_summary(predictions, references, csv_path, env)
    dice = {}
    for label in summary["labels"]:
        mean = label["metrics"]["dice"]["mean"]
        dice[label["name"]] = math.nan if mean is None else float(mean)
    return dice


# -- the plain MONAI recipe -----------------------------------------------------------------


def median_spacing(images: Sequence[Path]) -> tuple[float, float, float]:
    """Per axis, the median voxel size (mm) of the images, from their NIfTI headers."""
    import nibabel as nib
    import numpy as np

    zooms = np.array([nib.load(str(p)).header.get_zooms()[:3] for p in images], dtype=np.float64)
    return tuple(float(v) for v in np.median(zooms, axis=0))  # type: ignore[return-value]


def train_monai(dataset: Path, *, minutes: float, spacing: Sequence[float], num_classes: int, log):
    """The tutorial's training loop, stopped after ``minutes`` of wall time (caching included)."""
    import torch
    from monai.utils import set_determinism

    set_determinism(seed=SEED)
    images = sorted((dataset / "imagesTr").glob("*_0000.nii.gz"))
    labels = [dataset / "labelsTr" / p.name.replace("_0000.nii.gz", ".nii.gz") for p in images]
    return train_recipe(
        monai_files(images, labels),
        monai_training_transforms(spacing, TUTORIAL_PATCH, TUTORIAL_SAMPLES),
        build_model=lambda: monai_unet(TUTORIAL_CHANNELS, out_channels=num_classes),
        optimizer=lambda parameters: torch.optim.Adam(parameters, 1e-4),
        minutes=minutes,
        log=log,
    )


def train_recipe(
    files: Sequence[dict],
    transform,
    *,
    build_model: Callable[[], Any],
    optimizer: Callable[[Any], Any],
    minutes: float,
    log,
):
    """The tutorial's loop: ``CacheDataset`` of ``files``, batches of 2 items, ``DiceCELoss``, for ``minutes``.

    The clock starts before caching. ``build_model()`` makes the network (after caching) and
    ``optimizer(parameters)`` its optimiser. Returns the model (last weights), steps and minutes.
    """
    from monai.data import CacheDataset, DataLoader
    from monai.losses import DiceCELoss

    started = time.monotonic()
    deadline = started + minutes * 60
    data = CacheDataset(files, transform=transform, cache_rate=1.0, num_workers=0, progress=False)
    loader = DataLoader(data, batch_size=TUTORIAL_BATCH, shuffle=True, num_workers=0)
    log(f"MONAI: cached {len(data)} cases in {time.monotonic() - started:.0f} s")
    model = build_model()
    criterion = DiceCELoss(to_onehot_y=True, softmax=True)
    optimiser = optimizer(model.parameters())
    steps, epochs, last_loss = 0, 0, math.nan
    model.train()
    while time.monotonic() < deadline:
        epochs += 1
        for batch in loader:
            optimiser.zero_grad()
            loss = criterion(model(batch["image"]), batch["label"])
            loss.backward()
            optimiser.step()
            steps += 1
            last_loss = float(loss.detach())
            if time.monotonic() >= deadline:
                break
        log(f"MONAI: epoch {epochs}, {steps} steps, loss {last_loss:.4f}, {(time.monotonic() - started) / 60:.1f} min")
    return model, steps, (time.monotonic() - started) / 60


def predict_monai(
    model,
    images: Sequence[Path | Sequence[Path]],
    output: Path,
    *,
    spacing: Sequence[float],
    patch: Sequence[int] = TUTORIAL_PATCH,
    preprocessing=None,
    inferer: Callable[[Any, Any], Any] | None = None,
) -> None:
    """Sliding-window predictions, inverted back onto each image's grid, as ``<case>.nii.gz`` in ``output``.

    An image is one file, or the list of one case's channel files (``<case>_0000``, ``_0001``, ...).
    ``preprocessing`` (of the "image" key) defaults to the tutorial's at ``spacing``; ``inferer(image,
    model)`` (a MONAI inferer) to the tutorial's ``sliding_window_inference`` of ``patch``.
    """
    import nibabel as nib
    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference
    from monai.transforms import AsDiscreted, Compose, Invertd

    if preprocessing is None:
        preprocessing = monai_preprocessing(spacing, keys=("image",))
    post = Compose(
        [
            Invertd(keys="pred", transform=preprocessing, orig_keys="image", nearest_interp=False, to_tensor=True),
            AsDiscreted(keys="pred", argmax=True),
        ]
    )
    output.mkdir(parents=True, exist_ok=True)
    model.eval()
    for image in images:
        files = [image] if isinstance(image, (str, Path)) else list(image)
        path = Path(files[0])
        item = preprocessing({"image": str(path) if len(files) == 1 else [str(f) for f in files]})
        with torch.no_grad():
            if inferer is None:
                item["pred"] = sliding_window_inference(item["image"][None], tuple(patch), SW_BATCH, model)[0]
            else:
                item["pred"] = inferer(item["image"][None], model)[0]
        labels = np.asarray(post(item)["pred"][0]).astype(np.uint8)
        source = nib.load(str(path))
        if labels.shape != source.shape[:3]:
            raise StageError(f"{path.name}: MONAI's inverted prediction is {labels.shape}, the image {source.shape}")
        image = nib.Nifti1Image(labels, source.affine)
        image.set_qform(source.affine, code=1)
        image.set_sform(source.affine, code=1)
        nib.save(image, str(output / path.name.replace("_0000.nii.gz", ".nii.gz")))


def run_monai(dataset: Path, work: Path, *, minutes: float, env: dict[str, str], log) -> Outcome:
    outcome = Outcome("MONAI recipe (tutorial)")
    work.mkdir(parents=True, exist_ok=True)
    spacing = median_spacing(sorted((dataset / "imagesTr").glob("*_0000.nii.gz")))
    labels = json.loads((dataset / "dataset.json").read_text())["labels"]
    num_classes = max(int(v) for v in labels.values()) + 1
    log(f"MONAI: spacing {[round(s, 3) for s in spacing]} mm, {num_classes} classes")
    model, outcome.steps, outcome.train_minutes = train_monai(
        dataset, minutes=minutes, spacing=spacing, num_classes=num_classes, log=log
    )
    started = time.monotonic()
    images = sorted((dataset / "imagesTs").glob("*_0000.nii.gz"))
    predict_monai(model, images, work / "predictions", spacing=spacing)
    log(f"MONAI predict: {len(images)} case(s) in {time.monotonic() - started:.0f} s")
    outcome.dice = evaluate(work / "predictions", dataset / "labelsTs", work / "evaluation.csv", env)
    return outcome


# -- report ---------------------------------------------------------------------------------


def print_table(outcomes: Sequence[Outcome], names: Sequence[str]) -> None:
    header = f"{'method':<26} {'steps':>7} {'train min':>9} " + " ".join(f"{n:>8}" for n in names) + f" {'mean':>7}"
    print(header)
    print("-" * len(header))
    for o in outcomes:
        if o.error:
            print(f"{o.method:<26} failed: {o.error}")
            continue
        dice = " ".join(f"{o.dice.get(n, math.nan):>8.3f}" for n in names)
        print(f"{o.method:<26} {o.steps:>7} {o.train_minutes:>9.1f} {dice} {o.mean_dice:>7.3f}")
    print("(mean Dice over the unseen test cases, scored by `medseg evaluate`; mean = over the labels)")


def _json_safe(value):
    """NaN becomes null (strict JSON); containers are walked."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="On CT phantoms and the CPU: medseg plan + train --time-limit vs the plain MONAI recipe trained "
        "for the same minutes; both predict unseen phantoms and are scored by `medseg evaluate`.",
        epilog="Exit status: 0 when both methods ran to the end, 1 when a stage failed.",
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="training minutes per method (default 10)")
    parser.add_argument("--train-cases", type=int, default=24, help="labelled training phantoms (default 24)")
    parser.add_argument("--test-cases", type=int, default=8, help="unseen test phantoms (default 8)")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where everything goes (default: a new temporary folder, kept)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads for both methods (default: torch's)")
    parser.add_argument(
        "--methods", default="medseg,monai", help="comma-separated: medseg, monai (default both, in that order)"
    )
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not args.minutes > 0 or args.train_cases < 2 or args.test_cases < 1 or set(methods) - {"medseg", "monai"}:
        parser.error("need --minutes > 0, --train-cases >= 2, --test-cases >= 1, --methods from medseg,monai")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")

    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
        import torch

        torch.set_num_threads(args.threads)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="medseg-phantom-experiment-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{(time.monotonic() - started) / 60:5.1f} min] {message}", flush=True)

    print(cpu_line())
    print(versions())
    from medseg.synthetic import write_phantom_dataset

    dataset = work / "Dataset001_Phantom"
    if not (dataset / "dataset.json").is_file():
        write_phantom_dataset(dataset, num_training=args.train_cases, num_test=args.test_cases, seed=SEED)
        log(f"wrote {args.train_cases} training and {args.test_cases} test phantoms to {dataset}")
    else:
        log(f"reusing the phantoms in {dataset}")

    runners = {"medseg": run_medseg, "monai": run_monai}
    outcomes = []
    for method in methods:
        try:
            outcomes.append(runners[method](dataset, work / method, minutes=args.minutes, env=env, log=log))
        except StageError as exc:
            outcomes.append(Outcome(method, error=str(exc)))
            log(f"{method} failed: {exc}")
    names = list(dict.fromkeys(n for o in outcomes for n in o.dice))
    print()
    print(
        f"{args.train_cases} training / {args.test_cases} unseen phantoms, {args.minutes:g} min of training each, "
        f"CPU threads: {args.threads or 'torch default'}"
    )
    print_table(outcomes, names)
    results = {
        "minutes": args.minutes,
        "train_cases": args.train_cases,
        "test_cases": args.test_cases,
        "threads": args.threads,
        "outcomes": [{**asdict(o), "mean_dice": o.mean_dice} for o in outcomes],
    }
    (work / "results.json").write_text(json.dumps(_json_safe(results), indent=2) + "\n")
    print(f"results: {work / 'results.json'}")
    return 1 if any(o.error for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
