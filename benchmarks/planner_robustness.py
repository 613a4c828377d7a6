#!/usr/bin/env python
"""Planner robustness: ``medseg plan`` + ``train --time-limit`` against MONAI and nnU-Net on hostile datasets.

Each dataset of ``robustness_data.py`` is built to break an automatic planner in one
way: organs told apart only by their side of the body (``context``), structures far
under 1% of the voxels (``small``), 5 mm slices at 0.7 mm pixels (``aniso``), scans of
15+ million voxels (``large``), two MR channels with bias fields and arbitrary scales
(``mr``), 6-8 mm slices whose content changes from slice to slice (``slices2d``), ten
touching structures from a 2-4 mm ureter to the liver (``touching``). One dataset and one
seed per invocation, on the CPU, in one run:

1. writes the dataset into ``WORKDIR/data/seed-<N>/`` (nnU-Net v2 layout: ``--train-cases``
   labelled cases, ``--test-cases`` unseen ones with their labels in ``labelsTs``;
   generated from ``--seed``, so every run of a seed sees the same scans and other seeds
   other scans) or reuses it when a dataset written with the same parameters is there;
2. runs the ``--arms`` in order, each trained for ``--minutes`` (default 15) and seeded
   with ``--seed``:

   * **medseg**, through its command line exactly as a user runs it (``sys.executable -m
     medseg``, this checkout first on ``PYTHONPATH``)::

         medseg plan DATASET --device cpu --output RUN/medseg/plan.yaml
         (the plan's training.seed set to --seed: medseg train has no seed option)
         medseg train DATASET --output RUN/medseg/run --pipeline RUN/medseg/plan.yaml \\
             --time-limit MINUTES --device cpu
         medseg predict --model RUN/medseg/run/model DATASET/imagesTs/*.nii.gz \\
             --output RUN/medseg/predictions --device cpu

     (every channel file of the test cases is passed: ``predict`` groups ``<case>_0000``,
     ``<case>_0001`` into one case for a two-channel model). Recorded: training wall
     minutes, steps (``metrics.csv`` and ``train.log``), the plan's spacing, patch,
     dimensions, batch and filters, the shares of the training time spent validating and
     loading data, and the predict command's wall seconds and its cases' own seconds;
   * **monai-cpu**, the MONAI recipe adapted to the CPU as a competent user adapts the
     tutorial to a 2-core machine and a time budget (``monai_cpu_arm.py``, whose docstring
     gives every rule): 2D or 3D, spacing, patch and sampler decided from the training
     data before the clock; caching before the clock (recorded apart); flips (not
     left-right), small affine and intensity augmentation; AdamW 1e-3 with a cosine decay
     over the time budget; Gaussian-weighted sliding windows, overlap 0.5;
   * **nnunet**, nnU-Net v2 (``nnunet_arm.py``'s ``run_nnunet``, imported when it runs);
   * **monai-tutorial**, the tutorial's GPU defaults run unchanged on the CPU, in this
     process, for the same minutes counted from the start of caching: ``CacheDataset``
     over ``LoadImaged`` (a case's channel files stacked), ``EnsureChannelFirstd``, the
     intensity transform, ``CropForegroundd`` (CT only), ``Orientationd(RAS)``,
     ``Spacingd`` to the training images' median spacing; ``RandCropByPosNegLabeld`` (4
     crops per image, half on foreground) of 96 x 96 x 48 (each axis clipped to the median
     image shape at that spacing, rounded down to a multiple of 16); batches of 2 images;
     ``UNet(spatial_dims=3, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2),
     num_res_units=2, norm=BATCH)``; ``DiceCELoss``; ``AdamW`` at 1e-4; no augmentation;
     all training cases, last weights; ``sliding_window_inference`` (overlap 0.25, 4
     windows per pass), ``Invertd`` back to each scan's grid, NIfTI with the image's affine.

   Both MONAI arms share the intensity transform: CT is ``ScaleIntensityRanged`` from the
   0.5th to the 99.5th percentile of the training images' foreground voxels (read from the
   training labels before the clock starts, as ``medseg plan`` runs before ``medseg
   train``) to [0, 1], clipped; MR is ``NormalizeIntensityd(nonzero=False,
   channel_wise=True)``. Every arm predicts in a process of its own (imports and weights
   included), as a user runs it;
3. ``--double-check`` then runs monai-cpu again with twice the minutes, recorded with
   ``"check": "double minutes"``: the peer learns with more time, or says it does not;
4. scores every arm with ``medseg evaluate`` against ``labelsTs`` (mean Dice and HD95 per
   label over the test cases, from its JSON summary, and every case's scores from its CSV;
   HD95 is defined where both prediction and reference hold the label);
5. prints a table and appends one JSON line per arm to ``--results`` (dataset, seed, role,
   minutes, threads, date, CPUs, versions, commit, the command line, the arm's settings and
   every figure). A failing arm is recorded with its error and does not stop the others.

**Seeds that decide and seeds that report.** Development seeds 0-9 (``--role dev``, the
default) are for decisions; report seeds 100, 101 and 102 (``--role report``, required
with them and only with them) are never used to decide anything.

``--table FILE`` prints a Markdown table of the results in FILE over the report seeds
(``--role dev``: the development seeds): per dataset and arm, seeds, steps, minutes, mean
Dice with its range over the seeds, Dice per label, and HD95 medians over cases and seeds
(``robustness_table.py``). Lines carrying ``"reverted"``, a change measured and taken
back, are skipped.

Every arm uses torch's threads (``--threads`` sets them for all, through
``OMP_NUM_THREADS`` for the processes they start). All are limited by wall-clock time:
run on an otherwise idle machine.

Example::

    .venv/bin/python benchmarks/planner_robustness.py --dataset context --seed 0 \\
        --results benchmarks/planner_robustness_results.jsonl
    for seed in 100 101 102; do
        .venv/bin/python benchmarks/planner_robustness.py --dataset context --seed $seed --role report \\
            --results benchmarks/planner_robustness_results.jsonl
    done
    .venv/bin/python benchmarks/planner_robustness.py --table benchmarks/planner_robustness_results.jsonl
    # smoke test (a few minutes)
    .venv/bin/python benchmarks/planner_robustness.py --dataset context --minutes 0.5 --train-cases 4 \\
        --test-cases 2 --arms medseg,monai-cpu
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
import re
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

from monai_cpu_arm import case_files, choose_window, intensity_transform  # noqa: E402
from phantom_experiment import (  # noqa: E402
    StageError,
    evaluation_summary,
    median_spacing,
    medseg_cli,
    predict_monai,
    steps_trained,
    train_recipe,
)
from robustness_data import SPECS, ensure_dataset, summarise  # noqa: E402
from robustness_table import ARMS, fmt, markdown_table, number  # noqa: E402
from train_throughput import (  # noqa: E402
    TUTORIAL_CHANNELS,
    TUTORIAL_SAMPLES,
    cpu_line,
    monai_preprocessing,
    monai_training_transforms,
    monai_unet,
)

warnings.filterwarnings("ignore", category=FutureWarning, module="monai")
warnings.filterwarnings("ignore", message=".*nvImageCodec")  # MONAI's DICOM reader, unused here

#: The tutorial recipe's patch before clipping to the images, and the multiple each axis is rounded down to
#: (the UNet halves four times).
MONAI_PATCH = (96, 96, 48)
PATCH_MULTIPLE = 16
DEFAULT_ARMS = ("medseg", "monai-cpu", "nnunet")
#: Development seeds decide; report seeds are only reported (see the module docs).
ROLES = ("dev", "report")
REPORT_SEEDS = (100, 101, 102)
Log = Callable[[str], None]


@dataclass
class ArmResult:
    """What one arm did on one dataset; filled in as it goes, so a failure keeps what came before."""

    arm: str
    minutes: float
    check: str | None = None  # "double minutes": the --double-check rerun
    steps: int | None = None
    train_minutes: float | None = None
    predict_seconds: float | None = None
    dice: dict[str, float | None] = field(default_factory=dict)  # label -> mean over the test cases
    hd95_mm: dict[str, float | None] = field(default_factory=dict)  # label -> mean where defined
    hd95_cases: dict[str, int] = field(default_factory=dict)  # label -> cases where HD95 is defined
    hd95_median_mm: dict[str, float | None] = field(default_factory=dict)  # label -> median where defined
    per_case: dict[str, dict[str, list]] = field(default_factory=dict)  # label -> case/status/dice/hd95_mm lists
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


def read_scores(summary: dict, result: ArmResult) -> None:
    """Mean Dice, mean and median HD95 per label from ``medseg evaluate``'s JSON summary."""
    for label in summary["labels"]:
        metrics = label["metrics"]
        result.dice[label["name"]] = number(metrics["dice"]["mean"])
        hd95 = metrics.get("hd95_mm", {})
        result.hd95_mm[label["name"]] = number(hd95.get("mean"))
        result.hd95_median_mm[label["name"]] = number(hd95.get("median"))
        result.hd95_cases[label["name"]] = int(hd95.get("count") or 0)


