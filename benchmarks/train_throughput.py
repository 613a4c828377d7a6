#!/usr/bin/env python
"""Benchmark training throughput on phantoms: medseg's trainer vs the plain MONAI recipe.

Both sides train the same phantom cases (``medseg.synthetic.write_phantom_dataset``)
on the CPU, in the same process, one after the other, with the same torch threads:

* medseg   the pipeline ``medseg plan`` chooses for a CPU (``plan_dataset(device="cpu")``,
           or ``--pipeline FILE``); cases prepared in memory (``prepare_case``); steps
           taken by the real training loop (``Trainer._train_epoch``: forward,
           deep-supervision Dice + CE, backward, clipping, SGD) on batches from the real
           ``PatchSampler`` (foreground oversampling and augmentation), whose ``batch()``
           calls are timed as the data-loading share of each step;
* MONAI    the tutorial recipe: ``CacheDataset`` over ``LoadImaged``, ``EnsureChannelFirstd``,
           ``Orientationd(RAS)``, ``Spacingd``, ``ScaleIntensityRanged``, ``CropForegroundd``
           (cached), then ``RandCropByPosNegLabeld`` per item, a ``DataLoader``
           (``num_workers=0``, as medseg's sampler runs in the training process), and
           ``monai.networks.nets.UNet`` (residual units, batch norm) with ``DiceCELoss``
           and Adam, twice: "MONAI, planned" has the planned network's channels (16, 32, 64,
           128 on phantoms: about as many weights) and the planned patch (rounded up to a
           multiple of the UNet's strides) with as many patches per step; "MONAI tutorial"
           has the tutorial's channels (16-256) and 4 crops x 2 images per step, on a
           64 x 64 x 32 patch (the tutorial's 96^3 is larger than a phantom), which is what
           ``phantom_experiment.py`` trains.

MONAI's UNet downsamples in its first convolution, so at the same channels it does
a seventh to a ninth of DynUNet's arithmetic per patch (DynUNet convolves twice at full
resolution on the way down and twice on the way up): compare GMAC/s as well as
patches/s.

For each row: warm-up steps (not timed), then ``--steps`` timed steps (half as many
for the tutorial's larger steps). Reported: median step time, the data-loading part
of it, patches, voxels and multiply-accumulates per second, parameters and forward
multiply-accumulates per patch (counted by hooks on the built networks), and the
ratios medseg / MONAI (> 1: medseg faster).

Example::

    .venv/bin/python benchmarks/train_throughput.py --quick
    .venv/bin/python benchmarks/train_throughput.py --cases 12 --steps 50
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Where the repository's ``medseg`` lives when the script is run from a checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

warnings.filterwarnings("ignore", category=FutureWarning, module="monai")

#: The spleen tutorial's CT window (HU), mapped to [0, 1] and clipped.
MONAI_WINDOW = (-57.0, 164.0)
#: The tutorial's network and sampling: UNet channels, 4 crops per image, 2 images per batch. Its 96^3 patch
#: is larger than a whole phantom (about 92 x 74 x 40 voxels), so the patch keeps its share of the image instead.
TUTORIAL_CHANNELS = (16, 32, 64, 128, 256)
TUTORIAL_PATCH = (64, 64, 32)
TUTORIAL_SAMPLES = 4
TUTORIAL_BATCH = 2
SEED = 0


@dataclass
class Throughput:
    """Timings of one side."""

    name: str
    patch: tuple[int, ...]
    patches_per_step: int
    parameters: int
    gmacs_per_patch: float
    steps: list[float]  # seconds per timed step
    data: list[float]  # seconds of data loading in each timed step
    setup_s: float  # caching / preparing the cases

    @property
    def step_s(self) -> float:
        return statistics.median(self.steps)

    @property
    def data_s(self) -> float:
        return statistics.median(self.data)

    @property
    def data_share(self) -> float:
        return sum(self.data) / sum(self.steps)

    @property
    def patches_per_s(self) -> float:
        return self.patches_per_step * len(self.steps) / sum(self.steps)

    @property
    def megavoxels_per_s(self) -> float:
        return self.patches_per_s * math.prod(self.patch) / 1e6

    @property
    def gmacs_per_s(self) -> float:
        """Useful arithmetic per second: 3 forward passes' multiply-accumulates per patch trained."""
        return 3 * self.gmacs_per_patch * self.patches_per_s


