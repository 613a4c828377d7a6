#!/usr/bin/env python
"""The MONAI recipe adapted to the CPU: the ``monai-cpu`` arm of ``planner_robustness.py``.

What a competent user who reads the MONAI docs makes of the spleen tutorial on a 2-core
machine with a time budget. Every choice follows from the training data by a fixed rule,
computed before the clock starts; nothing is set per dataset by hand:

* **2D or 3D**: 2D when the median slice is at least :data:`SLICE_RATIO_2D` times thicker
  than the median in-plane spacing *and* the median scan has at most
  :data:`MAX_SLICES_2D` slices (a stack of thick slices: MONAI's UNet halves every axis
  four times, so a 3D patch would span most of the stack and pool its z resolution away
  at once). A 2D arm resamples in-plane only (``Spacingd`` with a slice spacing of 0
  keeps each scan's own slices: no interpolation across them), trains on single slices
  cropped from the cached volumes (crops of depth 1, squeezed) and predicts slice by
  slice with MONAI's ``SliceInferer``.
* **Spacing and patch**: the patch is :data:`PATCH_3D` (2D: :data:`PATCH_2D`), chosen once
  on a 2-vCPU machine with :data:`CROPS_PER_IMAGE` so that a step takes about 0.3 s (4 patches
  of 64 x 64 x 32 a step, 3D; 16 slices of 160 x 160, 2D); the spacing keeps the field
  of view the tutorial's 96 x 96 x 48 patch has at the median spacing (each axis clipped to
  the median image): per axis, ``max(median spacing, that field of view / patch)``, i.e.
  1.5x the median spacing where the image is large. The patch is then clipped to the
  median image at that spacing (multiples of 16, at least 16). 2D keeps the slices' own
  thickness (and, its patch being larger than the tutorial's 96, the median in-plane spacing).
* **Sampling**: ``RandCropByLabelClassesd`` with equal ratios for every class, background
  included, when a label covers under :data:`SMALL_LABEL_FRACTION` of the voxels (median
  over the training cases); else ``RandCropByPosNegLabeld`` (half the crops on
  foreground), as the tutorial. Crop centres are precomputed and cached
  (``ClassesToIndicesd``/``FgBgToIndicesd``, as MONAI's docs advise). :data:`CROPS_PER_IMAGE`
  crops of :data:`IMAGES_PER_STEP` images per step.
* **Caching outside the clock**: ``CacheDataset`` of the deterministic transforms is built
  before the clock starts; its seconds are recorded separately (``cache_seconds``), as
  are those of the statistics read from the training labels (``stats_seconds``).
* **Augmentation** (after the crop, on the patch): ``RandFlipd`` with p = 0.1 per axis, as
  MONAI's BTCV tutorial, on every axis **but left-right** (RAS axis 0: images are
  ``Orientationd`` to RAS, and anatomy is sided, so a left-right flip turns a liver into
  something labelled liver on the spleen's side; the BTCV tutorial flips it too and
  nnU-Net mirrors it, this arm does not); ``RandAffined`` (p = 0.2, in-plane rotation up
  to 15 degrees, scaling up to 10%); ``RandScaleIntensityd`` (0.1, p = 0.5) and
  ``RandShiftIntensityd`` (0.1, p = 0.5), BTCV's values.
* **Network and optimisation**: the tutorial's ``UNet`` (16-256 channels, strides 2, two
  residual units) with instance norm (MONAI's default for ``UNet``: batch statistics of
  4 patches are noise, and eval mode would then use running averages of that noise);
  ``DiceCELoss``; ``AdamW`` at :data:`LEARNING_RATE` with a cosine decay to 0 over the
  time budget (the factor follows the share of the budget used, i.e. the steps so far
  over the steps the budget holds at the rate so far: a user sets the schedule by the
  steps a budget allows, and this one needs no guess). 1e-3 and a decay rather than a
  constant 5e-4: 15 minutes hold about 3,000 steps of 0.3 s, few for a network trained from
  scratch, so the first ones should move fast; and with no validation the last weights are
  kept, which a decayed rate leaves settled.
* **Inference**: ``sliding_window_inference`` (2D: ``SliceInferer``), overlap 0.5,
  Gaussian weighting, 4 windows per pass, ``Invertd`` back to each scan's grid.

Intensity is the tutorial arm's: CT windowed to the training foreground's 0.5-99.5
percentiles and mapped to [0, 1] (``CropForegroundd`` after it), MR z-scored per channel.
Trained on all training cases, last weights. Predicted by this file run as a script
(``monai_cpu_arm.py JOB``), in a process of its own, as a user runs it.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # medseg from this checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the other benchmarks

from phantom_experiment import SEED, StageError, median_spacing, predict_monai  # noqa: E402
from train_throughput import TUTORIAL_CHANNELS, monai_preprocessing, monai_window  # noqa: E402

#: The tutorial's patch: its field of view (at the median spacing, clipped to the image) is kept.
TUTORIAL_PATCH = (96, 96, 48)
#: The CPU patches and crops per step, chosen once on a 2-vCPU machine for steps of about 0.3 s (measured with the
#: tutorial's UNet and this arm's transforms: 4 x 64 x 64 x 32, 0.30 s; 16 x 160 x 160, 0.32 s; 2 x 64 x 64 x 32
#: took 0.16 s, 8 x 128 x 128 0.13 s).
PATCH_3D = (64, 64, 32)
PATCH_2D = (160, 160)
#: Images per step, and crops of each (3D, 2D: slices).
IMAGES_PER_STEP = 2
CROPS_PER_IMAGE = {3: 2, 2: 8}
#: Each axis of a patch is a multiple of this (the UNet halves four times).
PATCH_MULTIPLE = 16
#: 2D when slices are this many times thicker than the in-plane spacing and there are at most MAX_SLICES_2D.
SLICE_RATIO_2D = 3.0
MAX_SLICES_2D = 48
#: A label under this share of the voxels (median over the training cases) makes sampling class-balanced.
SMALL_LABEL_FRACTION = 0.01
LEARNING_RATE = 1e-3
#: Inference: window overlap, weighting and windows per forward pass.
OVERLAP = 0.5
WINDOWS_PER_PASS = 4
#: Foreground percentiles of the CT window.
CT_PERCENTILES = (0.5, 99.5)
Log = Callable[[str], None]
Cases = Sequence[tuple[Sequence[Path], Path]]


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


def foreground_window(cases: Cases) -> tuple[float, float]:
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


def intensity_transform(window: Sequence[float] | None) -> list:
    """CT (a ``window``): the window mapped to [0, 1], clipped; MR (None): z-scored per channel."""
    if window is not None:
        return [monai_window(*window)]
    from monai.transforms import NormalizeIntensityd

    return [NormalizeIntensityd(keys="image", nonzero=False, channel_wise=True)]


def choose_window(channels: Sequence[str], training: Cases) -> tuple[tuple[float, float] | None, str]:
    """The recipes' intensity choice: CT's foreground window (None for MR), and its description."""
    if [c.upper() for c in channels] == ["CT"]:
        window = foreground_window(training)
        return window, f"ScaleIntensityRanged {window[0]:.0f}..{window[1]:.0f} HU (foreground 0.5-99.5%) -> [0, 1]"
    return None, "NormalizeIntensityd(nonzero=False, channel_wise=True)"


def median_shape(cases: Cases) -> tuple[float, float, float]:
    """Per axis, the median image shape (voxels) of the cases' first channels."""
    import nibabel as nib
    import numpy as np

    shapes = [nib.load(str(images[0])).header.get_data_shape()[:3] for images, _ in cases]
    return tuple(float(v) for v in np.median(np.asarray(shapes, dtype=np.float64), axis=0))  # type: ignore[return-value]


