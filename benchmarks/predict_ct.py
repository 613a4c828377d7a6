#!/usr/bin/env python
"""Benchmark predicting a large CT: medseg's Segmenter vs a plain MONAI script, time and peak memory.

The script writes a CT series itself (512 x 512 x 300 by default, 0.7 x 0.7 x 1 mm,
one DICOM file per slice), builds a small untrained DynUNet with ``--classes``
output classes (timing does not need a trained model) and saves it as a model
folder, then runs each arm in a fresh subprocess and reports its wall time and
peak resident memory (``VmHWM``):

* medseg  ``read_dicom`` -> ``Segmenter.from_folder(...).segment`` (crop, resample
          to 1.5 mm, streaming sliding window, class scores resampled back band by
          band, argmax) -> ``write_nifti``, and a DICOM SEG with ``write_seg``.
* MONAI   the same ``read_dicom``, then MONAI's ``Spacing`` to 1.5 mm, the same
          normalisation, ``sliding_window_inference`` (same window, overlap,
          Gaussian weights and batch) over the whole image giving full float32 class
          scores, ``torch.nn.functional.interpolate`` (trilinear) of the scores back
          to the scan's shape, argmax, and a NIfTI written with nibabel: what a
          typical MONAI inference script does.

Both arms use the same network, weights and window settings (the pipeline's
CPU defaults unless ``--overlap``/``--tta`` say otherwise) and the same number of
threads. The script also reports how many voxels the two label maps agree on
(they differ only where the two resampling conventions do). Ratios > 1 favour medseg.

Example::

    .venv/bin/python benchmarks/predict_ct.py --quick
    .venv/bin/python benchmarks/predict_ct.py --size 512 --slices 300 --classes 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TARGET_SPACING = 1.5  # mm, isotropic: TotalSegmentator's normal model
PATCH = (96, 96, 64)


def pipeline_text(classes: int, overlap: float) -> str:
    labels = ", ".join(f"{n}: organ{n}" for n in range(1, classes))
    return f"""\
version: 1
name: benchmark-ct
modality: CT
labels: {{{labels}}}
preprocessing:
  spacing: [{TARGET_SPACING}, {TARGET_SPACING}, {TARGET_SPACING}]
  channels:
    - {{name: CT, normalization: {{scheme: ct, clip: [-160.0, 240.0], mean: 60.0, std: 50.0}}}}
