#!/usr/bin/env python
"""Planner robustness: ``medseg plan`` + ``train --time-limit`` vs the MONAI tutorial recipe on hostile datasets.

Each dataset of ``robustness_data.py`` is built to break an automatic planner in one
way: organs told apart only by their side of the body (``context``), structures far
under 1% of the voxels (``small``), 5 mm slices at 0.7 mm pixels (``aniso``), scans of
15+ million voxels (``large``), two MR channels with bias fields and arbitrary scales
(``mr``), 6-8 mm slices whose content changes from slice to slice (``slices2d``), ten
touching structures from a 2-4 mm ureter to the liver (``touching``). One dataset per
invocation, on the CPU, in one run:

1. writes the dataset into ``WORKDIR/data/`` (nnU-Net v2 layout: ``--train-cases``
   labelled cases, ``--test-cases`` unseen ones with their labels in ``labelsTs``;
   seeded, so every run sees the same scans) or reuses it when a dataset written with
   the same parameters is there;
2. **medseg**, through its command line exactly as a user runs it (``sys.executable -m
   medseg``)::

       medseg plan DATASET --device cpu --output RUN/medseg/plan.yaml
       medseg train DATASET --output RUN/medseg/run --pipeline RUN/medseg/plan.yaml \\
           --time-limit MINUTES --device cpu
       medseg predict --model RUN/medseg/run/model DATASET/imagesTs/*.nii.gz \\
           --output RUN/medseg/predictions --device cpu
       medseg evaluate RUN/medseg/predictions DATASET/labelsTs --output RUN/medseg/evaluation.csv

   (every channel file of the test cases is passed: ``predict`` groups ``<case>_0000``,
   ``<case>_0001`` into one case for a two-channel model). Recorded: training wall
   minutes, steps (``metrics.csv`` and ``train.log``), the plan's spacing, patch,
   dimensions, batch and filters, the share of the training time spent validating and
   loading data where ``metrics.csv`` has ``validation_seconds``/``data_seconds``, and
   the predict command's wall seconds (start-up included) and its cases' own seconds;
3. **the MONAI tutorial recipe**, in this process, for the same minutes counted from the
   start of caching: ``CacheDataset`` over ``LoadImaged`` (a case's channel files
   stacked), ``EnsureChannelFirstd``, the intensity transform, ``CropForegroundd`` (CT
   only), ``Orientationd(RAS)``, ``Spacingd`` to the training images' median spacing;
   ``RandCropByPosNegLabeld`` (4 crops per image, half on foreground) of 96 x 96 x 48
   (each axis clipped to the median image shape at that spacing, rounded down to a
   multiple of 16); batches of 2 images; ``UNet(spatial_dims=3, channels=(16, 32, 64,
   128, 256), strides=(2, 2, 2, 2), num_res_units=2, norm=BATCH)``; ``DiceCELoss``;
   ``AdamW`` at 1e-4; all training cases, last weights. Intensity: CT is
   ``ScaleIntensityRanged`` from the 0.5th to the 99.5th percentile of the training
   images' foreground voxels (read from the training labels before the clock starts,
   as ``medseg plan`` runs before ``medseg train``) to [0, 1], clipped; MR is
   ``NormalizeIntensityd(nonzero=False, channel_wise=True)``. Prediction:
   ``sliding_window_inference`` (overlap 0.25, 4 windows per pass), ``Invertd`` back to
   each scan's grid, NIfTI with the image's affine; timed;
4. scores both with ``medseg evaluate`` against ``labelsTs`` (mean Dice and HD95 per label
   over the test cases, from its JSON summary; HD95 is averaged over the cases where it is
   defined, i.e. where both prediction and reference hold the label);
5. prints a table and appends one JSON line per arm to ``--results`` (dataset, minutes,
   threads, date, CPUs, versions, the command line and every figure). A failing arm is
   recorded with its error and does not stop the other.

``--table FILE`` prints a Markdown table of the results in FILE (the latest line per
dataset and arm; lines carrying ``"reverted"``, a change measured and taken back, are skipped)
for ``benchmarks/README.md``.

Both arms use torch's threads (``--threads`` sets them for both, through
``OMP_NUM_THREADS`` for the medseg commands). Both are limited by wall-clock time: run on
an otherwise idle machine.

Example::

    .venv/bin/python benchmarks/planner_robustness.py --dataset context --minutes 10 \\
        --results benchmarks/planner_robustness_results.jsonl
    for d in small aniso large mr slices2d; do
        .venv/bin/python benchmarks/planner_robustness.py --dataset $d --minutes 10 \\
            --results benchmarks/planner_robustness_results.jsonl
    done
    .venv/bin/python benchmarks/planner_robustness.py --table benchmarks/planner_robustness_results.jsonl
    # smoke test (a few minutes)
    .venv/bin/python benchmarks/planner_robustness.py --dataset mr --minutes 0.5 --train-cases 4 --test-cases 2
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib.metadata
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # medseg from this checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the other benchmarks

from phantom_experiment import (  # noqa: E402
    SEED,
    StageError,
    evaluation_summary,
    median_spacing,
    medseg_cli,
    predict_monai,
    steps_trained,
    train_recipe,
)
from robustness_data import SPECS, ensure_dataset, summarise  # noqa: E402
from train_throughput import (  # noqa: E402
    TUTORIAL_CHANNELS,
    TUTORIAL_SAMPLES,
    cpu_line,
    monai_preprocessing,
    monai_training_transforms,
    monai_unet,
    monai_window,
)

warnings.filterwarnings("ignore", category=FutureWarning, module="monai")
warnings.filterwarnings("ignore", message=".*nvImageCodec")  # MONAI's DICOM reader, unused here

#: The tutorial recipe's patch before clipping to the images, and the multiple each axis is rounded down to
#: (the UNet halves four times).
MONAI_PATCH = (96, 96, 48)
PATCH_MULTIPLE = 16
#: Foreground percentiles of the CT window of the MONAI recipe.
CT_PERCENTILES = (0.5, 99.5)
ARMS = ("medseg", "monai")
Log = Callable[[str], None]


@dataclass
class ArmResult:
    """What one arm did on one dataset; filled in as it goes, so a failure keeps what came before."""

    arm: str
    steps: int | None = None
    train_minutes: float | None = None
    predict_seconds: float | None = None
    dice: dict[str, float | None] = field(default_factory=dict)  # label -> mean over the test cases
    hd95_mm: dict[str, float | None] = field(default_factory=dict)  # label -> mean where defined
    hd95_cases: dict[str, int] = field(default_factory=dict)  # label -> cases where HD95 is defined
    settings: dict[str, Any] = field(default_factory=dict)  # the plan, or the recipe's choices
    timing: dict[str, Any] = field(default_factory=dict)  # epochs, shares of the training time, ...
    error: str = ""

    @property
    def mean_dice(self) -> float | None:
        return _mean(self.dice.values())

    @property
    def mean_hd95_mm(self) -> float | None:
        return _mean(self.hd95_mm.values())


def _mean(values) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def _number(value: Any) -> float | None:
    """A JSON number as float; ``None``, NaN and text as ``None``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def read_scores(summary: dict, result: ArmResult) -> None:
    """Mean Dice and HD95 per label from ``medseg evaluate``'s JSON summary."""
    for label in summary["labels"]:
        metrics = label["metrics"]
        result.dice[label["name"]] = _number(metrics["dice"]["mean"])
        hd95 = metrics.get("hd95_mm", {})
        result.hd95_mm[label["name"]] = _number(hd95.get("mean"))
        result.hd95_cases[label["name"]] = int(hd95.get("count") or 0)