def label_fractions(cases: Cases, labels: Sequence[str]) -> dict[str, float]:
    """Per label (numbered from 1 in ``labels``' order), the median share of a case's voxels."""
    import nibabel as nib
    import numpy as np

    shares = []
    for _, label in cases:
        values = np.asanyarray(nib.load(str(label)).dataobj).astype(np.int64).ravel()
        counts = np.bincount(values, minlength=len(labels) + 1)
        shares.append(counts[1 : len(labels) + 1] / counts.sum())
    return {name: float(v) for name, v in zip(labels, np.median(np.asarray(shares), axis=0))}


# -- the recipe's choices -------------------------------------------------------------------


@dataclass(frozen=True)
class CpuRecipe:
    """Everything the arm decided before the clock; recorded as the result's settings."""

    dimensions: int
    spacing: tuple[float, ...]  # mm; 2D: the slice spacing is 0 (each scan's own)
    patch: tuple[int, ...]  # 3D: x, y, z; 2D: x, y
    sampler: str  # RandCropByLabelClassesd or RandCropByPosNegLabeld
    ratios: tuple[float, ...] | None  # the class ratios of RandCropByLabelClassesd
    images_per_step: int
    crops_per_image: int
    flip_axes: tuple[int, ...]
    in_channels: int
    num_classes: int
    intensity: str
    window: tuple[float, float] | None
    learning_rate: float = LEARNING_RATE
    channels: tuple[int, ...] = TUTORIAL_CHANNELS
    norm: str = "instance"
    schedule: str = "cosine to 0 over the time budget"
    optimizer: str = "AdamW (weight decay 0.01)"
    augmentation: str = (
        "RandFlipd p=0.1 per axis (not left-right); RandAffined p=0.2 (in-plane rotation <= 15 deg, scale +-10%); "
        "RandScaleIntensityd 0.1 p=0.5; RandShiftIntensityd 0.1 p=0.5"
    )
    inference: str = f"overlap {OVERLAP}, gaussian, {WINDOWS_PER_PASS} windows per pass, Invertd"

    @property
    def crop_foreground(self) -> bool:
        return self.window is not None

    @property
    def crop_size(self) -> tuple[int, int, int]:
        """The crop taken from a cached volume: 2D patches are slices of depth 1."""
        return (*self.patch, 1) if self.dimensions == 2 else self.patch  # type: ignore[return-value]


