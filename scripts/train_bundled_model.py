#!/usr/bin/env python
"""Train the model bundled with medseg (``medseg/models/bundled/phantom``), with medseg's own commands.

    .venv/bin/python scripts/train_bundled_model.py [--minutes 7] [--workdir /tmp/medseg-bundled] [--install]

What it runs, on the CPU (every command as a user runs it, ``python -m medseg ...``):

1. 24 CT phantoms, ``medseg.synthetic.write_phantom_dataset(WORK/Dataset001_Phantom,
   num_training=24, seed=0)`` (the same as ``python sample_data/generate.py --dataset 24``);
2. ``medseg plan WORK/Dataset001_Phantom --device cpu --name medseg-phantom --output WORK/plan.yaml``
   (a 16-32-64-128 DynUNet, 48 x 40 x 20 patches, batch 2, for a 2-core CPU), then its
   ``network.filters`` narrowed to :data:`FILTERS` (8-16-32-64), as a user edits a plan;
3. ``medseg train WORK/Dataset001_Phantom --output WORK/run --pipeline WORK/plan.yaml
   --time-limit MINUTES --device cpu`` (fold 0: 19 cases train, 5 validate; seed 0, the
   pipeline's ``training.seed``; on the CPU a run is deterministic);
4. the model folder's weights stored as float16 (half the size; they are loaded into the
   float32 network, so inference is unchanged) in ``WORK/bundled`` by
   :func:`medseg.training.export_model_folder`;
5. that folder scored on the sample scan, exactly as shipped:
   ``medseg predict --model WORK/bundled sample_data/ct_phantom/dicom --output WORK/sample
   --device cpu`` then ``medseg evaluate`` against ``sample_data/ct_phantom/labels.nii.gz``;
6. with ``--install``, and only when every label reaches Dice > 0.8 there, its files
   copied into ``medseg/models/bundled/phantom/``.

Result of the bundled model (``--minutes 7`` on a 2-core CPU, otherwise idle, torch's default
threads, 2026-11-24; medseg 0.1.0, torch 2.13 CPU, MONAI 1.6.1):

- pipeline: DynUNet 8-16-32-64 (0.69 M parameters), patches 48 x 40 x 20 at 3.25 x 3.26 x 4.16 mm,
  batch 2, 250 steps an epoch;
- train: 7.1 min, 11 epochs (2,501 steps; the eleventh cut short by the time limit), best epoch 11,
  validation Dice 0.960 (liver 0.980, spleen 0.959, kidney 0.940);
- on the sample scan (``sample_data/ct_phantom``, DICOM): Dice **liver 0.984, spleen 0.979,
  kidney 0.978**;
- the model folder: 1.4 MB (``model.pt`` in float16; SHA-256 ``a9f2b4ad...``).

The time limit makes the number of steps depend on the machine's speed, so a re-run trains
a similar model, not the same bytes (each step is deterministic on the CPU).

``medseg demo`` measures the same Dice on every installation, on the sample scan
regenerated from its seed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # medseg from this checkout

SEED = 0
TRAINING_CASES = 24
PIPELINE_NAME = "medseg-phantom"
MIN_DICE = 0.8
#: The bundled network's filters per level: a quarter of the CPU plan's weights (about 1.4 MB in float16).
FILTERS = (8, 16, 32, 64)
SAMPLE = REPO / "sample_data" / "ct_phantom"
TARGET = REPO / "medseg" / "models" / "bundled" / "phantom"


def medseg(*args: str, log: Path) -> float:
    """Run ``python -m medseg ARGS``, its output in ``log``; returns the wall time in seconds."""
    command = [sys.executable, "-m", "medseg", *args]
    started = time.monotonic()
    with log.open("w") as out:
        out.write("$ " + " ".join(command) + "\n")
        out.flush()
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
    if code != 0:
        tail = " | ".join(log.read_text().strip().splitlines()[-3:])
        raise SystemExit(f"medseg {args[0]} exited with {code} (see {log}): {tail}")
    return time.monotonic() - started


def store_half(model: Path, target: Path) -> Path:
    """Copy the model folder ``model`` to ``target`` with float16 weights (a new ``model.json`` hash)."""
    import torch

    from medseg.config import load_pipeline
    from medseg.models.folder import export_model_folder

    state = torch.load(model / "model.pt", map_location="cpu", weights_only=True)
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    facts = json.loads((model / "model.json").read_text())
    for key in ("format", "medseg_version", "torch_version", "monai_version", "created", "in_channels",
                "num_classes", "model_sha256"):
        facts.pop(key, None)  # export_model_folder writes these anew
    facts["dataset_path"] = f"medseg.synthetic.write_phantom_dataset(num_training={TRAINING_CASES}, seed={SEED})"
    facts["weights_dtype"] = "float16"
    facts["trained_by"] = "scripts/train_bundled_model.py"
    if target.exists():
        shutil.rmtree(target)
    return export_model_folder(
        target,
        weights=half,
        pipeline=load_pipeline(model / "pipeline.yaml"),
        metadata=facts,
        pipeline_yaml=(model / "pipeline.yaml").read_text(),
        fingerprint=json.loads((model / "fingerprint.json").read_text()),
    )


def score_on_sample(model: Path, work: Path) -> dict[str, float]:
    """Dice per label of ``model`` on the sample DICOM series, by ``medseg predict`` and ``medseg evaluate``."""
    predictions = work / "sample"
    if predictions.exists():
        shutil.rmtree(predictions)
    seconds = medseg("predict", "--model", str(model), str(SAMPLE / "dicom"), "--output", str(predictions),
                     "--device", "cpu", log=work / "sample-predict.log")
    print(f"medseg predict on the sample scan: {seconds:.1f} s")
    (mask,) = predictions.glob("*/*.nii.gz")
    csv_path = work / "sample-evaluation.csv"
    medseg("evaluate", str(mask), str(SAMPLE / "labels.nii.gz"), "--output", str(csv_path),
           log=work / "sample-evaluate.log")
    summary = json.loads(csv_path.with_suffix(".json").read_text())
    names = json.loads((SAMPLE / "labels.json").read_text())["labels"]
    return {
        names.get(str(label["label"]), label["name"]): label["metrics"]["dice"]["mean"] for label in summary["labels"]
    }


def narrow(plan: Path, filters: tuple[int, ...]) -> None:
    """Edit the planned pipeline's ``network.filters``, as a user edits a plan, keeping its comments.

    The CPU plan's 16-32-64-128 network is 5.4 MB in float16; the phantoms need far less,
    and a package should stay small.
    """
    from medseg.config import load_pipeline

    text = plan.read_text()
    lines = [
        f"  filters: [{', '.join(map(str, filters))}]  # narrowed for the bundled model (scripts/train_bundled_model.py)"
        if line.startswith("  filters:") else line
        for line in text.splitlines()
    ]
    plan.write_text("\n".join(lines) + "\n")
    load_pipeline(plan)  # still valid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=7.0, help="training time limit (default 7)")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a new temporary folder (kept)")
    parser.add_argument("--install", action="store_true", help=f"copy the model into {TARGET.relative_to(REPO)}")
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="medseg-bundled-"))
    work.mkdir(parents=True, exist_ok=True)
    dataset = work / "Dataset001_Phantom"
    if not (dataset / "dataset.json").is_file():
        from medseg.synthetic import write_phantom_dataset

        write_phantom_dataset(dataset, num_training=TRAINING_CASES, seed=SEED)
    plan, run = work / "plan.yaml", work / "run"
    medseg("plan", str(dataset), "--device", "cpu", "--name", PIPELINE_NAME, "--output", str(plan),
           log=work / "plan.log")
    narrow(plan, FILTERS)
    if run.exists():
        shutil.rmtree(run)
    seconds = medseg("train", str(dataset), "--output", str(run), "--pipeline", str(plan),
                     "--time-limit", f"{args.minutes:g}", "--device", "cpu", log=work / "train.log")
    facts = json.loads((run / "model" / "model.json").read_text())
    print(f"medseg train: {seconds / 60:.1f} min, {facts['epochs_run']} epoch(s), best epoch {facts['best_epoch']} "
          f"(validation Dice {facts['best_dice']:.3f}: {facts['best_dice_per_label']})")
    bundled = store_half(run / "model", work / "bundled")
    dice = score_on_sample(bundled, work)
    size = sum(f.stat().st_size for f in bundled.iterdir()) / 1e6
    print(f"sample scan Dice: {', '.join(f'{k} {v:.3f}' for k, v in dice.items())}; model folder {size:.1f} MB")
    if not all(value is not None and value > MIN_DICE for value in dice.values()):
        print(f"not good enough to bundle: every label needs Dice > {MIN_DICE} (see {work})")
        return 1
    if args.install:
        TARGET.mkdir(parents=True, exist_ok=True)
        for file in sorted(bundled.iterdir()):
            shutil.copy2(file, TARGET / file.name)
        print(f"installed into {TARGET}")
    print(f"work folder: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