# -- the dataset ----------------------------------------------------------------------------


def case_files(dataset: Path, split: str) -> list[tuple[list[Path], Path]]:
    """Per case of ``imagesTr``/``imagesTs`` (split "Tr"/"Ts"): its channel files in order, and its label file."""
    channels = len(json.loads((dataset / "dataset.json").read_text())["channel_names"])
    cases = []
    for first in sorted((dataset / f"images{split}").glob("*_0000.nii.gz")):
        case = first.name[: -len("_0000.nii.gz")]
        images = [first.parent / f"{case}_{c:04d}.nii.gz" for c in range(channels)]
        cases.append((images, dataset / f"labels{split}" / f"{case}.nii.gz"))
    return cases


def foreground_window(cases: Sequence[tuple[Sequence[Path], Path]]) -> tuple[float, float]:
    """The 0.5th and 99.5th percentiles of the first channel's voxels under the labels, over ``cases``.

    At most 100,000 voxels per case enter (a fixed random draw), so large cases do not dominate.
    """
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(SEED)
    samples = []
    for images, label in cases:
        values = np.asanyarray(nib.load(str(images[0])).dataobj)[np.asanyarray(nib.load(str(label)).dataobj) > 0]
        if values.size > 100_000:
            values = rng.choice(values, 100_000, replace=False)
        samples.append(values.astype(np.float64))
    low, high = np.percentile(np.concatenate(samples), CT_PERCENTILES)
    return float(low), float(high)