def is_slice_stack(spacing: Sequence[float], shape: Sequence[float]) -> bool:
    """Thick slices (SLICE_RATIO_2D x the in-plane spacing) and few of them (MAX_SLICES_2D): train in 2D."""
    return spacing[2] >= SLICE_RATIO_2D * max(spacing[0], spacing[1]) and shape[2] <= MAX_SLICES_2D


def cpu_spacing_and_patch(
    spacing: Sequence[float], shape: Sequence[float], patch: Sequence[int]
) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """Per axis of ``patch``: the spacing that keeps the tutorial patch's field of view, and the patch clipped.

    The tutorial's field of view is its patch at the median ``spacing``, clipped to the median
    ``shape``; the spacing is never finer than the median; the patch is then clipped to the
    median image at the new spacing, rounded down to a multiple of 16 (at least 16).
    """
    out_spacing, out_patch = [], []
    for s, n, p, t in zip(spacing, shape, patch, TUTORIAL_PATCH):
        view_mm = min(t, n) * s
        target = max(s, view_mm / p)
        out_spacing.append(round(target, 4))
        fits = int(n * s / target) // PATCH_MULTIPLE * PATCH_MULTIPLE
        out_patch.append(max(PATCH_MULTIPLE, min(p, fits)))
    return tuple(out_spacing), tuple(out_patch)


