#!/usr/bin/env python
"""The nnU-Net v2 arm of ``planner_robustness.py``: nnU-Net as a competent user runs it on a small CPU with a budget.

:func:`run_nnunet` takes a raw dataset in nnU-Net v2's layout (``DatasetNNN_Name/`` with
``imagesTr``, ``labelsTr``, ``imagesTs``, ``dataset.json``, as ``robustness_data.py`` writes them),
and runs nnU-Net's own commands, each a subprocess through ``tests/nnunet_runner.py`` (so nnU-Net
finds the custom trainer; ``tests/nnunet_reference.py`` does the same for the reference models),
with ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results`` under ``WORK/nnunet``::

    nnUNetv2_plan_and_preprocess -d ID -c 3d_fullres -np T -npfp T --verify_dataset_integrity \\
        -gpu_memory_target 0.25
    nnUNetv2_train ID 3d_fullres all -tr nnUNetTrainerMedsegBudget -device cpu
    nnUNetv2_predict -i DATASET/imagesTs -o WORK/predictions -d ID -c 3d_fullres \\
        -tr nnUNetTrainerMedsegBudget -f all -chk checkpoint_final.pth -step_size 0.5 -device cpu ...

What the user changes from nnU-Net's defaults, and why:

* **A CPU-sized plan.** nnU-Net plans its patch and batch for a GPU of 8 GB: on this dataset
  (``context``) a 64 x 192 x 192 patch, 8 times the voxels of the 1 GB plan's, whose step takes
  4.8 s on two cores. Its documented knob, ``-gpu_memory_target`` (GB), shrinks the patch until the
  planner's memory estimate fits; the network keeps nnU-Net's width (32 features doubling to 320)
  and its depth for that patch. The value
  is :data:`GPU_MEMORY_TARGET` (see there for the step times measured).
* **One configuration, one model.** ``3d_fullres`` (nnU-Net's recommendation when only one can be
  trained), or ``2d`` when nnU-Net plans no 3D configuration; trained on fold ``all`` (every
  training case, as the medseg and MONAI arms use), no cross-validation, no ensemble, no cascade.
* **A training that ends in time** (``nnUNetTrainerMedsegBudget`` in ``tests/nnunet_runner.py``):
  nnU-Net's SGD, poly learning rate, augmentation, deep supervision and loss, but shorter epochs:
  after three timed steps their length is set (10 to 250 iterations; nnU-Net's is 250) so the time
  left holds about 10 epochs, and 2 validation iterations instead of 50. The epoch is the unit of
  nnU-Net's schedule: after every epoch the number of epochs is set from the time left, the poly
  schedule with it, so the learning rate is about 0 when the budget ends (nnU-Net's 1000 epochs
  of 250 iterations would take days here). ``checkpoint_final.pth`` is written by the deadline.
  nnUNetv2_train's final validation (a sliding-window prediction of every validation case; with
  fold ``all``, the training cases) is skipped: it would spend minutes scoring the training data.
* **Processes for two cores**: ``nnUNet_n_proc_DA`` = :data:`DA_PROCESSES` augmentation worker
  (nnU-Net's default is 12, capped at the CPU count; one worker overlaps augmentation with the
  network's step, which adds about 0.1 s to the 0.9 s step), ``-np``/``-npfp`` = the threads for
  planning and preprocessing, ``-npp``/``-nps`` = half the threads (at least 1) for prediction,
  ``nnUNet_def_n_proc`` = the threads (nnU-Net runs its sliding window on at most that many
  torch threads), ``nnUNet_compile=false`` (compiling costs minutes on a CPU).

The clock: planning and preprocessing count in the budget, as ``medseg train --time-limit``
counts its own preparation; training gets what is left. ``train_minutes`` runs from the start of
``nnUNetv2_plan_and_preprocess`` to the end of the ``nnUNetv2_train`` process (``checkpoint_final``
written), start-up and data unpacking included. Prediction is timed separately: the wall time of
``nnUNetv2_predict`` on every test image, with nnU-Net's default test-time mirroring over the axes
the model allows: 8 passes per window in 3D, with nnU-Net's network width about 7 minutes for one
180 x 193 x 66 scan of ``context`` on this 2-vCPU VM (216 windows at 1.9 s) against 50 s without
(``test_time_mirroring=False`` passes ``--disable_tta``).
A failing step raises :class:`NnunetArmError` naming the command and its log.

Standalone::

    PYTHONPATH=. .venv/bin/python benchmarks/robustness_data.py context /tmp/nnsmoke --train-cases 4 --test-cases 2
    PYTHONPATH=. .venv/bin/python benchmarks/nnunet_arm.py /tmp/nnsmoke/Dataset801_Context /tmp/nnwork --minutes 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # medseg and the tests' nnU-Net helpers

from tests import nnunet_reference as ref  # noqa: E402

#: The budget trainer (``tests/nnunet_runner.py``).
TRAINER = "nnUNetTrainerMedsegBudget"
#: ``-gpu_memory_target`` (GB). The planner's 3d_fullres patch (batch 2, nnU-Net's width) on ``context``
#: (~2.1 x 2.1 x 2.9 mm) and the seconds of one step of its network alone (forward and backward, 2 threads,
#: this 2-vCPU VM idle): 8 GB (nnU-Net's default) 64 x 192 x 192; 1 GB 32 x 96 x 96, 4.8 s; 0.5 GB
#: 28 x 80 x 64, 2.4 s; 0.25 GB 20 x 64 x 56 (4 stages, 32-256 features), 0.9 s; 0.1 GB 16 x 48 x 40, 0.4 s.
#: 0.25 is the largest patch with a step under a second: with augmentation and the loss a training step
#: took 0.97 s, so ten minutes, less planning, hold several hundred. (Smaller patches see less of the
#: body, which ``context`` needs to tell liver from spleen.)
GPU_MEMORY_TARGET = 0.25
#: Augmentation worker processes (``nnUNet_n_proc_DA``) beside the training process.
DA_PROCESSES = 1
#: What the budget trainer did, in its fold folder (``tests/nnunet_runner.py``'s ``BUDGET_RECORD``; not
#: imported, as the runner imports nnU-Net).
BUDGET_RECORD = "budget.json"
#: Below this many seconds left for training after planning, the arm gives up.
MIN_TRAIN_SECONDS = 30.0

Log = Callable[[str], None]


class NnunetArmError(RuntimeError):
    """A step of the nnU-Net arm failed; the message names the command and its log."""


def run_nnunet(
    dataset: Path,
    work: Path,
    *,
    minutes: float,
    threads: int,
    seed: int,
    log: Log,
    gpu_memory_target: float = GPU_MEMORY_TARGET,
    configuration: str | None = None,
    iterations: int | None = None,
    da_processes: int = DA_PROCESSES,
    test_time_mirroring: bool = True,
) -> dict[str, Any]:
    """Plan, preprocess, train for ``minutes`` and predict ``imagesTs`` with nnU-Net's own commands on the CPU.

    Earlier nnU-Net outputs for this dataset under ``work`` are deleted first, so every run starts from scratch.

    Args:
        dataset: the raw dataset folder, named ``DatasetNNN_Name``.
        work: the arm's folder (nnU-Net's three folders, logs, predictions).
        minutes: the budget, from the start of planning to ``checkpoint_final`` written.
        threads: torch/OpenMP threads, and the processes of planning and preprocessing.
        seed: seeds the training process: the initial weights (the batches too with ``da_processes=0``).
        log: progress lines.
        gpu_memory_target: ``-gpu_memory_target`` of the planner (GB).
        configuration: ``3d_fullres`` or ``2d``; None: 3d_fullres when nnU-Net plans one, else 2d.
        iterations: training iterations per epoch; None: the trainer sizes its epochs so the budget holds about
            10 of them (``BUDGET_EPOCHS`` in ``tests/nnunet_runner.py``).
        da_processes: augmentation workers (``nnUNet_n_proc_DA``; 0: in the training process).
        test_time_mirroring: nnU-Net's default mirroring at prediction (off: ``--disable_tta``, 8x faster in 3D).

    Returns:
        JSON-ready figures: ``steps``, ``epochs``, ``train_minutes``, ``predict_seconds``, ``predictions``
        (folder of ``<case>.nii.gz``, as ``labelsTs``), ``model_folder``, ``settings`` (the plan and the
        training and prediction choices), ``timing`` (plan seconds, per-epoch seconds, seconds per step, ...)
        and ``commands`` (the nnU-Net command lines, in order).

    Raises:
        NnunetArmError: a command failed, the budget ran out during planning, or an output is missing.
        ValueError: ``dataset`` is not named ``DatasetNNN_Name``.
    """
    dataset, work = Path(dataset).resolve(), Path(work).resolve()
    found = re.fullmatch(r"Dataset(\d{3})_\w+", dataset.name)
    if not found or not (dataset / "dataset.json").is_file():
        raise ValueError(f"{dataset}: expected an nnU-Net raw dataset folder DatasetNNN_Name with a dataset.json")
    dataset_id = int(found.group(1))
    env = _fresh_env(work / "nnunet", dataset)
    variables = {"nnUNet_def_n_proc": str(threads)}
    commands: list[str] = []

    def nnunet(argv: list[str], name: str, extra: dict[str, str] | None = None) -> float:
        commands.append(shlex.join(map(str, argv)))
        return _run(env, argv, work / f"{name}.log", threads=threads, extra={**variables, **(extra or {})})

    started, deadline = time.monotonic(), time.time() + minutes * 60.0
    plan_argv = ["nnUNetv2_plan_and_preprocess", "-d", dataset_id, "-c", configuration or "3d_fullres"]
    plan_argv += ["-np", threads, "-npfp", threads, "--verify_dataset_integrity"]
    plan_argv += ["-gpu_memory_target", f"{gpu_memory_target:g}"]
    nnunet(plan_argv, "plan")
    plans = json.loads((env.preprocessed / dataset.name / "nnUNetPlans.json").read_text())
    if configuration is None:
        configuration = "3d_fullres" if "3d_fullres" in plans["configurations"] else "2d"
        if configuration == "2d":  # nnU-Net skipped preprocessing the 3d_fullres it did not plan
            nnunet(["nnUNetv2_preprocess", "-d", dataset_id, "-c", "2d", "-np", threads], "preprocess")
    plan_seconds = time.monotonic() - started
    settings = _plan_settings(plans, configuration)
    settings.update(
        gpu_memory_target_gb=gpu_memory_target,
        trainer=TRAINER,
        fold="all",
        optimizer="SGD, lr 1e-2, momentum 0.99, Nesterov, weight decay 3e-5 (nnU-Net's)",
        lr_schedule="poly (exponent 0.9) over the epochs fitted to the budget (nnU-Net's, per epoch)",
        initial_lr=1e-2,
        val_iterations_per_epoch=2,
        deep_supervision=True,
        augmentation="nnU-Net's default",
        final_validation="skipped",
        da_processes=da_processes,
        threads=threads,
        seed=seed,
    )
    s = settings
    log(
        f"nnU-Net plan ({plan_seconds:.0f} s): {configuration}, spacing {s['spacing']} mm, patch {s['patch']}, "
        f"batch {s['batch']}, {s['stages']} stages {s['features_per_stage']}"
    )
    left = deadline - time.time()
    if left < MIN_TRAIN_SECONDS:
        raise NnunetArmError(
            f"nnU-Net's planning and preprocessing took {plan_seconds / 60:.1f} of the {minutes:g} minutes: "
            f"{max(left, 0):.0f} s left to train (see {work / 'plan.log'})"
        )

    budget = {
        "MEDSEG_NNUNET_DEADLINE": f"{deadline:.3f}",
        "MEDSEG_NNUNET_SEED": str(seed),
        "nnUNet_n_proc_DA": str(da_processes),  # training only: the planner fails on 0
    }
    if iterations is not None:
        budget["MEDSEG_NNUNET_ITERATIONS"] = str(iterations)
    train_argv = ["nnUNetv2_train", dataset_id, configuration, "all", "-tr", TRAINER, "-device", "cpu"]
    train_seconds = nnunet(train_argv, "train", budget)
    train_minutes = (time.monotonic() - started) / 60.0
    model = env.results / dataset.name / f"{TRAINER}__nnUNetPlans__{configuration}"
    checkpoint, record_file = model / "fold_all" / "checkpoint_final.pth", model / "fold_all" / BUDGET_RECORD
    if not checkpoint.is_file() or not record_file.is_file():
        raise NnunetArmError(
            f"nnUNetv2_train wrote no {checkpoint.name} or {record_file.name} in {model} (see {work / 'train.log'})"
        )
    record = json.loads(record_file.read_text())
    if not record["steps"]:
        raise NnunetArmError(f"no training step fitted in the budget ({work / 'train.log'})")
    settings["iterations_per_epoch"] = record["iterations_per_epoch"]
    settings["epoch_length"] = "fixed" if iterations is not None else "sized to the budget (about 10 epochs)"
    log(
        f"nnU-Net train: {train_minutes:.1f} min from planning, {record['steps']} steps in {record['epochs']} epochs, "
        f"{record['seconds_per_step']} s a step, last lr {record['last_lr']:.2g} ({work / 'train.log'})"
    )

    predictions = work / "predictions"
    shutil.rmtree(predictions, ignore_errors=True)
    processes = max(1, threads // 2)
    predict_argv = ref.predict_command(
        model, dataset / "imagesTs", predictions, folds=("all",), use_mirroring=test_time_mirroring, processes=processes
    )
    predict_seconds = nnunet(predict_argv, "predict")
    cases = sorted(predictions.glob("*.nii.gz"))
    expected = len(list((dataset / "imagesTs").glob("*_0000.nii.gz")))
    if len(cases) != expected:
        raise NnunetArmError(f"nnUNetv2_predict wrote {len(cases)} of {expected} cases (see {work / 'predict.log'})")
    log(f"nnU-Net predict: {len(cases)} case(s) in {predict_seconds:.0f} s")
    settings.update(
        test_time_mirroring=f"on, axes {record['mirror_axes']} (nnU-Net's default)" if test_time_mirroring else "off",
        step_size=0.5,
        predict_processes=processes,
    )
    return {
        "steps": record["steps"],
        "epochs": record["epochs"],
        "train_minutes": round(train_minutes, 3),
        "predict_seconds": round(predict_seconds, 1),
        "predictions": str(predictions),
        "model_folder": str(model),
        "settings": settings,
        "timing": {
            "plan_seconds": round(plan_seconds, 1),
            "train_command_seconds": round(train_seconds, 1),
            "training_loop_seconds": record["training_loop_seconds"],
            "seconds_per_step": record["seconds_per_step"],
            "loop_seconds_per_step": record["loop_seconds_per_step"],
            "first_step_seconds": record["first_step_seconds"],
            "epoch_seconds": record["epoch_seconds"],
            "last_lr": record["last_lr"],
            "cut_short": record["cut_short"],
            "torch_threads": record["torch_threads"],
        },
        "commands": commands,
    }


def _fresh_env(root: Path, dataset: Path) -> ref.NnunetEnv:
    """nnU-Net's folders under ``root``, the dataset linked into ``nnUNet_raw``, its earlier outputs deleted."""
    env = ref.NnunetEnv.create(root)
    link = env.raw / dataset.name
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.exists():
        shutil.rmtree(link)
    link.symlink_to(dataset, target_is_directory=True)
    for parent in (env.preprocessed, env.results):
        shutil.rmtree(parent / dataset.name, ignore_errors=True)
    return env


