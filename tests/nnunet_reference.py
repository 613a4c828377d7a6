"""Reference nnU-Net v2 models and predictions, made by nnU-Net's own commands, for tests and benchmarks.

medseg runs nnU-Net trained-model folders itself; these helpers make the other side of the check:
a raw dataset of CT phantoms (``medseg.synthetic``) on anisotropic grids, planned and preprocessed by
``nnUNetv2_plan_and_preprocess``, trained by ``nnUNetv2_train`` with a custom trainer class (see
``tests/nnunet_runner.py``) on the CPU, and predicted by ``nnUNetv2_predict``. Every step is a
subprocess running nnU-Net's console command through the runner (so the custom trainer is found)
with this interpreter, in the nnU-Net folders of one :class:`NnunetEnv`. Typical use::

    env = NnunetEnv.create(tmp / "nnunet")
    write_raw_dataset(env.raw, 501, "Phantom", cases=8)
    plan_and_preprocess(env, 501)
    model = train(env, 501, "3d_fullres")
    write_test_cases(tmp / "in", tmp / "truth", cases=3)
    predict_reference(env, model, tmp / "in", tmp / "out")

or :func:`build_reference` for all of it, reused when already there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg.geometry import Geometry
from medseg.io import read_nifti, write_nifti
from medseg.synthetic import make_phantom
from medseg.volume import Volume, VolumeKind

#: Runs nnU-Net's console commands with the custom trainers (a script: it imports nnunetv2 at once).
RUNNER = Path(__file__).resolve().parent / "nnunet_runner.py"
#: The custom trainers of the runner.
TINY_TRAINER = "nnUNetTrainerMedsegTiny"
NO_MIRRORING_TRAINER = "nnUNetTrainerMedsegTinyNoMirroring"

#: The phantoms' labels, as nnU-Net's dataset.json has them.
LABELS = {"background": 0, "liver": 1, "spleen": 2, "kidney": 3}
#: The same anatomy as nnU-Net regions (sigmoid outputs, one per region), rebuilt into 1, 2, 3.
REGION_LABELS = {"background": 0, "organs": [1, 2, 3], "spleen_or_kidney": [2, 3], "kidney": [3]}

#: Phantom grids: in-plane and slice spacing ranges (mm). Slices are > 3x the in-plane spacing, so
#: nnU-Net treats the data as anisotropic: it resamples along z separately (order 0), and its plan
#: puts z first (``transpose_forward``) and picks a finer target slice spacing than the median.
IN_PLANE_MM = (3.8, 4.3)
SLICE_MM = (13.5, 15.0)
#: Field of view (mm) of the training grids: the whole phantom abdomen, about 70 x 56 x 14 voxels.
EXTENT_MM = (285.0, 230.0, 200.0)


@dataclass(frozen=True)
class NnunetEnv:
    """The three nnU-Net folders under one root.

    Attributes:
        root: the folder holding ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results``.
    """

    root: Path

    @classmethod
    def create(cls, root: str | os.PathLike[str]) -> NnunetEnv:
        """Make the folders (kept if present)."""
        env = cls(Path(root).resolve())
        for folder in (env.raw, env.preprocessed, env.results):
            folder.mkdir(parents=True, exist_ok=True)
        return env

    @property
    def raw(self) -> Path:
        """``nnUNet_raw``."""
        return self.root / "nnUNet_raw"

    @property
    def preprocessed(self) -> Path:
        """``nnUNet_preprocessed``."""
        return self.root / "nnUNet_preprocessed"

    @property
    def results(self) -> Path:
        """``nnUNet_results``."""
        return self.root / "nnUNet_results"

    def variables(self, *, threads: int | None = None) -> dict[str, str]:
        """The process environment for nnU-Net's commands: its folders, no compiling, no worker pools.

        Args:
            threads: torch/OpenMP threads (default: whatever the environment says).
        """
        env = dict(os.environ)
        env.update(
            nnUNet_raw=str(self.raw),
            nnUNet_preprocessed=str(self.preprocessed),
            nnUNet_results=str(self.results),
            nnUNet_compile="false",  # torch.compile on a CPU costs minutes
            nnUNet_def_n_proc="1",  # one export worker at the end of training
        )
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)
        return env


@dataclass
class Reference:
    """A trained reference model, unseen test cases, their truth and nnU-Net's predictions.

    Attributes:
        env: the nnU-Net folders.
        dataset_id: the dataset's number.
        model_folder: ``nnUNet_results/DatasetXXX_Name/<trainer>__nnUNetPlans__<configuration>``.
        inputs: the test images, ``<case>_0000.nii.gz``.
        truth: their phantom label maps, ``<case>.nii.gz``.
        predictions: ``nnUNetv2_predict``'s masks, ``<case>.nii.gz``.
        labels: label name -> number (or region: list of numbers), as in the dataset.json.
        seconds: how long each step took (``plan``, ``train``, ``predict``; 0 where reused).
    """

    env: NnunetEnv
    dataset_id: int
    model_folder: Path
    inputs: Path
    truth: Path
    predictions: Path
    labels: dict[str, int | list[int]]
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def cases(self) -> list[str]:
        """The test case names, sorted."""
        return sorted(p.name.removesuffix(".nii.gz") for p in self.truth.glob("*.nii.gz"))


# -- datasets ---------------------------------------------------------------------------------------


def phantom_grid(
    seed: int,
    *,
    in_plane: tuple[float, float] = IN_PLANE_MM,
    slices: tuple[float, float] = SLICE_MM,
    extent: Sequence[float] = EXTENT_MM,
    turn_degrees: float = 0.0,
) -> Geometry:
    """An axial grid over the phantom abdomen, its spacing drawn from the ranges by ``seed``.

    Args:
        seed: draws the spacing, the field of view (+-5%) and a shift of the centre (+-8 mm).
        in_plane: range of the in-plane spacing (mm).
        slices: range of the slice spacing (mm).
        extent: field of view (mm) before jitter.
        turn_degrees: rotation of the grid about the patient's z axis (an oblique scan).
    """
    rng = np.random.default_rng(seed)
    row = rng.uniform(*in_plane)
    spacing = np.array([row, row * rng.uniform(0.97, 1.03), rng.uniform(*slices)])
    shape = np.maximum(np.rint(np.asarray(extent) * rng.uniform(0.95, 1.05, 3) / spacing).astype(int), 4)
    centre = np.array([0.0, 0.0, 0.0]) + rng.uniform(-8.0, 8.0, 3)
    angle = np.deg2rad(turn_degrees)
    c, s = np.cos(angle), np.sin(angle)
    direction = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    origin = centre - direction @ (spacing * (shape - 1) / 2)
    return Geometry.from_spacing(tuple(int(n) for n in shape), spacing, origin, direction)


def mr_like(image: Volume, seed: int) -> Volume:
    """The phantom as an MR-like float image: no HU scale, a per-scan gain and offset, so z-scoring is needed."""
    rng = np.random.default_rng(seed)
    values = (image.array.astype(np.float32) + 1024.0) * rng.uniform(0.3, 3.0) + rng.uniform(0.0, 200.0)
    return image.with_array(values.astype(np.float32))


def write_raw_dataset(
    root: str | os.PathLike[str],
    dataset_id: int,
    name: str,
    *,
    cases: int = 8,
    seed: int = 0,
    modality: str = "CT",
    regions: bool = False,
    grid: dict | None = None,
) -> Path:
    """Write an nnU-Net v2 raw dataset of phantoms: ``DatasetXXX_Name/{imagesTr,labelsTr,dataset.json}``.

    Every case has its own anatomy, spacing and shape (:func:`phantom_grid`).

    Args:
        root: the ``nnUNet_raw`` folder.
        dataset_id: 1-999.
        name: the dataset's name (``Dataset{id:03d}_{name}``).
        cases: training cases (nnU-Net's 5-fold split needs 5 or more).
        seed: varies every case at once.
        modality: ``"CT"`` (int16 HU; channel "CT", so nnU-Net picks CTNormalization) or ``"MR"``
            (float, arbitrary scale; channel "T1", so ZScoreNormalization).
        regions: label the cases with nnU-Net regions (:data:`REGION_LABELS`) instead of classes.
        grid: keyword arguments for :func:`phantom_grid` (spacing ranges, extent).

    Returns:
        The dataset folder.
    """
    folder = Path(root) / f"Dataset{dataset_id:03d}_{name}"
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for number in range(cases):
        case_seed = int(np.random.default_rng([seed, number]).integers(2**31))
        image, labels = make_phantom(case_seed, geometry=phantom_grid(case_seed, **(grid or {})))
        if modality != "CT":
            image = mr_like(image, case_seed)
        case = f"{name.lower()}_{number:03d}"
        write_nifti(image, folder / "imagesTr" / f"{case}_0000.nii.gz")
        write_nifti(labels, folder / "labelsTr" / f"{case}.nii.gz")
    manifest: dict = {
        "name": name,
        "description": f"CT phantoms (medseg.synthetic), seed {seed}, for reference nnU-Net models",
        "channel_names": {"0": "CT" if modality == "CT" else "T1"},
        "labels": REGION_LABELS if regions else LABELS,
        "numTraining": cases,
        "file_ending": ".nii.gz",
    }
    if regions:
        manifest["regions_class_order"] = [1, 2, 3]
    (folder / "dataset.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return folder


#: The unseen test cases' grids: an ordinary one, a larger and less anisotropic one (finer slices
#: than the model's, so nnU-Net resamples z along the target's low-resolution axis), an oblique one.
TEST_GRIDS: tuple[dict, ...] = (
    {},
    {"in_plane": (3.2, 3.4), "slices": (7.0, 7.5), "extent": (300.0, 250.0, 210.0)},
    {"turn_degrees": 5.0, "slices": (15.5, 16.5)},
)


def write_test_cases(
    inputs: str | os.PathLike[str],
    truth: str | os.PathLike[str],
    *,
    cases: int = 3,
    seed: int = 1000,
    modality: str = "CT",
) -> list[str]:
    """Write unseen phantoms as ``inputs/<case>_0000.nii.gz`` and their labels as ``truth/<case>.nii.gz``.

    Case ``n`` uses ``TEST_GRIDS[n % len(TEST_GRIDS)]``.

    Returns:
        The case names.
    """
    inputs, truth = Path(inputs), Path(truth)
    inputs.mkdir(parents=True, exist_ok=True)
    truth.mkdir(parents=True, exist_ok=True)
    names = []
    for number in range(cases):
        case_seed = int(np.random.default_rng([seed, number]).integers(2**31))
        grid = phantom_grid(case_seed, **TEST_GRIDS[number % len(TEST_GRIDS)])
        image, labels = make_phantom(case_seed, geometry=grid)
        if modality != "CT":
            image = mr_like(image, case_seed)
        name = f"test_{number:03d}"
        write_nifti(image, inputs / f"{name}_0000.nii.gz")
        write_nifti(labels, truth / f"{name}.nii.gz")
        names.append(name)
    return names


# -- nnU-Net's commands -----------------------------------------------------------------------------


def run_nnunet(
    env: NnunetEnv,
    argv: Sequence[str],
    *,
    threads: int | None = None,
    extra: dict[str, str] | None = None,
    log: Path | None = None,
) -> float:
    """Run nnU-Net's console command ``argv[0]`` with ``argv[1:]`` in ``env``; its seconds.

    Args:
        threads: torch/OpenMP threads.
        extra: more environment variables.
        log: a file for the command's output.

    Raises:
        RuntimeError: the command failed; the message ends with its last output lines.
    """
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(RUNNER), *map(str, argv)],
        env={**env.variables(threads=threads), **(extra or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seconds = time.perf_counter() - started
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(result.stdout)
    if result.returncode != 0:
        tail = "\n".join(result.stdout.splitlines()[-30:])
        raise RuntimeError(f"{' '.join(map(str, argv))} failed (exit {result.returncode}):\n{tail}")
    return seconds


def plan_and_preprocess(env: NnunetEnv, dataset_id: int, configurations: Sequence[str] = ("3d_fullres",)) -> Path:
    """``nnUNetv2_plan_and_preprocess -d ID -c ... --verify_dataset_integrity`` with one process.

    Returns:
        The preprocessed dataset's ``nnUNetPlans.json``.
    """
    run_nnunet(
        env,
        ["nnUNetv2_plan_and_preprocess", "-d", dataset_id, "-c", *configurations, "--verify_dataset_integrity"]
        + ["-np", *(["1"] * len(configurations)), "-npfp", "1"],
    )
    return _dataset_folder(env.preprocessed, dataset_id) / "nnUNetPlans.json"


def set_network_width(env: NnunetEnv, dataset_id: int, *, base: int = 8, cap: int = 64) -> Path:
    """Narrow every configuration's U-Net in the preprocessed ``nnUNetPlans.json``: ``base * 2**stage`` up to ``cap``.

    nnU-Net's plans are meant to be edited (its ``explanation_plans_files.md``); its default width
    (32 features doubling to 320) costs about 5 s per training iteration on two CPU cores, the narrow
    one a tenth of that. The trained model folder keeps the edited plans, as a user's would.

    Returns:
        The plans file.
    """
    path = _dataset_folder(env.preprocessed, dataset_id) / "nnUNetPlans.json"
    plans = json.loads(path.read_text())
    for configuration in plans["configurations"].values():
        kwargs = configuration.get("architecture", {}).get("arch_kwargs", {})
        if "features_per_stage" in kwargs:
            kwargs["features_per_stage"] = [min(base * 2**i, cap) for i in range(len(kwargs["features_per_stage"]))]
    path.write_text(json.dumps(plans, indent=4) + "\n")
    return path


def train(
    env: NnunetEnv,
    dataset_id: int,
    configuration: str,
    fold: int = 0,
    trainer: str = TINY_TRAINER,
    *,
    epochs: int | None = None,
    iterations: int | None = None,
    threads: int | None = None,
    log: Path | None = None,
) -> Path:
    """``nnUNetv2_train ID CONFIGURATION FOLD -tr TRAINER -device cpu`` (final validation included).

    Args:
        epochs, iterations: the tiny trainers' epochs and iterations per epoch (default: theirs).
        threads: torch threads for training.
        log: a file for nnU-Net's output.

    Returns:
        The trained-model folder (``<trainer>__nnUNetPlans__<configuration>``).
    """
    extra = {"nnUNet_n_proc_DA": "0"}  # augmentation in the training process (planning needs it >= 1)
    if epochs is not None:
        extra["MEDSEG_NNUNET_EPOCHS"] = str(epochs)
    if iterations is not None:
        extra["MEDSEG_NNUNET_ITERATIONS"] = str(iterations)
    argv = ["nnUNetv2_train", dataset_id, configuration, fold, "-tr", trainer, "-device", "cpu"]
    run_nnunet(env, argv, threads=threads, extra=extra, log=log)
    return _dataset_folder(env.results, dataset_id) / f"{trainer}__nnUNetPlans__{configuration}"


def predict_command(
    model_folder: str | os.PathLike[str],
    input_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    folds: Sequence[int | str] = (0,),
    checkpoint: str = "checkpoint_final.pth",
    step_size: float = 0.5,
    use_mirroring: bool = True,
    processes: int | None = 1,
) -> list[str]:
    """The ``nnUNetv2_predict`` command line for a trained-model folder (``-d``, ``-c``, ``-tr``, ``-p`` from its path).

    ``nnUNet_results`` must be the folder two levels above ``model_folder``.

    Args:
        processes: ``-npp`` and ``-nps`` (preprocessing and export workers); None: nnU-Net's default (3).
    """
    model_folder = Path(model_folder)
    trainer, plans, configuration = model_folder.name.split("__")
    argv = ["nnUNetv2_predict", "-i", str(input_dir), "-o", str(output_dir), "-d", model_folder.parent.name]
    argv += ["-c", configuration, "-tr", trainer, "-p", plans, "-f", *map(str, folds), "-chk", checkpoint]
    argv += ["-step_size", str(step_size), "-device", "cpu", "--disable_progress_bar"]
    if not use_mirroring:
        argv.append("--disable_tta")
    if processes is not None:
        argv += ["-npp", str(processes), "-nps", str(processes)]
    return argv


def predict_reference(
    env: NnunetEnv,
    model_folder: str | os.PathLike[str],
    input_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    folds: Sequence[int | str] = (0,),
    checkpoint: str = "checkpoint_final.pth",
    step_size: float = 0.5,
    use_mirroring: bool = True,
    *,
    processes: int | None = 1,
    threads: int | None = None,
) -> Path:
    """nnU-Net's own prediction of every ``<case>_0000.nii.gz`` in ``input_dir``: ``nnUNetv2_predict ... -device cpu``.

    ``use_mirroring`` mirrors along the axes the model allows (off: ``--disable_tta``).

    Returns:
        ``output_dir``, holding ``<case>.nii.gz`` label maps (and nnU-Net's json files).
    """
    model_folder = Path(model_folder).resolve()
    if model_folder.parent.parent != env.results:
        raise ValueError(f"{model_folder} is not a trained-model folder of {env.results}")
    argv = predict_command(
        model_folder,
        input_dir,
        output_dir,
        folds=folds,
        checkpoint=checkpoint,
        step_size=step_size,
        use_mirroring=use_mirroring,
        processes=processes,
    )
    run_nnunet(env, argv, threads=threads)
    return Path(output_dir)


# -- all at once ------------------------------------------------------------------------------------


def build_reference(
    root: str | os.PathLike[str],
    *,
    dataset_id: int = 501,
    name: str = "MedsegPhantom",
    configuration: str = "3d_fullres",
    configurations: Sequence[str] = ("3d_fullres",),
    trainer: str = TINY_TRAINER,
    cases: int = 8,
    test_cases: int = 3,
    modality: str = "CT",
    regions: bool = False,
    epochs: int | None = None,
    iterations: int | None = None,
    grid: dict | None = None,
    width: tuple[int, int] = (8, 64),
) -> Reference:
    """Dataset, plan, training and nnU-Net's predictions of test cases under ``root``, reusing steps already done.

    A step counts as done when its result is there (plans, ``fold_0/checkpoint_final.pth``, one
    prediction per test case), so a cached ``root`` costs nothing; delete it to start again. The
    plans' U-Nets are narrowed to ``width`` (first stage's features, cap) by :func:`set_network_width`.
    """
    env = NnunetEnv.create(Path(root) / "nnunet")
    seconds = {"plan": 0.0, "train": 0.0, "predict": 0.0}
    raw = _maybe_dataset_folder(env.raw, dataset_id)
    if raw is None or not (raw / "dataset.json").is_file():
        if raw is not None:
            shutil.rmtree(raw)
        raw = write_raw_dataset(
            env.raw, dataset_id, name, cases=cases, modality=modality, regions=regions, grid=grid
        )
    plans = env.preprocessed / raw.name / "nnUNetPlans.json"
    if not plans.is_file() or not all(
        (env.preprocessed / raw.name / f"nnUNetPlans_{c}").is_dir() for c in configurations
    ):
        started = time.perf_counter()
        plan_and_preprocess(env, dataset_id, configurations)
        seconds["plan"] = time.perf_counter() - started
    model = env.results / raw.name / f"{trainer}__nnUNetPlans__{configuration}"
    if not (model / "fold_0" / "checkpoint_final.pth").is_file():
        set_network_width(env, dataset_id, base=width[0], cap=width[1])
        started = time.perf_counter()
        model = train(env, dataset_id, configuration, 0, trainer, epochs=epochs, iterations=iterations)
        seconds["train"] = time.perf_counter() - started
    work = Path(root) / f"{raw.name}__{trainer}__{configuration}"
    inputs, truth, predictions = work / "imagesTs", work / "labelsTs", work / "predictions"
    if len(list(truth.glob("*.nii.gz"))) != test_cases:
        shutil.rmtree(inputs, ignore_errors=True)
        shutil.rmtree(truth, ignore_errors=True)
        write_test_cases(inputs, truth, cases=test_cases, modality=modality)
    if len(list(predictions.glob("*.nii.gz"))) != test_cases:
        shutil.rmtree(predictions, ignore_errors=True)
        started = time.perf_counter()
        predict_reference(env, model, inputs, predictions)
        seconds["predict"] = time.perf_counter() - started
    labels = json.loads((raw / "dataset.json").read_text())["labels"]
    return Reference(env, dataset_id, model, inputs, truth, predictions, labels, seconds)


# -- scoring ----------------------------------------------------------------------------------------


def dice_per_label(prediction: np.ndarray, truth: np.ndarray, labels: Sequence[int]) -> dict[int, float]:
    """Dice of each label (1.0 where both are empty)."""
    scores = {}
    for label in labels:
        p, t = prediction == label, truth == label
        total = int(p.sum()) + int(t.sum())
        scores[label] = 1.0 if total == 0 else 2.0 * int((p & t).sum()) / total
    return scores


def reference_dice(reference: Reference) -> dict[str, dict[int, float]]:
    """Dice per test case and label of nnU-Net's predictions against the phantoms' truth."""
    labels = [1, 2, 3]  # the phantoms' organs (a region model's output is rebuilt into them)
    scores = {}
    for case in reference.cases:
        predicted = read_nifti(reference.predictions / f"{case}.nii.gz", kind=VolumeKind.LABEL)
        truth = read_nifti(reference.truth / f"{case}.nii.gz", kind=VolumeKind.LABEL)
        scores[case] = dice_per_label(predicted.array[0], truth.array[0], labels)
    return scores


def _maybe_dataset_folder(parent: Path, dataset_id: int) -> Path | None:
    found = sorted(parent.glob(f"Dataset{dataset_id:03d}_*"))
    return found[0] if found else None


def _dataset_folder(parent: Path, dataset_id: int) -> Path:
    found = _maybe_dataset_folder(parent, dataset_id)
    if found is None:
        raise FileNotFoundError(f"no Dataset{dataset_id:03d}_* in {parent}")
    return found


if __name__ == "__main__":  # build one, print timings and Dice: python -m tests.nnunet_reference ROOT
    built = build_reference(sys.argv[1] if len(sys.argv) > 1 else "/tmp/medseg-nnunet-reference")
    print(built.model_folder, {k: round(v, 1) for k, v in built.seconds.items()})
    for case, scores in reference_dice(built).items():
        print(case, {k: round(v, 3) for k, v in scores.items()})