# -- shared pieces (also used by phantom_experiment.py) -------------------------------------


def monai_files(images: Sequence[Path], labels: Sequence[Path] | None = None) -> list[dict[str, str]]:
    """MONAI's list of dictionaries: ``{"image": ..., "label": ...}``."""
    if labels is None:
        return [{"image": str(i)} for i in images]
    return [{"image": str(i), "label": str(lab)} for i, lab in zip(images, labels)]


def monai_window(low: float = MONAI_WINDOW[0], high: float = MONAI_WINDOW[1]):
    """The tutorial's CT intensity transform: ``low``..``high`` HU mapped to [0, 1] and clipped."""
    from monai.transforms import ScaleIntensityRanged

    return ScaleIntensityRanged(keys=["image"], a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True)


def monai_preprocessing(
    spacing: Sequence[float],
    *,
    keys: Sequence[str] = ("image", "label"),
    intensity: Sequence[Callable] | None = None,
    crop_foreground: bool = True,
):
    """The spleen tutorial's deterministic transforms, at ``spacing`` mm (the tutorial's is 1.5 x 1.5 x 2).

    Args:
        spacing: the target voxel size (mm).
        keys: the items to load ("image" may name one file or a list of channel files).
        intensity: transforms of the image after loading (default: the tutorial's CT window, :func:`monai_window`).
        crop_foreground: crop to the image's voxels above 0 after ``intensity`` (the tutorial's ``CropForegroundd``).
    """
    from monai.transforms import Compose, CropForegroundd, EnsureChannelFirstd, LoadImaged, Orientationd, Spacingd

    keys = list(keys)
    modes = ["bilinear" if key == "image" else "nearest" for key in keys]
    crop = [CropForegroundd(keys=keys, source_key="image", allow_smaller=True)] if crop_foreground else []
    return Compose(
        [
            LoadImaged(keys=keys),
            EnsureChannelFirstd(keys=keys),
            *(intensity if intensity is not None else [monai_window()]),
            *crop,
            Orientationd(keys=keys, axcodes="RAS"),
            Spacingd(keys=keys, pixdim=tuple(spacing), mode=modes),
        ]
    )


def monai_training_transforms(
    spacing: Sequence[float],
    patch: Sequence[int],
    samples: int,
    *,
    intensity: Sequence[Callable] | None = None,
    crop_foreground: bool = True,
):
    """Preprocessing, then (per item, not cached) a pad to the patch and ``samples`` crops, half on foreground.

    ``intensity`` and ``crop_foreground`` go to :func:`monai_preprocessing`.
    """
    from monai.transforms import Compose, RandCropByPosNegLabeld, SpatialPadd

    return Compose(
        [
            *monai_preprocessing(spacing, intensity=intensity, crop_foreground=crop_foreground).transforms,
            SpatialPadd(keys=["image", "label"], spatial_size=tuple(patch)),
            RandCropByPosNegLabeld(
                keys=["image", "label"],
                label_key="label",
                spatial_size=tuple(patch),
                pos=1,
                neg=1,
                num_samples=samples,
                image_key="image",
                image_threshold=0,
            ),
        ]
    )


def monai_unet(channels: Sequence[int], *, out_channels: int, in_channels: int = 1):
    """The tutorials' ``UNet``: stride 2 between levels, two residual units per level, batch norm."""
    from monai.networks.layers import Norm
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(channels),
        strides=(2,) * (len(channels) - 1),
        num_res_units=2,
        norm=Norm.BATCH,
    )