def choose_recipe(dataset: Path, training: Cases) -> tuple[CpuRecipe, dict[str, Any]]:
    """The recipe for ``dataset`` from its training cases, and the statistics it used."""
    manifest = json.loads((dataset / "dataset.json").read_text())
    channels = list(manifest["channel_names"].values())
    labels = sorted((k for k, v in manifest["labels"].items() if int(v) > 0), key=lambda k: int(manifest["labels"][k]))
    num_classes = max(int(v) for v in manifest["labels"].values()) + 1
    spacing = median_spacing([images[0] for images, _ in training])
    shape = median_shape(training)
    fractions = label_fractions(training, labels)
    window, described = choose_window(channels, training)
    dimensions = 2 if is_slice_stack(spacing, shape) else 3
    if dimensions == 2:
        in_plane, patch = cpu_spacing_and_patch(spacing[:2], shape[:2], PATCH_2D)
        target: tuple[float, ...] = (*in_plane, 0.0)
        flips: tuple[int, ...] = (1,)  # a slice's axes are x (left-right, kept) and y
    else:
        target, patch = cpu_spacing_and_patch(spacing, shape, PATCH_3D)
        flips = (1, 2)
    small = min(fractions.values()) < SMALL_LABEL_FRACTION
    recipe = CpuRecipe(
        dimensions=dimensions,
        spacing=target,
        patch=patch,
        sampler="RandCropByLabelClassesd" if small else "RandCropByPosNegLabeld",
        ratios=(1.0,) * num_classes if small else None,
        images_per_step=IMAGES_PER_STEP,
        crops_per_image=CROPS_PER_IMAGE[dimensions],
        flip_axes=flips,
        in_channels=len(channels),
        num_classes=num_classes,
        intensity=described,
        window=window,
    )
    statistics_used = {
        "median_spacing": [round(v, 4) for v in spacing],
        "median_shape": list(shape),
        "label_fractions": {k: round(v, 6) for k, v in fractions.items()},
    }
    return recipe, statistics_used


# -- transforms, network --------------------------------------------------------------------


def preprocessing(recipe: CpuRecipe, keys: Sequence[str] = ("image", "label")):
    """The deterministic (cached) transforms: the tutorial's, at the recipe's spacing."""
    intensity = intensity_transform(recipe.window)
    return monai_preprocessing(recipe.spacing, keys=keys, intensity=intensity, crop_foreground=recipe.crop_foreground)


def training_transforms(recipe: CpuRecipe):
    """Cached: preprocessing, a pad to the crop, the crop centres. Per item: crops, (2D: squeeze), augmentation."""
    from monai.transforms import (
        ClassesToIndicesd,
        Compose,
        FgBgToIndicesd,
        RandAffined,
        RandCropByLabelClassesd,
        RandCropByPosNegLabeld,
        RandFlipd,
        RandScaleIntensityd,
        RandShiftIntensityd,
        SpatialPadd,
        SqueezeDimd,
    )

    keys = ["image", "label"]
    size = recipe.crop_size
    if recipe.ratios is not None:
        indices = ClassesToIndicesd(keys="label", num_classes=recipe.num_classes)
        crop = RandCropByLabelClassesd(
            keys=keys,
            label_key="label",
            spatial_size=size,
            ratios=list(recipe.ratios),
            num_classes=recipe.num_classes,
            num_samples=recipe.crops_per_image,
            indices_key="label_cls_indices",
            warn=False,
        )
    else:
        indices = FgBgToIndicesd(keys="label")
        crop = RandCropByPosNegLabeld(
            keys=keys,
            label_key="label",
            spatial_size=size,
            pos=1,
            neg=1,
            num_samples=recipe.crops_per_image,
            fg_indices_key="label_fg_indices",
            bg_indices_key="label_bg_indices",
        )
    squeeze = [SqueezeDimd(keys=keys, dim=3)] if recipe.dimensions == 2 else []
    rotation = math.pi / 12 if recipe.dimensions == 2 else (0.0, 0.0, math.pi / 12)  # about z: in-plane
    return Compose(
        [
            *preprocessing(recipe).transforms,
            SpatialPadd(keys=keys, spatial_size=size),
            indices,
            crop,
            *squeeze,
            *(RandFlipd(keys=keys, spatial_axis=[axis], prob=0.1) for axis in recipe.flip_axes),
            RandAffined(
                keys=keys,
                prob=0.2,
                rotate_range=rotation,
                scale_range=0.1,
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
            ),
            RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
            RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
        ]
    )