def read_case_scores(evaluation_csv: Path) -> dict[str, dict[str, list]]:
    """Per label, ``medseg evaluate``'s rows (one per case): case ids, statuses, Dice and HD95 (None if undefined)."""
    per_label: dict[str, dict[str, list]] = {}
    with evaluation_csv.open() as f:
        for row in csv.DictReader(f):
            scores = per_label.setdefault(row["name"], {"case": [], "status": [], "dice": [], "hd95_mm": []})
            scores["case"].append(row["case"])
            scores["status"].append(row["status"])
            scores["dice"].append(number(row.get("dice")))
            scores["hd95_mm"].append(number(row.get("hd95_mm")))
    return per_label


def score(result: ArmResult, predictions: Path, dataset: Path, work: Path, env: dict[str, str]) -> None:
    """``medseg evaluate`` the arm's predictions against ``labelsTs``; its summary and per-case rows into ``result``."""
    evaluation = work / "evaluation.csv"
    read_scores(evaluation_summary(predictions, dataset / "labelsTs", evaluation, env), result)
    result.per_case = read_case_scores(evaluation)


# -- the dataset ----------------------------------------------------------------------------


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
        values = [number(row.get(column)) for row in rows]
        if rows and column in rows[0] and any(v is not None for v in values):
            total = sum(v for v in values if v is not None)
            timing[column] = round(total, 1)
            timing[column.replace("_seconds", "_share")] = round(total / wall_seconds, 4)
    validated = [number(row.get("val_dice_mean")) for row in rows]
    validated = [v for v in validated if v is not None]
    timing["validations"] = len(validated)
    timing["last_val_dice"] = validated[-1] if validated else None
    return timing