def round_up(patch: Sequence[int], multiple: int) -> tuple[int, ...]:
    """Each size rounded up to a multiple of ``multiple``."""
    return tuple(int(math.ceil(n / multiple) * multiple) for n in patch)


def forward_gmacs(model, patch: Sequence[int], in_channels: int = 1) -> float:
    """Billions of multiply-accumulates of one patch's forward pass, counted by hooks on every convolution."""
    import torch

    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Conv3d)):
            total += output.numel() * module.in_channels // module.groups * math.prod(module.kernel_size)
        elif isinstance(module, (torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)):
            total += inputs[0].numel() * module.out_channels // module.groups * math.prod(module.kernel_size)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_channels, *patch))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total / 1e9


def versions() -> str:
    bits = [f"python {platform.python_version()}"]
    for dist in ("torch", "monai", "numpy"):
        try:
            bits.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(bits)


def cpu_line() -> str:
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (
        f"CPUs: {os.cpu_count()} (usable: {usable}); torch threads: {torch.get_num_threads()}; "
        f"load average: {load}; {platform.platform()}"
    )


# -- medseg ---------------------------------------------------------------------------------


class _TimedSampler:
    """A ``PatchSampler`` whose ``batch()`` calls are timed."""

    def __init__(self, sampler) -> None:
        self.sampler = sampler
        self.seconds: list[float] = []

    def batch(self):
        started = time.perf_counter()
        batch = self.sampler.batch()
        self.seconds.append(time.perf_counter() - started)
        return batch