def build_unet(recipe: CpuRecipe):
    """The tutorial's ``UNet`` (residual units, strides 2) in the recipe's dimensions, with instance norm."""
    from monai.networks.layers import Norm
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=recipe.dimensions,
        in_channels=recipe.in_channels,
        out_channels=recipe.num_classes,
        channels=recipe.channels,
        strides=(2,) * (len(recipe.channels) - 1),
        num_res_units=2,
        norm=Norm.INSTANCE,
    )


# -- training -------------------------------------------------------------------------------


def cosine_factor(elapsed: float, budget: float) -> float:
    """The learning rate's share after ``elapsed`` of ``budget`` seconds: a cosine from 1 to 0."""
    return 0.5 * (1 + math.cos(math.pi * min(elapsed / budget, 1.0)))


def train(data, recipe: CpuRecipe, *, minutes: float, log: Log) -> tuple[Any, dict[str, Any]]:
    """Train on the cached ``data`` for ``minutes`` (the clock starts here); the model and what was measured."""
    import torch
    from monai.data import DataLoader
    from monai.losses import DiceCELoss

    loader = DataLoader(data, batch_size=recipe.images_per_step, shuffle=True, num_workers=0)
    model = build_unet(recipe)
    criterion = DiceCELoss(to_onehot_y=True, softmax=True)
    optimiser = torch.optim.AdamW(model.parameters(), recipe.learning_rate)
    budget = minutes * 60
    started = time.monotonic()
    steps, epochs, loss_value, step_seconds, data_seconds = 0, 0, math.nan, [], []
    reported = started
    model.train()
    while time.monotonic() - started < budget:
        epochs += 1
        fetched = time.monotonic()
        for batch in loader:
            begun = time.monotonic()
            if begun - started >= budget:
                break
            for group in optimiser.param_groups:
                group["lr"] = recipe.learning_rate * cosine_factor(begun - started, budget)
            optimiser.zero_grad()
            loss = criterion(model(batch["image"]), batch["label"])
            loss.backward()
            optimiser.step()
            loss_value = float(loss.detach())
            steps += 1
            done = time.monotonic()
            step_seconds.append(done - fetched)
            data_seconds.append(begun - fetched)
            fetched = done
            if done - reported >= 60:
                reported = done
                log(f"monai-cpu: {steps} steps, epoch {epochs}, loss {loss_value:.4f}, {(done - started) / 60:.1f} min")
    seconds = time.monotonic() - started
    timed = step_seconds[5:] or step_seconds  # the first steps warm up
    measured = {
        "steps": steps,
        "epochs": epochs,
        "train_minutes": seconds / 60,
        "step_seconds": round(statistics.median(timed), 3) if timed else None,
        "data_share": round(sum(data_seconds) / sum(step_seconds), 4) if step_seconds else None,
        "last_loss": round(loss_value, 4) if math.isfinite(loss_value) else None,
    }
    return model, measured


# -- the arm --------------------------------------------------------------------------------