def predicted_seconds(manifest: Path) -> float | None:
    """The sum of the cases' own seconds in ``medseg predict``'s manifest.csv, when it lists them."""
    if not manifest.is_file():
        return None
    with manifest.open() as f:
        values = [number(row.get("seconds")) for row in csv.DictReader(f)]
    return round(sum(v for v in values if v is not None), 1) if any(v is not None for v in values) else None


def seed_plan(plan: Path, seed: int) -> None:
    """Set the plan's ``training.seed`` (medseg's one seed: folds, weights, patches, augmentation) to ``seed``.

    ``medseg train`` has no seed option: the pipeline file carries it, so the line is edited
    in place (the plan's comments stay) and the result checked by loading the pipeline.
    """
    from medseg.config import load_pipeline

    text = plan.read_text()
    block = re.search(r"(?ms)^training:\n(?:(?:  .*|\s*)\n)*", text)
    if block is None:
        raise StageError(f"{plan}: no training section to seed")
    body, count = re.subn(r"(?m)^  seed: .*$", f"  seed: {seed}", block.group(0))
    if count == 0:
        body = f"training:\n  seed: {seed}\n" + block.group(0)[len("training:\n") :]
    plan.write_text(text[: block.start()] + body + text[block.end() :])
    if load_pipeline(plan).training.seed != seed:
        raise StageError(f"{plan}: training.seed is not {seed} after seeding it")


def run_medseg(
    result: ArmResult, dataset: Path, work: Path, *, minutes: float, seed: int, env: dict[str, str], log: Log
) -> None:
    """plan, (seed), train, predict, evaluate: the user's commands."""
    work.mkdir(parents=True, exist_ok=True)
    plan, run, predictions = work / "plan.yaml", work / "run", work / "predictions"
    seconds = medseg_cli(["plan", str(dataset), "--device", "cpu", "--output", str(plan)], work / "plan.log", env)
    seed_plan(plan, seed)
    result.settings, iterations = plan_settings(plan)
    result.settings["seed"] = seed
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
    score(result, predictions, dataset, work, env)


