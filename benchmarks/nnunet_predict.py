#!/usr/bin/env python
"""Benchmark predicting a large CT with an nnU-Net v2 model: ``nnUNetv2_predict`` vs ``medseg predict``.

The script trains (once; cached under ``--workdir``) a small nnU-Net model with nnU-Net's own
commands and a custom trainer (``tests/nnunet_reference.py``): CT phantoms at about 3 mm, so a
512 x 512 x 300 scan at 0.8 x 0.8 x 1.5 mm is downsampled about 4 x 4 x 2 on the way in and its
class scores upsampled back on the way out, as with TotalSegmentator's 3 mm models. It writes that
scan as NIfTI (CT-like HU, made slab by slab), then runs, each as a subprocess of its own:

* **nnU-Net**  ``nnUNetv2_predict -d ... -c 3d_fullres -tr nnUNetTrainerMedsegTiny -f 0 -device cpu``
               through ``tests/nnunet_runner.py`` (so the custom trainer is found), nnU-Net's defaults:
               step 0.5, mirroring over the axes the model allows, 3 preprocessing and 3 export workers;
* **medseg**   ``medseg predict CT --model MODEL_FOLDER -o OUT --device cpu --overlap 0.5 --tta``.

and the same pair without test-time mirroring (``--disable_tta`` / ``--no-tta``). For each run: wall
time, the peak RSS of its whole process tree (the sum over the process and its descendants, sampled
every 50 ms from /proc; nnU-Net preprocesses and exports in worker processes) and the largest single
process's peak (its ``VmHWM``, from the same samples). Where both arms produced a mask, the
share of voxels they agree on. A failing arm is reported (``medseg: failed: ...``), not fatal.
Ratios nnU-Net / medseg > 1 favour medseg.

Example::

    PYTHONPATH=. .venv/bin/python benchmarks/nnunet_predict.py                      # 512 x 512 x 300
    PYTHONPATH=. .venv/bin/python benchmarks/nnunet_predict.py --size 256 --slices 120 --no-tta-pair
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests import nnunet_reference as ref  # noqa: E402

SPACING = (0.8, 0.8, 1.5)
SLAB = 32
SEED = 20261203
#: The benchmark model: phantoms at about 3 mm (dataset 502), trained briefly (timing needs no accuracy).
MODEL = {
    "dataset_id": 502,
    "name": "MedsegPhantom3mm",
    "grid": {"in_plane": (2.9, 3.1), "slices": (2.9, 3.1)},
    "epochs": 3,
    "iterations": 20,
}


@dataclass
class Run:
    """One prediction: what ran and what it cost."""

    arm: str
    seconds: float = 0.0
    peak_tree_mb: float = 0.0
    peak_process_mb: float = 0.0
    error: str | None = None
    mask: Path | None = None


# -- the scan ---------------------------------------------------------------------------------------


def write_ct(path: Path, size: int, slices: int) -> Path:
    """A CT-like int16 HU phantom on a (size, size, slices) grid of 0.8 x 0.8 x 1.5 mm, made slab by slab."""
    from medseg.geometry import Geometry
    from medseg.io import write_nifti
    from medseg.synthetic import PhantomSpec, make_phantom
    from medseg.volume import Volume, VolumeKind

    origin = tuple(-(n - 1) * s / 2 for n, s in zip((size, size, slices), SPACING))
    hu = np.empty((size, size, slices), dtype=np.int16)
    rng = np.random.default_rng(SEED)
    for start in range(0, slices, SLAB):
        count = min(SLAB, slices - start)
        slab_origin = (origin[0], origin[1], origin[2] + start * SPACING[2])
        slab = Geometry.from_spacing((size, size, count), SPACING, slab_origin)
        image, _ = make_phantom(SEED, PhantomSpec(noise_hu=0.0), slab)
        values = image.channel(0).astype(np.float32)
        values += rng.normal(0.0, 12.0, values.shape).astype(np.float32) * (values > -500)
        hu[:, :, start : start + count] = np.clip(np.rint(values), -1024, 3071).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_nifti(Volume(hu, Geometry.from_spacing(hu.shape, SPACING, origin), kind=VolumeKind.IMAGE), path)
    return path


# -- measuring --------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        found = []
        for task in tasks:
            found += [int(c) for c in (task / "children").read_text().split()]
        return found
    except OSError:
        return []


def tree_memory(pid: int) -> tuple[int, int]:
    """``pid`` and all its descendants (/proc): the sum of their resident memory, and their largest ``VmHWM``; kB."""
    total, largest, stack = 0, 0, [pid]
    while stack:
        current = stack.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        total += int(fields.get("VmRSS", "0 kB").split()[0])
        largest = max(largest, int(fields.get("VmHWM", "0 kB").split()[0]))
        stack += _children(current)
    return total, largest


def measure(arm: str, argv: list[str], env: dict[str, str], log: Path) -> Run:
    """Run ``argv``, sampling its process tree's memory every 50 ms; wall time and peaks."""
    run = Run(arm)
    started = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        peaks = [0, 0]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                total, largest = tree_memory(process.pid)
                peaks[0], peaks[1] = max(peaks[0], total), max(peaks[1], largest)
                done.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = process.wait()
        done.set()
        sampler.join()
    run.seconds = time.perf_counter() - started
    run.peak_tree_mb, run.peak_process_mb = peaks[0] / 1024, peaks[1] / 1024
    if code != 0:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        run.error = f"exit {code}: {lines[-1] if lines else 'no output'} (log: {log})"
    return run