def run_monai_cpu(dataset: Path, work: Path, *, minutes: float, threads: int | None, seed: int, log: Log) -> dict:
    """Choose, cache, train for ``minutes``, predict the test cases (in a process of its own).

    Returns ``steps``, ``epochs``, ``train_minutes``, ``predict_seconds``, ``predictions`` (a folder of
    ``<case>.nii.gz``), ``settings`` (the recipe and the statistics it used) and ``timing``.
    """
    import torch
    from monai.data import CacheDataset
    from monai.utils import set_determinism

    work.mkdir(parents=True, exist_ok=True)
    training, test = case_files(dataset, "Tr"), case_files(dataset, "Ts")
    started = time.monotonic()
    recipe, used = choose_recipe(dataset, training)
    stats_seconds = time.monotonic() - started
    settings = {**asdict(recipe), **used, "seed": seed}
    log(
        f"monai-cpu: {recipe.dimensions}D, spacing {list(recipe.spacing)} mm, patch {list(recipe.patch)}, "
        f"{recipe.images_per_step} x {recipe.crops_per_image} crops, {recipe.sampler}, {recipe.intensity}"
    )
    set_determinism(seed=seed)
    files = [
        {"image": str(images[0]) if len(images) == 1 else [str(p) for p in images], "label": str(label)}
        for images, label in training
    ]
    started = time.monotonic()
    data = CacheDataset(files, transform=training_transforms(recipe), cache_rate=1.0, progress=False)
    cache_seconds = time.monotonic() - started
    log(f"monai-cpu: cached {len(data)} cases in {cache_seconds:.0f} s (outside the clock)")
    model, measured = train(data, recipe, minutes=minutes, log=log)
    log(
        f"monai-cpu train: {measured['train_minutes']:.1f} min, {measured['steps']} steps, "
        f"{measured['step_seconds']} s a step"
    )
    torch.save(model.state_dict(), work / "model.pt")
    predictions = work / "predictions"
    job = {
        "recipe": asdict(recipe),
        "weights": str(work / "model.pt"),
        "images": [[str(p) for p in images] for images, _ in test],
        "output": str(predictions),
        "timing": str(work / "predict_timing.json"),
    }
    (work / "predict_job.json").write_text(json.dumps(job, indent=1))
    command = [sys.executable, str(Path(__file__).resolve()), str(work / "predict_job.json")]
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    started = time.monotonic()
    with (work / "predict.log").open("w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
    predict_seconds = time.monotonic() - started
    if done.returncode != 0:
        raise StageError(f"monai-cpu's prediction exited with {done.returncode} (see {work / 'predict.log'})")
    cases_seconds = json.loads((work / "predict_timing.json").read_text())["cases_seconds"]
    log(f"monai-cpu predict: {len(test)} case(s) in {predict_seconds:.0f} s ({cases_seconds:.1f} s in the cases)")
    return {
        "steps": measured.pop("steps"),
        "epochs": measured.pop("epochs"),
        "train_minutes": measured.pop("train_minutes"),
        "predict_seconds": predict_seconds,
        "predictions": predictions,
        "settings": settings,
        "timing": {
            **measured,
            "stats_seconds": round(stats_seconds, 1),
            "cache_seconds": round(cache_seconds, 1),
            "predict_cases_seconds": cases_seconds,
        },
    }


def predict_job(job_file: Path) -> None:
    """The arm's prediction script: rebuild the UNet, load its weights, predict the job's images."""
    import torch
    from monai.inferers import SliceInferer, SlidingWindowInferer

    job = json.loads(job_file.read_text())
    raw = job["recipe"]
    recipe = CpuRecipe(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    model = build_unet(recipe)
    model.load_state_dict(torch.load(job["weights"], map_location="cpu"))
    started = time.monotonic()
    common = {"sw_batch_size": WINDOWS_PER_PASS, "overlap": OVERLAP, "mode": "gaussian"}
    inferer = (
        SliceInferer(roi_size=recipe.patch, spatial_dim=2, **common)
        if recipe.dimensions == 2
        else SlidingWindowInferer(roi_size=recipe.patch, **common)
    )
    images = [[Path(p) for p in case] for case in job["images"]]
    predict_monai(
        model,
        images,
        Path(job["output"]),
        spacing=recipe.spacing,
        preprocessing=preprocessing(recipe, keys=("image",)),
        inferer=inferer,
    )
    Path(job["timing"]).write_text(json.dumps({"cases_seconds": round(time.monotonic() - started, 2)}))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: monai_cpu_arm.py JOB.json (written by run_monai_cpu)")
    predict_job(Path(sys.argv[1]))