# -- the MONAI tutorial's GPU defaults, unchanged on the CPU --------------------------------


def run_monai_tutorial(
    result: ArmResult, dataset: Path, work: Path, *, minutes: float, seed: int, env: dict[str, str], log: Log
) -> None:
    """The tutorial's GPU defaults on the CPU: cache, train for ``minutes`` (caching included), predict, evaluate."""
    import torch
    from monai.utils import set_determinism

    work.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((dataset / "dataset.json").read_text())
    channels = list(manifest["channel_names"].values())
    num_classes = max(int(v) for v in manifest["labels"].values()) + 1
    training, test = case_files(dataset, "Tr"), case_files(dataset, "Ts")
    spacing = median_spacing([images[0] for images, _ in training])
    patch = recipe_patch(training, spacing)
    started = time.monotonic()
    window, described = choose_window(channels, training)
    intensity, is_ct = intensity_transform(window), window is not None
    result.settings = {
        "spacing": [round(v, 4) for v in spacing],
        "patch": list(patch),
        "channels": list(TUTORIAL_CHANNELS),
        "in_channels": len(channels),
        "samples": TUTORIAL_SAMPLES,
        "intensity": described,
        "crop_foreground": is_ct,
        "stats_seconds": round(time.monotonic() - started, 1),
        "seed": seed,
    }
    log(f"MONAI: spacing {result.settings['spacing']} mm, patch {list(patch)}, {len(channels)} channel(s), {described}")
    set_determinism(seed=seed)

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
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
    result.predict_seconds = time.monotonic() - started
    if done.returncode != 0:
        raise StageError(f"the recipe's prediction exited with {done.returncode} (see {work / 'predict.log'})")
    result.timing["predict_cases_seconds"] = json.loads((work / "predict_timing.json").read_text())["cases_seconds"]
    log(
        f"MONAI predict: {len(test)} case(s) in {result.predict_seconds:.0f} s "
        f"({result.timing['predict_cases_seconds']:.1f} s after imports and loading)"
    )
    score(result, predictions, dataset, work, env)


# -- the MONAI recipe adapted to the CPU, nnU-Net (modules of their own) --------------------


def record_arm(result: ArmResult, done: dict[str, Any], dataset: Path, work: Path, env: dict[str, str]) -> None:
    """An arm module's figures (``steps``, ``epochs``, ``train_minutes``, ...) into ``result``; its predictions scored."""
    result.steps = done.get("steps")
    result.train_minutes = done.get("train_minutes")
    result.predict_seconds = done.get("predict_seconds")
    result.settings = dict(done.get("settings") or {})
    if done.get("commands"):
        result.settings["commands"] = done["commands"]
    result.timing = {"epochs": done.get("epochs"), **(done.get("timing") or {})}
    score(result, Path(done["predictions"]), dataset, work, env)


def run_monai_cpu_arm(
    result: ArmResult, dataset: Path, work: Path, *, minutes: float, seed: int, env: dict[str, str], log: Log
) -> None:
    """The MONAI recipe adapted to the CPU (``monai_cpu_arm.py``), scored by ``medseg evaluate``."""
    from monai_cpu_arm import run_monai_cpu

    threads = int(env["OMP_NUM_THREADS"]) if env.get("OMP_NUM_THREADS") else None
    record_arm(
        result, run_monai_cpu(dataset, work, minutes=minutes, threads=threads, seed=seed, log=log), dataset, work, env
    )


def run_nnunet_arm(
    result: ArmResult, dataset: Path, work: Path, *, minutes: float, seed: int, env: dict[str, str], log: Log
) -> None:
    """nnU-Net v2 (``nnunet_arm.py``), scored by ``medseg evaluate``; mirroring as ``--nnunet-tta`` says."""
    import torch
    from nnunet_arm import run_nnunet

    threads = int(env["OMP_NUM_THREADS"]) if env.get("OMP_NUM_THREADS") else torch.get_num_threads()
    mirroring = env.get(NNUNET_TTA_ENV) == "1"
    outcome = run_nnunet(
        dataset, work, minutes=minutes, threads=threads, seed=seed, log=log, test_time_mirroring=mirroring
    )
    record_arm(result, outcome, dataset, work, env)