network:
  dimensions: 3
  filters: [8, 16, 32, 64]
  kernel_sizes: [[3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]]
  strides: [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
  deep_supervision_heads: 1
training:
  patch_size: [{PATCH[0]}, {PATCH[1]}, {PATCH[2]}]
inference:
  overlap: {overlap}
  mirror_axes: [0, 1, 2]
"""


# -- setup (parent process) ---------------------------------------------------------------------


def prepare(workdir: Path, size: int, slices: int, classes: int, overlap: float) -> tuple[Path, Path]:
    """Write the series and the model folder (reused when an earlier --keep run left them)."""
    import torch

    sys.path.insert(0, str(HERE))
    from read_dicom_series import make_volume  # the same synthetic CT as the reading benchmark

    from medseg.config import parse_pipeline
    from medseg.io.dicom.writer import write_dicom_series
    from medseg.models.networks import build_network
    from medseg.models.folder import export_model_folder

    series = workdir / f"ct-{size}x{size}x{slices}"
    marker = workdir / f"{series.name}.complete"
    if not (marker.exists() and series.is_dir()):
        shutil.rmtree(series, ignore_errors=True)
        started = time.perf_counter()
        write_dicom_series(make_volume(size, slices), series, series_description="predict benchmark")
        marker.write_text("ok")
        print(f"wrote {slices} slices of {size}x{size} to {series} in {time.perf_counter() - started:.1f} s")
    else:
        print(f"reusing {series}")
    pipeline = parse_pipeline(pipeline_text(classes, overlap))
    torch.manual_seed(0)
    network = build_network(pipeline.network, in_channels=1, out_channels=pipeline.num_classes)
    model = export_model_folder(
        workdir / f"model-{classes}", weights=network.state_dict(), pipeline=pipeline, metadata={"dataset": "none"}
    )
    return series, model


# -- the arms (each in its own process) ---------------------------------------------------------


def peak_rss_bytes() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) * 1024


def rss_bytes() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) * 1024


def arm_medseg(series: Path, model: Path, out: Path, settings: dict) -> dict:
    from medseg.inference.engine import InferenceSettings, Segmenter
    from medseg.io.dicom import read_dicom
    from medseg.io.nifti import write_nifti

    segmenter = Segmenter.from_folder(model, device="cpu", settings=InferenceSettings(**settings))
    baseline = rss_bytes()  # libraries and model loaded, nothing read yet
    t0 = time.perf_counter()
    image = read_dicom(series)
    t1 = time.perf_counter()
    labels = segmenter.segment(image)
    t2 = time.perf_counter()
    write_nifti(labels, out / "medseg.nii.gz")
    t3 = time.perf_counter()
    stages = {"read": t1 - t0, "segment": t2 - t1, "write NIfTI": t3 - t2}
    extra = {"peak_rss_nifti": peak_rss_bytes(), "baseline": baseline}  # the part both arms do
    try:
        from medseg.io.seg import AlgorithmIdentity, write_seg
    except ImportError:
        pass
    else:
        identity = segmenter.model_identity
        write_seg(labels, out / "medseg-seg.dcm", algorithm=AlgorithmIdentity(identity["name"], identity["version"]))
        extra["write SEG"] = time.perf_counter() - t3
    return {"stages": stages, "extra": extra, "settings": {"overlap": segmenter.overlap}}


def arm_monai(series: Path, model: Path, out: Path, settings: dict) -> dict:
    import nibabel as nib
    import torch
    from monai.data import MetaTensor
    from monai.inferers import sliding_window_inference
    from monai.transforms import Spacing

    from medseg.inference.engine import InferenceSettings, Segmenter
    from medseg.io.dicom import read_dicom

    # The same network and settings; only the way from scan to labels differs.
    segmenter = Segmenter.from_folder(model, device="cpu", settings=InferenceSettings(**settings))
    network, pipeline = segmenter.network, segmenter.pipeline
    norm = pipeline.preprocessing.channels[0].normalization
    baseline = rss_bytes()
    t0 = time.perf_counter()
    image = read_dicom(series)
    t1 = time.perf_counter()
    affine = torch.from_numpy(image.geometry.affine_ras)
    data = MetaTensor(torch.from_numpy(image.array.astype(np.float32)), affine=affine)
    resampled = Spacing(pixdim=(TARGET_SPACING,) * 3, mode="bilinear")(data)
    del data
    x = resampled.as_tensor().clamp(*norm.clip).sub_(norm.mean).div_(norm.std)
    del resampled
    t2 = time.perf_counter()
    with torch.no_grad():
        logits = sliding_window_inference(
            x[None],
            roi_size=list(pipeline.training.patch_size),
            sw_batch_size=segmenter.batch_size,
            predictor=network,
            overlap=segmenter.overlap,
            mode="gaussian",
        )
        del x
        t3 = time.perf_counter()
        restored = torch.nn.functional.interpolate(logits, size=image.spatial_shape, mode="trilinear")
        del logits
        labels = restored[0].argmax(0).to(torch.uint8).numpy()
        del restored
    t4 = time.perf_counter()
    nib.save(nib.Nifti1Image(labels, image.geometry.affine_ras), out / "monai.nii.gz")
    t5 = time.perf_counter()
    stages = {
        "read": t1 - t0,
        "resample + normalise": t2 - t1,
        "sliding window": t3 - t2,
        "resample back + argmax": t4 - t3,
        "write NIfTI": t5 - t4,
    }
    extra = {"peak_rss_nifti": peak_rss_bytes(), "baseline": baseline}
    return {"stages": stages, "extra": extra, "settings": {"overlap": segmenter.overlap}}


ARMS = {"medseg": arm_medseg, "MONAI": arm_monai}


def run_arm(name: str, series: Path, model: Path, out: Path, settings: dict, threads: int) -> dict:
    """Run one arm in a fresh interpreter; its JSON result plus wall time and peak memory."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--arm",
        name,
        "--series",
        str(series),
        "--model",
        str(model),
        "--out",
        str(out),
        "--settings",
        json.dumps(settings),
        "--threads",
        str(threads),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{name} arm failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def child(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    result = ARMS[args.arm](Path(args.series), Path(args.model), Path(args.out), json.loads(args.settings))
    result["wall"] = sum(result["stages"].values())
    result["process"] = time.perf_counter() - started
    result["peak_rss"] = peak_rss_bytes()
    print(json.dumps(result))
    return 0


# -- report -------------------------------------------------------------------------------------


def agreement(out: Path) -> float:
    import nibabel as nib

    a = np.asarray(nib.load(out / "medseg.nii.gz").dataobj)
    b = np.asarray(nib.load(out / "monai.nii.gz").dataobj)
    return float(np.mean(a == b)) if a.shape == b.shape else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time and peak memory of predicting a CT: medseg vs plain MONAI.")
    parser.add_argument("--size", type=int, default=512, help="rows and columns per slice (default 512)")
    parser.add_argument("--slices", type=int, default=300, help="number of slices (default 300)")
    parser.add_argument("--classes", type=int, default=10, help="output classes, background included (default 10)")
    parser.add_argument("--quick", action="store_true", help="a 256 x 256 x 150 CT: a smoke run in about a minute")
    parser.add_argument("--overlap", type=float, default=None, help="window overlap (default: medseg's CPU default)")
    parser.add_argument("--tta", action="store_true", help="mirror test-time augmentation in both arms (8x slower)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads per arm (default: all)")
    parser.add_argument(
        "--workdir", type=Path, help="where to write the series and model (default: a temporary folder)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (reused by the next run)")
    for hidden in ("--arm", "--series", "--model", "--out", "--settings"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.arm:
        return child(args)
    if args.quick:
        args.size, args.slices = 256, 150
    if args.classes < 2 or args.size < 32 or args.slices < 8:
        parser.error("need --classes >= 2, --size >= 32 and --slices >= 8")

    from medseg.inference.engine import CPU_OVERLAP

    overlap = CPU_OVERLAP if args.overlap is None else args.overlap
    settings = {"overlap": overlap, "tta": bool(args.tta)}
    created = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="medseg-predict-")) if created else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        print(f"CPUs: {os.cpu_count()}, torch threads per arm: {args.threads}; python {platform.python_version()}")
        series, model = prepare(workdir, args.size, args.slices, args.classes, overlap)
        out = workdir / "out"
        out.mkdir(exist_ok=True)
        results = {}
        for name in ARMS:
            results[name] = run_arm(name, series, model, out, settings, args.threads)
            r = results[name]
            stages = ", ".join(f"{k} {v:.1f}" for k, v in r["stages"].items())
            peak, base = r["extra"]["peak_rss_nifti"], r["extra"]["baseline"]
            print(
                f"{name:<7} wall {r['wall']:7.1f} s  peak {peak / 2**30:5.2f} GiB, "
                f"{(peak - base) / 2**30:5.2f} GiB above "
                f"the {base / 2**30:.2f} GiB of libraries and model   ({stages})"
            )
            if "write SEG" in r["extra"]:
                print(
                    f"        + DICOM SEG {r['extra']['write SEG']:.1f} s, peak with it {r['peak_rss'] / 2**30:.2f} GiB"
                )
        voxels = args.size * args.size * args.slices
        print(
            f"\nCT {args.size}x{args.size}x{args.slices} ({voxels / 1e6:.1f} M voxels), {args.classes} classes, "
            f"spacing 0.7x0.7x1 mm -> {TARGET_SPACING} mm, window {list(PATCH)}, overlap {overlap}, "
            f"TTA {'on' if args.tta else 'off'}"
        )
        print(f"full float32 class scores on the scan's grid would be {args.classes * voxels * 4 / 2**30:.2f} GiB")
        m, p = results["medseg"], results["MONAI"]
        memory = p["extra"]["peak_rss_nifti"] / m["extra"]["peak_rss_nifti"]
        above = (p["extra"]["peak_rss_nifti"] - p["extra"]["baseline"]) / (
            m["extra"]["peak_rss_nifti"] - m["extra"]["baseline"]
        )
        print(
            f"ratio MONAI / medseg (read -> labels -> NIfTI): time {p['wall'] / m['wall']:.2f}x, "
            f"peak memory {memory:.2f}x ({above:.2f}x above the libraries)   "
            "(> 1: medseg better; targets: time >= 1, memory >= 2)"
        )
        print(
            f"label agreement medseg vs MONAI: {100 * agreement(out):.2f} % of voxels (an untrained network's classes "
            "are near ties, so the arms' different resampling conventions flip many of them)"
        )
    finally:
        if created and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif args.keep:
            print(f"kept {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