def agreement(a: Path, b: Path) -> float:
    """Share of voxels on which two label maps agree."""
    import nibabel as nib

    x, y = np.asanyarray(nib.load(a).dataobj), np.asanyarray(nib.load(b).dataobj)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {x.shape} and {y.shape}")
    return float(np.mean(x == y))


# -- main -------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/medseg-nnunet-bench"))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of both arms")
    parser.add_argument("--no-tta-pair", action="store_true", help="skip the pair without mirroring")
    parser.add_argument("--skip-medseg", action="store_true")
    parser.add_argument("--skip-nnunet", action="store_true")
    args = parser.parse_args()
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    reference = ref.build_reference(work / "model", test_cases=3, **MODEL)
    scores = ref.reference_dice(reference)
    mean = np.mean([v for case in scores.values() for v in case.values()])
    print(f"model: {reference.model_folder}")
    steps = {k: round(v) for k, v in reference.seconds.items()}
    elapsed = time.perf_counter() - started
    print(f"  made/reused in {elapsed:.0f} s {steps}; Dice on {len(scores)} unseen phantoms {mean:.3f}")

    ct = work / "ct" / f"ct{args.size}x{args.size}x{args.slices}_0000.nii.gz"
    if not ct.is_file():
        started = time.perf_counter()
        write_ct(ct, args.size, args.slices)
        print(f"wrote {ct} in {time.perf_counter() - started:.0f} s")
    else:
        print(f"reusing {ct}")
    case = ct.name.removesuffix("_0000.nii.gz")

    env = {**reference.env.variables(threads=args.threads), "PYTHONPATH": str(REPO)}
    pairs = [("mirroring", True)] + ([] if args.no_tta_pair else [("no TTA", False)])
    runs: list[tuple[Run | None, Run | None]] = []
    for label, tta in pairs:
        nnunet = medseg = None
        if not args.skip_nnunet:
            out = work / "out" / f"nnunet-{'tta' if tta else 'notta'}"
            shutil.rmtree(out, ignore_errors=True)
            argv = ref.predict_command(reference.model_folder, ct.parent, out, use_mirroring=tta, processes=None)
            argv = [sys.executable, str(ref.RUNNER), *argv]
            nnunet = measure(f"nnU-Net, {label}", argv, env, work / f"{out.name}.log")
            nnunet.mask = out / f"{case}.nii.gz"
        if not args.skip_medseg:
            out = work / "out" / f"medseg-{'tta' if tta else 'notta'}"
            shutil.rmtree(out, ignore_errors=True)
            argv = [sys.executable, "-m", "medseg", "predict", str(ct), "--model", str(reference.model_folder)]
            argv += ["-o", str(out), "--device", "cpu", "--overlap", "0.5", "--tta" if tta else "--no-tta"]
            medseg = measure(f"medseg, {label}", argv, env, work / f"{out.name}.log")
            medseg.mask = out / f"{case}.nii.gz"
        runs.append((nnunet, medseg))

    import torch

    print(f"\n== {args.size} x {args.size} x {args.slices} CT at {SPACING} mm, model {reference.model_folder.name} ==")
    print(f"{'arm':<22} {'wall s':>8} {'peak RSS, tree MB':>18} {'largest process MB':>19}")
    print("-" * 70)
    for pair in runs:
        for run in pair:
            if run is None:
                continue
            if run.error:
                print(f"{run.arm.split(',')[0]}: failed: {run.error}")
                continue
            print(f"{run.arm:<22} {run.seconds:8.1f} {run.peak_tree_mb:18.0f} {run.peak_process_mb:19.0f}")
    for nnunet, medseg in runs:
        if nnunet and medseg and not nnunet.error and not medseg.error:
            label = nnunet.arm.split(", ")[1]
            try:
                agree = f"labels agree on {100 * agreement(nnunet.mask, medseg.mask):.3f}% of voxels"
            except (OSError, ValueError) as exc:
                agree = f"labels not compared: {exc}"
            print(
                f"ratio nnU-Net / medseg, {label}: time {nnunet.seconds / medseg.seconds:.2f}x, "
                f"peak RSS {nnunet.peak_tree_mb / medseg.peak_tree_mb:.2f}x   (> 1: medseg better); {agree}"
            )
    from importlib.metadata import version

    print(
        f"\n{os.cpu_count()} CPUs, {args.threads} torch threads, python {platform.python_version()}, "
        f"torch {torch.__version__}, nnunetv2 {version('nnunetv2')}, numpy {np.__version__}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