def run_medseg_ref(
    result: ArmResult, dataset: Path, work: Path, *, minutes: float, seed: int, env: dict[str, str], log: Log
) -> None:
    """The medseg arm with the checkout of ``--medseg-ref`` (its commit in the settings)."""
    ref = Path(env[MEDSEG_REF_ENV])
    ref_env = {**env, "PYTHONPATH": os.pathsep.join([str(ref), *filter(None, [env.get("PYTHONPATH")])])}
    run_medseg(result, dataset, work, minutes=minutes, seed=seed, env=ref_env, log=log)
    result.settings["checkout"] = str(ref)
    result.settings["commit"] = checkout_commit(ref)


#: Environment entries through which main() hands its options to the arms.
NNUNET_TTA_ENV = "MEDSEG_BENCH_NNUNET_TTA"
MEDSEG_REF_ENV = "MEDSEG_BENCH_REF"

RUNNERS = {
    "medseg": run_medseg,
    "medseg-ref": run_medseg_ref,
    "monai-cpu": run_monai_cpu_arm,
    "nnunet": run_nnunet_arm,
    "monai-tutorial": run_monai_tutorial,
}


# -- report ---------------------------------------------------------------------------------


def print_table(results: Sequence[ArmResult], names: Sequence[str]) -> None:
    """Arm, steps, minutes, predict seconds, Dice and HD95 per label and their means."""
    arms = [r.arm + (f" ({r.check})" if r.check else "") for r in results]
    first = max(8, *(len(a) for a in arms)) if arms else 8
    width = max(7, *(len(n) for n in names)) if names else 7
    header = (
        f"{'arm':<{first}} {'steps':>7} {'train min':>9} {'predict s':>9}  "
        + " ".join(f"{n:>{width}}" for n in names)
        + f" {'mean':>6}  | HD95 mm: "
        + " ".join(f"{n:>{width}}" for n in names)
        + f" {'mean':>6}"
    )
    print(header)
    print("-" * len(header))
    for arm, r in zip(arms, results):
        line = (
            f"{arm:<{first}} {fmt(r.steps, 'd'):>7} {fmt(r.train_minutes, '.1f'):>9} "
            f"{fmt(r.predict_seconds, '.0f'):>9}  "
            + " ".join(f"{fmt(r.dice.get(n), '.3f'):>{width}}" for n in names)
            + f" {fmt(r.mean_dice, '.3f'):>6}  |          "
            + " ".join(f"{fmt(r.hd95_mm.get(n), '.1f'):>{width}}" for n in names)
            + f" {fmt(r.mean_hd95_mm, '.1f'):>6}"
        )
        print(line)
        if r.error:
            print(f"{'':<{first}} failed: {r.error}")
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
    """This checkout's commit (``+dirty`` with uncommitted changes to medseg/), or None outside git."""
    return checkout_commit(Path(__file__).resolve().parents[1])