def _run(env: ref.NnunetEnv, argv: Sequence[Any], log_file: Path, *, threads: int, extra: dict[str, str]) -> float:
    """One nnU-Net command through the runner, its output streamed to ``log_file``; its wall seconds."""
    command = [sys.executable, str(ref.RUNNER), *map(str, argv)]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log_file.open("w") as out:
        out.write("$ " + shlex.join(command) + "\n")
        out.flush()
        done = subprocess.run(
            command, env={**env.variables(threads=threads), **extra}, stdout=out, stderr=subprocess.STDOUT, check=False
        )
    seconds = time.monotonic() - started
    if done.returncode != 0:
        tail = " | ".join(log_file.read_text().strip().splitlines()[-3:])
        raise NnunetArmError(f"{argv[0]} exited with {done.returncode} (see {log_file}): {tail}")
    return seconds


def _plan_settings(plans: dict, configuration: str) -> dict[str, Any]:
    """The figures of nnU-Net's plan worth recording for ``configuration``."""
    if configuration not in plans["configurations"]:
        raise NnunetArmError(f"nnU-Net planned no {configuration} (it planned {', '.join(plans['configurations'])})")
    plan = plans["configurations"][configuration]
    arch = plan["architecture"]["arch_kwargs"]
    return {
        "configuration": configuration,
        "configurations_planned": sorted(plans["configurations"]),
        "spacing": [round(float(v), 4) for v in plan["spacing"]],
        "patch": plan["patch_size"],
        "batch": plan["batch_size"],
        "median_image_voxels": plan["median_image_size_in_voxels"],
        "axes": "nnU-Net's array order after transpose_forward " + str(plans["transpose_forward"]),
        "stages": arch["n_stages"],
        "features_per_stage": arch["features_per_stage"],
        "normalization": plan["normalization_schemes"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="nnU-Net v2 on the CPU with a time budget (planning, preprocessing and training in MINUTES), "
        "then nnUNetv2_predict on DATASET/imagesTs; prints the figures as JSON."
    )
    parser.add_argument("dataset", type=Path, help="raw dataset folder DatasetNNN_Name (nnU-Net v2 layout)")
    parser.add_argument("work", type=Path, help="folder for nnU-Net's folders, logs and predictions")
    parser.add_argument("--minutes", type=float, default=10.0, help="budget for planning + training (default 10)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument(
        "--gpu-memory-target", type=float, default=GPU_MEMORY_TARGET, help=f"GB (default {GPU_MEMORY_TARGET:g})"
    )
    parser.add_argument("--configuration", choices=("3d_fullres", "2d"), default=None, help="default: nnU-Net's 3D")
    parser.add_argument("--iterations", type=int, default=None, help="per epoch (default: sized to the budget)")
    parser.add_argument(
        "--da-processes", type=int, default=DA_PROCESSES, help=f"augmentation workers (default {DA_PROCESSES})"
    )
    parser.add_argument("--no-tta", action="store_true", help="predict without nnU-Net's test-time mirroring")
    args = parser.parse_args(argv)
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{(time.monotonic() - started) / 60:5.1f} min] {message}", file=sys.stderr, flush=True)

    result = run_nnunet(
        args.dataset,
        args.work,
        minutes=args.minutes,
        threads=args.threads,
        seed=args.seed,
        log=log,
        gpu_memory_target=args.gpu_memory_target,
        configuration=args.configuration,
        iterations=args.iterations,
        da_processes=args.da_processes,
        test_time_mirroring=not args.no_tta,
    )
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