def recipe_patch(cases: Sequence[tuple[Sequence[Path], Path]], spacing: Sequence[float]) -> tuple[int, int, int]:
    """:data:`MONAI_PATCH`, each axis at most the median image shape at ``spacing``, rounded down to 16 (>= 16)."""
    import nibabel as nib
    import numpy as np

    shapes = []
    for images, _ in cases:
        header = nib.load(str(images[0])).header
        shapes.append(np.asarray(header.get_data_shape()[:3]) * np.asarray(header.get_zooms()[:3]) / spacing)
    median = np.median(np.asarray(shapes), axis=0)
    return tuple(  # type: ignore[return-value]
        max(PATCH_MULTIPLE, min(p, int(m // PATCH_MULTIPLE) * PATCH_MULTIPLE)) for p, m in zip(MONAI_PATCH, median)
    )


# -- medseg, through its command line -------------------------------------------------------


def plan_settings(plan: Path) -> tuple[dict[str, Any], int | None]:
    """The plan's figures worth recording, and its iterations per epoch (None when unknown)."""
    import yaml

    from medseg.config import load_pipeline

    raw = yaml.safe_load(plan.read_text()) or {}
    network, training = raw.get("network", {}), raw.get("training", {})
    preprocessing = raw.get("preprocessing", {})
    settings = {
        "dimensions": network.get("dimensions"),
        "spacing": preprocessing.get("spacing"),
        "patch": training.get("patch_size"),
        "batch": training.get("batch_size"),
        "filters": network.get("filters"),
        "normalization": [c.get("normalization", {}).get("scheme") for c in preprocessing.get("channels", [])],
        "flip_axes": load_pipeline(plan).training.flip_axes,
        "augmentation": [step.get("name") for step in training.get("augmentation") or [] if isinstance(step, dict)],
        "mirror_axes": raw.get("inference", {}).get("mirror_axes"),
    }
    iterations = training.get("iterations_per_epoch")
    if iterations is None:  # left to the schema's default
        try:
            from medseg.config import load_pipeline

            iterations = load_pipeline(plan).training.iterations_per_epoch
        except Exception as exc:  # noqa: BLE001 - a schema change must not cost the figures already measured
            settings["note"] = f"iterations per epoch unknown ({type(exc).__name__}: {exc})"
    return settings, iterations


def run_timing(run: Path, wall_seconds: float) -> dict[str, Any]:
    """Epochs, and the shares of the training wall time that ``metrics.csv``'s timing columns account for."""
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    timing: dict[str, Any] = {"epochs": len(rows)}
    for column in ("train_seconds", "data_seconds", "validation_seconds"):
        values = [_number(row.get(column)) for row in rows]
        if rows and column in rows[0] and any(v is not None for v in values):
            total = sum(v for v in values if v is not None)
            timing[column] = round(total, 1)
            timing[column.replace("_seconds", "_share")] = round(total / wall_seconds, 4)
    validated = [_number(row.get("val_dice_mean")) for row in rows]
    validated = [v for v in validated if v is not None]
    timing["validations"] = len(validated)
    timing["last_val_dice"] = validated[-1] if validated else None
    return timing


def predicted_seconds(manifest: Path) -> float | None:
    """The sum of the cases' own seconds in ``medseg predict``'s manifest.csv, when it lists them."""
    if not manifest.is_file():
        return None
    with manifest.open() as f:
        values = [_number(row.get("seconds")) for row in csv.DictReader(f)]
    return round(sum(v for v in values if v is not None), 1) if any(v is not None for v in values) else None


def run_medseg(result: ArmResult, dataset: Path, work: Path, *, minutes: float, env: dict[str, str], log: Log) -> None:
    """plan, train, predict, evaluate: the user's commands."""
    work.mkdir(parents=True, exist_ok=True)
    plan, run, predictions = work / "plan.yaml", work / "run", work / "predictions"
    seconds = medseg_cli(["plan", str(dataset), "--device", "cpu", "--output", str(plan)], work / "plan.log", env)
    result.settings, iterations = plan_settings(plan)
    result.settings["plan_seconds"] = round(seconds, 1)
    s = result.settings
    log(
        f"medseg plan ({seconds:.0f} s): {s['dimensions']}D, spacing {s['spacing']} mm, patch {s['patch']}, "
        f"batch {s['batch']}, filters {s['filters']}"
    )
    train = ["train", str(dataset), "--output", str(run), "--pipeline", str(plan), "--time-limit", f"{minutes:g}"]
    seconds = medseg_cli([*train, "--device", "cpu"], work / "train.log", env)
    result.train_minutes = seconds / 60
    result.steps = steps_trained(run, iterations) if iterations else None
    result.timing = run_timing(run, seconds)
    shares = ", ".join(f"{k} {v:.0%}" for k, v in result.timing.items() if k.endswith("_share"))
    log(
        f"medseg train: {seconds / 60:.1f} min, {result.steps} steps, {result.timing['epochs']} epoch(s)"
        f"{'; ' + shares if shares else ''} ({work / 'train.log'})"
    )
    images = sorted(str(p) for p in (dataset / "imagesTs").glob("*.nii.gz"))  # every channel's file
    predict = ["predict", "--model", str(run / "model"), *images, "--output", str(predictions), "--device", "cpu"]
    result.predict_seconds = medseg_cli(predict, work / "predict.log", env)
    result.timing["predict_cases_seconds"] = predicted_seconds(predictions / "manifest.csv")
    log(f"medseg predict: {len(images)} file(s) in {result.predict_seconds:.0f} s")
    read_scores(evaluation_summary(predictions, dataset / "labelsTs", work / "evaluation.csv", env), result)


# -- the MONAI tutorial recipe --------------------------------------------------------------


def run_monai(result: ArmResult, dataset: Path, work: Path, *, minutes: float, log: Log) -> None:
    """The tutorial recipe: cache, train for ``minutes``, predict the test cases, ``medseg evaluate``."""
    import torch
    from monai.transforms import NormalizeIntensityd
    from monai.utils import set_determinism

    work.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((dataset / "dataset.json").read_text())
    channels = list(manifest["channel_names"].values())
    num_classes = max(int(v) for v in manifest["labels"].values()) + 1
    training, test = case_files(dataset, "Tr"), case_files(dataset, "Ts")
    spacing = median_spacing([images[0] for images, _ in training])
    patch = recipe_patch(training, spacing)
    is_ct = [c.upper() for c in channels] == ["CT"]
    started = time.monotonic()
    if is_ct:
        window = foreground_window(training)
        intensity = [monai_window(*window)]
        described = f"ScaleIntensityRanged {window[0]:.0f}..{window[1]:.0f} HU (foreground 0.5-99.5%) -> [0, 1]"
    else:
        intensity = [NormalizeIntensityd(keys="image", nonzero=False, channel_wise=True)]
        described = "NormalizeIntensityd(nonzero=False, channel_wise=True)"
    result.settings = {
        "spacing": [round(v, 4) for v in spacing],
        "patch": list(patch),
        "channels": list(TUTORIAL_CHANNELS),
        "in_channels": len(channels),
        "samples": TUTORIAL_SAMPLES,
        "intensity": described,
        "crop_foreground": is_ct,
        "stats_seconds": round(time.monotonic() - started, 1),
    }
    log(f"MONAI: spacing {result.settings['spacing']} mm, patch {list(patch)}, {len(channels)} channel(s), {described}")
    set_determinism(seed=SEED)

    def item(images: Sequence[Path]) -> str | list[str]:
        return str(images[0]) if len(images) == 1 else [str(p) for p in images]

    files = [{"image": item(images), "label": str(label)} for images, label in training]
    transform = monai_training_transforms(spacing, patch, TUTORIAL_SAMPLES, intensity=intensity, crop_foreground=is_ct)
    model, result.steps, result.train_minutes = train_recipe(
        files,
        transform,
        build_model=lambda: monai_unet(TUTORIAL_CHANNELS, out_channels=num_classes, in_channels=len(channels)),
        optimizer=lambda parameters: torch.optim.AdamW(parameters, 1e-4),
        minutes=minutes,
        log=log,
    )
    log(f"MONAI train: {result.train_minutes:.1f} min, {result.steps} steps")
    # Predicted as a user runs the recipe: a script of its own (imports and weights included), like medseg's CLI.
    torch.save(model.state_dict(), work / "model.pt")
    predictions = work / "predictions"
    job = {
        "weights": str(work / "model.pt"),
        "in_channels": len(channels),
        "out_channels": num_classes,
        "spacing": list(spacing),
        "patch": list(patch),
        "window": list(window) if is_ct else None,
        "images": [[str(p) for p in images] for images, _ in test],
        "output": str(predictions),
        "timing": str(work / "predict_timing.json"),
    }
    (work / "predict_job.json").write_text(json.dumps(job, indent=1))
    command = [sys.executable, str(Path(__file__).resolve()), "--recipe-predict", str(work / "predict_job.json")]
    started = time.monotonic()
    with (work / "predict.log").open("w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    result.predict_seconds = time.monotonic() - started
    if done.returncode != 0:
        raise StageError(f"the recipe's prediction exited with {done.returncode} (see {work / 'predict.log'})")
    result.timing["predict_cases_seconds"] = json.loads((work / "predict_timing.json").read_text())["cases_seconds"]
    log(
        f"MONAI predict: {len(test)} case(s) in {result.predict_seconds:.0f} s "
        f"({result.timing['predict_cases_seconds']:.1f} s after imports and loading)"
    )
    read_scores(
        evaluation_summary(predictions, dataset / "labelsTs", work / "evaluation.csv", dict(os.environ)), result
    )


# -- report ---------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(results: Sequence[ArmResult], names: Sequence[str]) -> None:
    """Arm, steps, minutes, predict seconds, Dice and HD95 per label and their means."""
    width = max(7, *(len(n) for n in names)) if names else 7
    header = (
        f"{'arm':<8} {'steps':>7} {'train min':>9} {'predict s':>9}  "
        + " ".join(f"{n:>{width}}" for n in names)
        + f" {'mean':>6}  | HD95 mm: "
        + " ".join(f"{n:>{width}}" for n in names)
        + f" {'mean':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        line = (
            f"{r.arm:<8} {_fmt(r.steps, 'd'):>7} {_fmt(r.train_minutes, '.1f'):>9} "
            f"{_fmt(r.predict_seconds, '.0f'):>9}  "
            + " ".join(f"{_fmt(r.dice.get(n), '.3f'):>{width}}" for n in names)
            + f" {_fmt(r.mean_dice, '.3f'):>6}  |          "
            + " ".join(f"{_fmt(r.hd95_mm.get(n), '.1f'):>{width}}" for n in names)
            + f" {_fmt(r.mean_hd95_mm, '.1f'):>6}"
        )
        print(line)
        if r.error:
            print(f"{'':<8} failed: {r.error}")
    print(
        "(Dice: mean over the unseen test cases; HD95: mean over the cases where both prediction and reference hold "
        "the label; scored by `medseg evaluate`; mean = over the labels)"
    )


def version_info() -> dict[str, str]:
    """Python, medseg, torch, MONAI, numpy versions."""
    found = {"python": platform.python_version()}
    for dist in ("medseg", "torch", "monai", "numpy"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def source_commit() -> str | None:
    """The checkout's commit (``+dirty`` with uncommitted changes to medseg/), or None outside git."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "diff", "--quiet", "HEAD", "--", "medseg"], check=False)
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty.returncode else "")


def result_line(result: ArmResult, context: dict[str, Any]) -> dict[str, Any]:
    """One JSON line: the run's context, then the arm's figures."""
    figures = asdict(result)
    figures["ok"] = not result.error
    figures["mean_dice"] = result.mean_dice
    figures["mean_hd95_mm"] = result.mean_hd95_mm
    figures["error"] = result.error or None
    for key in ("train_minutes", "predict_seconds"):
        if figures[key] is not None:
            figures[key] = round(figures[key], 3)
    return {**context, **figures}


def markdown_table(path: Path) -> str:
    """The latest result per dataset and arm in the JSON-lines file ``path``, as a Markdown table."""
    latest: dict[tuple[str, str], dict] = {}
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        if text.strip():
            try:
                line = json.loads(text)
            except json.JSONDecodeError as exc:
                raise SystemExit(f"{path}:{number}: not a JSON line ({exc.msg})") from None
            if line.get("reverted"):  # a change measured and taken back: kept in the file, not in the table
                continue
            latest[(line.get("dataset", "?"), line.get("arm", "?"))] = line
    order = {name: i for i, name in enumerate(SPECS)}
    keys = sorted(latest, key=lambda k: (order.get(k[0], len(order)), k[0], ARMS.index(k[1]) if k[1] in ARMS else 9))
    rows = [
        "| dataset | arm | minutes | steps | predict s (wall / cases) | mean Dice | Dice per label | mean HD95 (mm) |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for key in keys:
        line = latest[key]
        dice = ", ".join(f"{name} {_fmt(_number(v), '.3f')}" for name, v in (line.get("dice") or {}).items())
        mean = _fmt(_number(line.get("mean_dice")), ".3f")
        if line.get("error"):
            error = " ".join(str(line["error"]).split()).replace("|", "\\|")
            mean = f"failed: {error[:100]}{'...' if len(error) > 100 else ''}"
        rows.append(
            f"| {key[0]} | {key[1]} | {_fmt(_number(line.get('minutes')), 'g')} | {_fmt(line.get('steps'), 'd')} | "
            f"{_fmt(_number(line.get('predict_seconds')), '.0f')} / "
            f"{_fmt(_number((line.get('timing') or {}).get('predict_cases_seconds')), '.1f')} | {mean} | {dice or '-'} | "
            f"{_fmt(_number(line.get('mean_hd95_mm')), '.1f')} |"
        )
    return "\n".join(rows)


def tidy(run_dir: Path) -> None:
    """Delete what is large and no longer needed (checkpoints, models, cached cases, predictions); keep the records."""
    for pattern in ("*/predictions", "monai/model.pt", "medseg/run/checkpoints", "medseg/run/model", "medseg/run/cache"):
        for path in run_dir.glob(pattern):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink()


# -- main -----------------------------------------------------------------------------------


def recipe_predict(job_file: Path) -> None:
    """The recipe's prediction script: rebuild the UNet, load its weights, predict the job's images."""
    import torch

    job = json.loads(job_file.read_text())
    model = monai_unet(TUTORIAL_CHANNELS, out_channels=job["out_channels"], in_channels=job["in_channels"])
    model.load_state_dict(torch.load(job["weights"], map_location="cpu"))
    if job["window"]:
        intensity = [monai_window(*job["window"])]
    else:
        from monai.transforms import NormalizeIntensityd

        intensity = [NormalizeIntensityd(keys="image", nonzero=False, channel_wise=True)]
    started = time.monotonic()
    preprocessing = monai_preprocessing(
        job["spacing"], keys=("image",), intensity=intensity, crop_foreground=job["window"] is not None
    )
    images = [[Path(p) for p in case] for case in job["images"]]
    predict_monai(model, images, Path(job["output"]), spacing=job["spacing"], patch=job["patch"], preprocessing=preprocessing)
    Path(job["timing"]).write_text(json.dumps({"cases_seconds": round(time.monotonic() - started, 2)}))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="On one dataset built to break automatic planners, on the CPU: medseg plan + train --time-limit "
        "(its command line) vs the MONAI tutorial recipe trained for the same minutes; both predict unseen test "
        "cases and are scored by `medseg evaluate`. Datasets: " + ", ".join(SPECS) + " (see robustness_data.py).",
        epilog="Exit status: 0 when every arm run finished, 1 when one failed (it is recorded with its error).",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--dataset", choices=list(SPECS), help="the dataset to run on")
    what.add_argument("--table", type=Path, metavar="FILE", help="print a Markdown table of the results in FILE, exit")
    what.add_argument("--recipe-predict", type=Path, metavar="JOB", help=argparse.SUPPRESS)  # the recipe arm's script
    parser.add_argument("--minutes", type=float, default=10.0, help="training minutes per arm (default 10)")
    default_workdir = Path(tempfile.gettempdir()) / "medseg-planner-robustness"
    parser.add_argument(
        "--workdir",
        type=Path,
        default=default_workdir,
        help=f"datasets go to WORKDIR/data (reused by later runs), each run's files to WORKDIR/runs/<dataset>-<time> "
        f"(default {default_workdir})",
    )
    parser.add_argument(
        "--results", type=Path, default=None, help="JSON-lines file to append to (default WORKDIR/results.jsonl)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads for both arms (default: torch's)")
    parser.add_argument("--train-cases", type=int, default=None, help="labelled training cases (default 24; large 12)")
    parser.add_argument("--test-cases", type=int, default=None, help="unseen test cases (default 10; large 4)")
    skip = parser.add_mutually_exclusive_group()
    skip.add_argument("--skip-monai", action="store_true", help="run the medseg arm only")
    skip.add_argument("--skip-medseg", action="store_true", help="run the MONAI arm only")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the run's checkpoints, models, cached cases and predictions (default: keep only plans, logs, "
        "metrics and evaluations)",
    )
    args = parser.parse_args(argv)
    if args.dataset:
        spec = SPECS[args.dataset]
        args.train_cases = spec.train_cases if args.train_cases is None else args.train_cases
        args.test_cases = spec.test_cases if args.test_cases is None else args.test_cases
        if not args.minutes > 0 or args.train_cases < 2 or args.test_cases < 1:
            parser.error("need --minutes > 0, --train-cases >= 2 and --test-cases >= 1")
        if args.threads is not None and args.threads < 1:
            parser.error("--threads must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table:
        print(markdown_table(args.table))
        return 0
    if args.recipe_predict:
        recipe_predict(args.recipe_predict)
        return 0
    env = dict(os.environ)
    import torch

    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{(time.monotonic() - started) / 60:5.1f} min] {message}", flush=True)

    print(cpu_line())
    versions = version_info()
    print(", ".join(f"{k} {v}" for k, v in versions.items()))
    dataset, record = ensure_dataset(
        args.dataset, args.workdir / "data", train_cases=args.train_cases, test_cases=args.test_cases, log=log
    )
    print(summarise(record))
    run_dir = args.workdir / "runs" / f"{args.dataset}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    run_dir.mkdir(parents=True, exist_ok=True)
    arms = [a for a in ARMS if not (a == "medseg" and args.skip_medseg or a == "monai" and args.skip_monai)]
    results = []
    for arm in arms:
        result = ArmResult(arm)
        results.append(result)
        log(f"{arm} arm: {args.minutes:g} min of training, files in {run_dir / arm}")
        try:
            if arm == "medseg":
                run_medseg(result, dataset, run_dir / arm, minutes=args.minutes, env=env, log=log)
            else:
                run_monai(result, dataset, run_dir / arm, minutes=args.minutes, log=log)
        except Exception as exc:  # noqa: BLE001 - recorded with its error; the other arm still runs
            result.error = str(exc) if isinstance(exc, StageError) else f"{type(exc).__name__}: {exc}"
            (run_dir / arm).mkdir(parents=True, exist_ok=True)
            (run_dir / arm / "error.txt").write_text(traceback.format_exc())
            log(f"{arm} failed: {result.error} (traceback in {run_dir / arm / 'error.txt'})")
    if not args.keep:
        tidy(run_dir)
    names = list(SPECS[args.dataset].labels)
    print()
    print(
        f"{args.dataset}: {args.train_cases} training / {args.test_cases} unseen cases, {args.minutes:g} min of "
        f"training per arm, CPU threads: {args.threads or 'torch default'}"
    )
    print_table(results, names)
    context = {
        "dataset": args.dataset,
        "minutes": args.minutes,
        "threads": args.threads,
        "torch_threads": torch.get_num_threads(),
        "train_cases": args.train_cases,
        "test_cases": args.test_cases,
        "generator": {k: record[k] for k in ("version", "seed")},
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "versions": versions,
        "commit": source_commit(),
        "command": shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(argv),
        "run_dir": str(run_dir),
    }
    results_file = args.results or args.workdir / "results.jsonl"
    results_file.parent.mkdir(parents=True, exist_ok=True)
    with results_file.open("a") as f:
        for result in results:
            f.write(json.dumps(result_line(result, context), allow_nan=False) + "\n")
    print(f"results appended to {results_file}; run files in {run_dir}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