def checkout_commit(root: Path) -> str | None:
    """``root``'s commit (``+dirty`` with uncommitted changes to medseg/), or None outside git."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "diff", "--quiet", "HEAD", "--", "medseg"], check=False)
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty.returncode else "")


def result_line(result: ArmResult, context: dict[str, Any]) -> dict[str, Any]:
    """One JSON line: the run's context, then the arm's figures (its minutes, check and settings included)."""
    figures = asdict(result)
    figures["ok"] = not result.error
    figures["mean_dice"] = result.mean_dice
    figures["mean_hd95_mm"] = result.mean_hd95_mm
    figures["error"] = result.error or None
    for key in ("train_minutes", "predict_seconds"):
        if figures[key] is not None:
            figures[key] = round(figures[key], 3)
    return {**context, **figures}


def tidy(run_dir: Path) -> None:
    """Delete what is large and no longer needed (checkpoints, models, cached cases, predictions); keep the records."""
    for pattern in ("*/predictions", "*/model.pt", "medseg/run/checkpoints", "medseg/run/model", "medseg/run/cache"):
        for path in run_dir.glob(pattern):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink()


# -- main -----------------------------------------------------------------------------------


def recipe_predict(job_file: Path) -> None:
    """The tutorial arm's prediction script: rebuild the UNet, load its weights, predict the job's images."""
    import torch

    job = json.loads(job_file.read_text())
    model = monai_unet(TUTORIAL_CHANNELS, out_channels=job["out_channels"], in_channels=job["in_channels"])
    model.load_state_dict(torch.load(job["weights"], map_location="cpu"))
    intensity = intensity_transform(job["window"])
    started = time.monotonic()
    preprocessing = monai_preprocessing(
        job["spacing"], keys=("image",), intensity=intensity, crop_foreground=job["window"] is not None
    )
    images = [[Path(p) for p in case] for case in job["images"]]
    predict_monai(
        model, images, Path(job["output"]), spacing=job["spacing"], patch=job["patch"], preprocessing=preprocessing
    )
    Path(job["timing"]).write_text(json.dumps({"cases_seconds": round(time.monotonic() - started, 2)}))


def parse_arms(text: str) -> list[str]:
    """``--arms``: comma-separated names of :data:`ARMS`, in the order given, each once."""
    arms = list(dict.fromkeys(a.strip() for a in text.split(",") if a.strip()))
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        raise argparse.ArgumentTypeError(
            f"unknown arm(s) {', '.join(unknown) or '(none given)'}; from {', '.join(ARMS)}"
        )
    return arms


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="On one dataset built to break automatic planners, on the CPU: medseg plan + train --time-limit "
        "(its command line) against MONAI adapted to the CPU, nnU-Net v2 and the MONAI tutorial's GPU defaults, "
        "each trained for the same minutes; all predict unseen test cases and are scored by `medseg evaluate`. "
        "Datasets: " + ", ".join(SPECS) + " (see robustness_data.py).",
        epilog="Seeds: development seeds (0-9) are for decisions; report seeds (100, 101, 102, --role report) are "
        "never used to decide anything. Exit status: 0 when every arm run finished, 1 when one failed (it is "
        "recorded with its error).",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--dataset", choices=list(SPECS), help="the dataset to run on")
    what.add_argument(
        "--table",
        type=Path,
        metavar="FILE",
        help="print a Markdown table of the results in FILE over the report seeds (with --role dev: the development "
        "seeds), exit",
    )
    what.add_argument("--recipe-predict", type=Path, metavar="JOB", help=argparse.SUPPRESS)  # the tutorial arm's script
    parser.add_argument(
        "--arms",
        type=parse_arms,
        default=list(DEFAULT_ARMS),
        help=f"comma-separated, run in this order: {', '.join(ARMS)} (default {','.join(DEFAULT_ARMS)})",
    )
    parser.add_argument("--minutes", type=float, default=15.0, help="training minutes per arm (default 15)")
    parser.add_argument(
        "--double-check",
        action="store_true",
        help='then run monai-cpu again with twice the minutes (recorded with "check": "double minutes"): does the '
        "peer learn with more time?",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds the dataset written and every arm's training (default 0); development seeds 0-9, report seeds "
        + ", ".join(map(str, REPORT_SEEDS)),
    )
    parser.add_argument(
        "--role",
        choices=ROLES,
        default=None,
        help="recorded in each result line: dev (default; decisions) or report (seeds "
        + ", ".join(map(str, REPORT_SEEDS))
        + " only); with --table, the seeds to tabulate (default report)",
    )
    default_workdir = Path(tempfile.gettempdir()) / "medseg-planner-robustness"
    parser.add_argument(
        "--workdir",
        type=Path,
        default=default_workdir,
        help=f"datasets go to WORKDIR/data/seed-<N> (reused by later runs), each run's files to "
        f"WORKDIR/runs/<dataset>-<time> (default {default_workdir})",
    )
    parser.add_argument(
        "--results", type=Path, default=None, help="JSON-lines file to append to (default WORKDIR/results.jsonl)"
    )
    parser.add_argument(
        "--medseg-ref",
        type=Path,
        default=None,
        metavar="CHECKOUT",
        help="another medseg checkout (e.g. `git worktree add /tmp/ref COMMIT`) run as the arm `medseg-ref` in the "
        "same run, its commit recorded: a rule change judged against the code before it on the same scans",
    )
    parser.add_argument(
        "--nnunet-tta",
        action="store_true",
        help="nnU-Net predicts with its test-time mirroring (default off on the CPU: about 8x the windows, "
        "7 minutes a context scan on 2 cores; medseg's CPU default has no mirroring either)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads for every arm (default: torch's)")
    parser.add_argument("--train-cases", type=int, default=None, help="labelled training cases (default 24; large 12)")
    parser.add_argument("--test-cases", type=int, default=None, help="unseen test cases (default 10; large 4)")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the run's checkpoints, models, cached cases and predictions (default: keep only plans, logs, "
        "metrics and evaluations)",
    )
    args = parser.parse_args(argv)
    args.workdir = args.workdir.resolve()  # medseg's commands run in their arm's folder
    if args.medseg_ref is not None:
        args.medseg_ref = args.medseg_ref.resolve()
        if not (args.medseg_ref / "medseg" / "__init__.py").is_file():
            parser.error(f"--medseg-ref {args.medseg_ref}: not a medseg checkout (no medseg/__init__.py)")
        if "medseg-ref" not in args.arms:
            args.arms.insert(args.arms.index("medseg") + 1 if "medseg" in args.arms else 0, "medseg-ref")
    if args.table:
        args.role = args.role or "report"
    elif args.dataset:
        args.role = args.role or "dev"
        if (args.role == "report") != (args.seed in REPORT_SEEDS):
            parser.error(
                f"--role {args.role} with --seed {args.seed}: report seeds ({', '.join(map(str, REPORT_SEEDS))}) "
                "run with --role report, and only they do"
            )
        spec = SPECS[args.dataset]
        args.train_cases = spec.train_cases if args.train_cases is None else args.train_cases
        args.test_cases = spec.test_cases if args.test_cases is None else args.test_cases
        if not args.minutes > 0 or args.train_cases < 2 or args.test_cases < 1 or args.seed < 0:
            parser.error("need --minutes > 0, --train-cases >= 2, --test-cases >= 1 and --seed >= 0")
        if args.threads is not None and args.threads < 1:
            parser.error("--threads must be at least 1")
    return args


def run_arm(result: ArmResult, dataset: Path, work: Path, *, seed: int, env: dict[str, str], log: Log) -> None:
    """Run one arm into ``result``; a failure is recorded with its error (traceback in ``work/error.txt``)."""
    log(f"{result.arm} arm: {result.minutes:g} min of training, files in {work}")
    try:
        RUNNERS[result.arm](result, dataset, work, minutes=result.minutes, seed=seed, env=env, log=log)
    except Exception as exc:  # noqa: BLE001 - recorded with its error; the other arms still run
        result.error = str(exc) if isinstance(exc, StageError) else f"{type(exc).__name__}: {exc}"
        work.mkdir(parents=True, exist_ok=True)
        (work / "error.txt").write_text(traceback.format_exc())
        log(f"{result.arm} failed: {result.error} (traceback in {work / 'error.txt'})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table:
        print(markdown_table(args.table, role=args.role))
        return 0
    if args.recipe_predict:
        recipe_predict(args.recipe_predict)
        return 0
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])  # the medseg the commands run is the commit recorded
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    import torch

    env[NNUNET_TTA_ENV] = "1" if args.nnunet_tta else "0"
    if args.medseg_ref is not None:
        env[MEDSEG_REF_ENV] = str(args.medseg_ref)
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
        args.dataset,
        args.workdir / "data" / f"seed-{args.seed}",
        train_cases=args.train_cases,
        test_cases=args.test_cases,
        seed=args.seed,
        log=log,
    )
    print(summarise(record))
    run_dir = args.workdir / "runs" / f"{args.dataset}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    run_dir.mkdir(parents=True, exist_ok=True)
    results = [ArmResult(arm, minutes=args.minutes) for arm in args.arms]
    if args.double_check:
        results.append(ArmResult("monai-cpu", minutes=2 * args.minutes, check="double minutes"))
    for result in results:
        work = run_dir / (result.arm + ("-double" if result.check else ""))
        run_arm(result, dataset, work, seed=args.seed, env=env, log=log)
    if not args.keep:
        tidy(run_dir)
    names = list(SPECS[args.dataset].labels)
    print()
    print(
        f"{args.dataset}: {args.train_cases} training / {args.test_cases} unseen cases, seed {args.seed} "
        f"({args.role}), {args.minutes:g} min of training per arm, CPU threads: {args.threads or 'torch default'}"
    )
    print_table(results, names)
    context = {
        "dataset": args.dataset,
        "seed": args.seed,
        "role": args.role,
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