class _TimedSteps:
    """Records the time between the trainer's progress reports (one per step)."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.seconds: list[float] = []

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if stage == "train":
            self.seconds.append(now - self.last)
        self.last = now


def time_medseg(dataset: Path, pipeline, *, steps: int, warmup: int, workdir: Path) -> Throughput:
    """Steps of medseg's training loop on prepared cases, with the sampler's share timed."""
    import torch

    from medseg.datasets import load_case, open_dataset
    from medseg.models.networks import build_network
    from medseg.models.devices import compute_settings
    from medseg.training.loop import LoopSettings, Trainer, _EpochTiming
    from medseg.transforms.prepare import prepare_case
    from medseg.transforms.sampling import PatchSampler

    started = time.perf_counter()
    opened = open_dataset(dataset)
    cases = [prepare_case(*load_case(opened, case), pipeline, case_id=case.case_id) for case in opened.cases]
    setup = time.perf_counter() - started
    device = torch.device("cpu")
    run = pipeline.model_copy(
        update={"training": pipeline.training.model_copy(update={"iterations_per_epoch": warmup + steps})}
    )
    timer = _TimedSteps()
    settings = LoopSettings(run_dir=workdir / "medseg-run", device=device, fold=0, pipeline_yaml="", progress=timer)
    with compute_settings(device):
        trainer = Trainer(run, train_cases=cases, validation_cases=[], settings=settings)
        sampler = _TimedSampler(PatchSampler(cases, run, seed=SEED, augment=True))
        timer.last = time.perf_counter()
        trainer._train_epoch(sampler, _EpochTiming())  # the loop's own steps (private: the unit train() runs)
    probe = build_network(pipeline.network, in_channels=1, out_channels=pipeline.num_classes)
    return Throughput(
        name="medseg",
        patch=tuple(pipeline.training.patch_size),
        patches_per_step=pipeline.training.batch_size,
        parameters=sum(p.numel() for p in probe.parameters()),
        gmacs_per_patch=forward_gmacs(probe, pipeline.training.patch_size),
        steps=timer.seconds[warmup:],
        data=sampler.seconds[warmup:],
        setup_s=setup,
    )


# -- MONAI ----------------------------------------------------------------------------------


def time_monai(
    dataset: Path,
    *,
    name: str,
    spacing: Sequence[float],
    patch: Sequence[int],
    channels: Sequence[int],
    samples: int,
    batch_size: int,
    num_classes: int,
    steps: int,
    warmup: int,
) -> Throughput:
    """Steps of the plain MONAI recipe: CacheDataset, RandCropByPosNegLabeld, UNet, DiceCELoss, Adam."""
    import torch
    from monai.data import CacheDataset, DataLoader, list_data_collate
    from monai.losses import DiceCELoss
    from monai.utils import set_determinism

    set_determinism(seed=SEED)
    images = sorted((dataset / "imagesTr").glob("*_0000.nii.gz"))
    labels = [dataset / "labelsTr" / image.name.replace("_0000.nii.gz", ".nii.gz") for image in images]
    started = time.perf_counter()
    data = CacheDataset(
        monai_files(images, labels),
        transform=monai_training_transforms(spacing, patch, samples),
        cache_rate=1.0,
        num_workers=0,
        progress=False,
    )
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, num_workers=0, collate_fn=list_data_collate)
    setup = time.perf_counter() - started
    model = monai_unet(channels, out_channels=num_classes)
    criterion = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    model.train()
    step_times, data_times = [], []
    batches = iter(loader)
    while len(step_times) < warmup + steps:
        started = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        loaded = time.perf_counter()
        optimizer.zero_grad()
        loss = criterion(model(batch["image"]), batch["label"])
        loss.backward()
        optimizer.step()
        done = time.perf_counter()
        step_times.append(done - started)
        data_times.append(loaded - started)
    return Throughput(
        name=name,
        patch=tuple(patch),
        patches_per_step=samples * batch_size,
        parameters=sum(p.numel() for p in model.parameters()),
        gmacs_per_patch=forward_gmacs(model, patch),
        steps=step_times[warmup:],
        data=data_times[warmup:],
        setup_s=setup,
    )


# -- report ---------------------------------------------------------------------------------


def print_table(results: Sequence[Throughput]) -> None:
    header = (
        f"{'method':<15} {'patch':<10} {'per step':>8} {'params':>7} {'GMAC/patch':>10} {'setup s':>7} "
        f"{'step s':>7} {'data s':>7} {'data %':>6} {'patches/s':>9} {'Mvox/s':>6} {'GMAC/s':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        patch = "x".join(str(n) for n in r.patch)
        print(
            f"{r.name:<15} {patch:<10} {r.patches_per_step:>8} {r.parameters / 1e6:>6.2f}M {r.gmacs_per_patch:>10.2f} "
            f"{r.setup_s:>7.1f} {r.step_s:>7.3f} {r.data_s:>7.3f} {r.data_share:>6.1%} {r.patches_per_s:>9.2f} "
            f"{r.megavoxels_per_s:>6.2f} {r.gmacs_per_s:>6.1f}"
        )
    medseg = results[0]
    for other in results[1:]:
        print(
            f"ratio medseg / {other.name}: patches/s {medseg.patches_per_s / other.patches_per_s:.2f}x, "
            f"voxels/s {medseg.megavoxels_per_s / other.megavoxels_per_s:.2f}x, "
            f"GMAC/s {medseg.gmacs_per_s / other.gmacs_per_s:.2f}x   (> 1: medseg faster)"
        )
    print(
        "(step s, data s: medians over the timed steps; data % = data loading / step time, all timed steps; "
        "setup s = preparing (medseg) or caching (MONAI) the cases; GMAC/s = 3 x GMAC/patch x patches/s, "
        "the arithmetic a step does: forward and backward)"
    )


def _run(args: argparse.Namespace, workdir: Path, log: Callable[[str], None]) -> list[Throughput]:
    import torch

    from medseg.config import load_pipeline
    from medseg.planning import plan_dataset
    from medseg.synthetic import write_phantom_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = workdir / "Dataset001_Phantom"
    if not (dataset / "dataset.json").is_file():
        started = time.perf_counter()
        write_phantom_dataset(dataset, num_training=args.cases, seed=SEED)
        log(f"wrote {args.cases} phantom cases in {time.perf_counter() - started:.1f} s under {dataset}")
    if args.pipeline:
        pipeline = load_pipeline(args.pipeline)
        log(f"pipeline: {args.pipeline}")
    else:
        pipeline = plan_dataset(dataset, device="cpu", cpu_threads=torch.get_num_threads()).pipeline
        log(f"pipeline: planned for a CPU with {torch.get_num_threads()} thread(s)")
    network = pipeline.network
    if network.dimensions != 3:
        raise SystemExit("the MONAI side is 3D only; plan a 3D pipeline (or pass --pipeline)")
    log(
        f"medseg: filters {network.filters}, patch {pipeline.training.patch_size}, batch "
        f"{pipeline.training.batch_size}, spacing {list(pipeline.preprocessing.spacing)} mm"
    )
    medseg = time_medseg(dataset, pipeline, steps=args.steps, warmup=args.warmup, workdir=workdir)
    results = [medseg]
    channels = network.filters
    patch = round_up(pipeline.training.patch_size, 2 ** (len(channels) - 1))
    batch = pipeline.training.batch_size
    log(f"MONAI, as planned: UNet channels {list(channels)}, patch {list(patch)}, {batch} crops per step")
    common = {"spacing": pipeline.preprocessing.spacing, "num_classes": pipeline.num_classes, "warmup": args.warmup}
    results.append(
        time_monai(
            dataset,
            name="MONAI, planned",
            patch=patch,
            channels=channels,
            samples=batch,
            batch_size=1,
            steps=args.steps,
            **common,
        )
    )
    if not args.no_tutorial:
        log(
            f"MONAI, tutorial: UNet channels {list(TUTORIAL_CHANNELS)}, patch {list(TUTORIAL_PATCH)}, "
            f"{TUTORIAL_SAMPLES} crops x {TUTORIAL_BATCH} images per step"
        )
        results.append(
            time_monai(
                dataset,
                name="MONAI tutorial",
                patch=TUTORIAL_PATCH,
                channels=TUTORIAL_CHANNELS,
                samples=TUTORIAL_SAMPLES,
                batch_size=TUTORIAL_BATCH,
                steps=max(1, args.steps // 2),
                **common,
            )
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time training steps on CT phantoms (CPU): medseg's planned pipeline and trainer vs the plain "
        "MONAI recipe (CacheDataset + RandCropByPosNegLabeld + UNet + DiceCELoss) at a comparable network and patch.",
    )
    parser.add_argument("--quick", action="store_true", help="4 cases, 8 timed steps (a minute or two)")
    parser.add_argument("--cases", type=int, default=None, help="phantom training cases (default 8; --quick 4)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per side (default 30; --quick 8)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3; --quick 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--pipeline", type=Path, default=None, help="time this pipeline instead of planning one")
    parser.add_argument(
        "--no-tutorial",
        action="store_true",
        help="skip the third row: MONAI's tutorial network and sampling, as phantom_experiment.py trains them",
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the phantoms go (default: a temporary folder, deleted)"
    )
    args = parser.parse_args(argv)
    args.cases = args.cases or (4 if args.quick else 8)
    args.steps = args.steps or (8 if args.quick else 30)
    args.warmup = args.warmup if args.warmup is not None else (2 if args.quick else 3)
    if args.cases < 2 or args.steps < 1 or args.warmup < 0 or (args.threads is not None and args.threads < 1):
        parser.error("need --cases >= 2, --steps >= 1, --warmup >= 0 and --threads >= 1")
    created = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="medseg-throughput-")) if created else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    print(cpu_line())
    print(versions())
    try:
        results = _run(args, workdir, print)
    finally:
        if created:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
