"""MONAI bundles: medseg runs a Model Zoo bundle's own transforms and inferer, and agrees with ``monai.bundle run``.

The bundle is laid out as the Model Zoo's CT bundles are (spleen_ct_segmentation: configs/metadata.json,
configs/inference.json, models/model.pt, docs/README.md, LICENSE), with a tiny 3D U-Net trained here for
150 steps on phantoms, so that its masks mean something.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.errors import InputError, ModelError
from medseg.geometry import Geometry
from medseg.inference.bundle import BundleSegmenter
from medseg.inference.engine import InferenceSettings
from medseg.io import read_image, write_nifti
from medseg.model_formats import describe_model, load_segmenter
from medseg.synthetic import PhantomSpec, make_phantom
from medseg.volume import Volume, VolumeKind
from tests import factories

log = logging.getLogger(__name__)

SPLEEN = 2  # the phantoms' spleen label
SPACING = 5.0  # mm, what the bundle's Spacingd resamples to
ROI = 32
METADATA = {  # as spleen_ct_segmentation's, trimmed
    "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
    "meta_schema_20220324.json",
    "version": "0.1.0",
    "changelog": {"0.1.0": "a tiny spleen model trained on medseg phantoms, for tests"},
    "monai_version": "1.6.1",
    "pytorch_version": "2.13.0",
    "numpy_version": "1.26.4",
    "optional_packages_version": {"nibabel": "5.2.1", "pytorch-ignite": "0.5.5"},
    "name": "Phantom spleen CT segmentation",
    "task": "Phantom spleen segmentation",
    "description": "A tiny model for volumetric (3D) segmentation of the spleen from phantom CT",
    "authors": "medseg tests",
    "copyright": "Copyright (c) medseg developers",
    "data_type": "nibabel",
    "image_classes": "single channel data, intensity scaled to [0, 1]",
    "label_classes": "single channel data, 1 is spleen, 0 is everything else",
    "pred_classes": "2 channels OneHot data, channel 1 is spleen, channel 0 is background",
    "intended_use": "Tests only, not for diagnostic purposes",
    "network_data_format": {
        "inputs": {
            "image": {
                "type": "image",
                "format": "hounsfield",
                "modality": "CT",
                "num_channels": 1,
                "spatial_shape": [ROI, ROI, ROI],
                "dtype": "float32",
                "value_range": [0, 1],
                "is_patch_data": True,
                "channel_def": {"0": "image"},
            }
        },
        "outputs": {
            "pred": {
                "type": "image",
                "format": "segmentation",
                "num_channels": 2,
                "spatial_shape": [ROI, ROI, ROI],
                "dtype": "float32",
                "value_range": [0, 1],
                "is_patch_data": True,
                "channel_def": {"0": "background", "1": "spleen"},
            }
        },
    },
}
PREPROCESSING = [
    {"_target_": "LoadImaged", "keys": "@image_key"},
    {"_target_": "EnsureChannelFirstd", "keys": "@image_key"},
    {"_target_": "Orientationd", "keys": "@image_key", "axcodes": "RAS"},
    {"_target_": "Spacingd", "keys": "@image_key", "pixdim": [SPACING] * 3, "mode": "bilinear"},
    {"_target_": "ScaleIntensityRanged", "keys": "@image_key", "a_min": -57, "a_max": 164, "b_min": 0, "b_max": 1,
     "clip": True},
    {"_target_": "EnsureTyped", "keys": "@image_key"},
]
INFERENCE = {  # as spleen_ct_segmentation's configs/inference.json, with a tiny network and window
    "imports": ["$import glob", "$import numpy", "$import os"],
    "bundle_root": ".",
    "image_key": "image",
    "output_dir": "$@bundle_root + '/eval'",
    "output_ext": ".nii.gz",
    "output_dtype": "$numpy.float32",
    "output_postfix": "trans",
    "separate_folder": True,
    "load_pretrain": True,
    "dataset_dir": "/workspace/data/Task09_Spleen",
    "datalist": "$list(sorted(glob.glob(@dataset_dir + '/imagesTs/*.nii.gz')))",
    "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
    "network_def": {
        "_target_": "UNet",
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 2,
        "channels": [4, 8, 16],
        "strides": [2, 2],
        "num_res_units": 1,
        "norm": "batch",
    },
    "network": "$@network_def.to(@device)",
    "preprocessing": {"_target_": "Compose", "transforms": PREPROCESSING},
    "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
    "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                   "num_workers": 4},
    "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [ROI, ROI, ROI], "sw_batch_size": 4, "overlap": 0.5},
    "postprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "@image_key",
             "nearest_interp": False, "to_tensor": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_ext": "@output_ext",
             "output_dtype": "@output_dtype", "output_postfix": "@output_postfix",
             "separate_folder": "@separate_folder"},
        ],
    },
    "handlers": [{"_target_": "StatsHandler", "iteration_log": False}],
    "evaluator": {
        "_target_": "SupervisedEvaluator",
        "device": "@device",
        "val_data_loader": "@dataloader",
        "network": "@network",
        "inferer": "@inferer",
        "postprocessing": "@postprocessing",
        "val_handlers": "@handlers",
        "amp": True,
    },
    "checkpointloader": {
        "_target_": "CheckpointLoader",
        "load_path": "$@bundle_root + '/models/model.pt'",
        "load_dict": {"model": "@network"},
    },
    "initialize": [
        "$monai.utils.set_determinism(seed=123)",
        "$@checkpointloader(@evaluator) if @load_pretrain else None",
    ],
    "run": ["$@evaluator.run()"],
}
SETTINGS = InferenceSettings()
#: Measured on the CPU: Dice 0.85-0.89 on the three phantoms below (a blank map gives 0, a random one ~0.01).
MIN_DICE = 0.7


def phantom(
    seed: int, shape: tuple[int, int, int], spacing: tuple[float, float, float], direction: np.ndarray | None = None
) -> tuple[Volume, Volume]:
    """A phantom (image, labels) on a grid centred on the body, covering it."""
    extent = np.asarray(spacing) * (np.asarray(shape) - 1)
    direction = np.eye(3) if direction is None else direction
    origin = np.array([0.0, 0.0, 5.0]) - direction @ (extent / 2)
    geometry = Geometry.from_spacing(shape, spacing, origin, direction, frame_of_reference_uid="1.2.3.4.8")
    image, labels = make_phantom(seed, PhantomSpec(), geometry)
    spleen = labels.with_array((labels.array == SPLEEN).astype(np.uint8))
    return image, spleen


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def train(network: torch.nn.Module, folder: Path, steps: int = 150) -> None:
    """A plain MONAI training loop (DiceCE) on a few phantoms, through the bundle's own preprocessing."""
    from monai.losses import DiceCELoss
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        LoadImaged,
        Orientationd,
        RandCropByPosNegLabeld,
        ScaleIntensityRanged,
        Spacingd,
    )

    cases = []
    for seed in range(4):
        image, labels = phantom(100 + seed, (52, 44, 34), (6.0, 5.5, 5.5))
        cases.append({"image": str(write_nifti(image, folder / f"train_{seed}.nii.gz")),
                      "label": str(write_nifti(labels, folder / f"train_{seed}_label.nii.gz"))})
    keys = ["image", "label"]
    prepare = Compose([
        LoadImaged(keys), EnsureChannelFirstd(keys), Orientationd(keys, axcodes="RAS"),
        Spacingd(keys, pixdim=[SPACING] * 3, mode=("bilinear", "nearest")),
        ScaleIntensityRanged("image", a_min=-57, a_max=164, b_min=0, b_max=1, clip=True),
    ])
    data = [prepare(case) for case in cases]
    crop = RandCropByPosNegLabeld(keys, "label", spatial_size=[ROI] * 3, pos=1, neg=1, num_samples=2)
    crop.set_random_state(0)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(network.parameters(), lr=5e-3)
    network.train()
    for step in range(steps):
        patches = crop(data[step % len(data)])
        image = torch.stack([p["image"] for p in patches]).float()
        label = torch.stack([p["label"] for p in patches]).float()
        optimizer.zero_grad()
        loss = loss_fn(network(image), label)
        loss.backward()
        optimizer.step()
    log.info("trained the bundle's network: last loss %.3f", float(loss))


def write_bundle(root: Path, config: dict, state: dict) -> Path:
    """A bundle folder laid out as the Model Zoo's."""
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    (root / "docs").mkdir()
    (root / "configs" / "metadata.json").write_text(json.dumps(METADATA, indent=4))
    (root / "configs" / "inference.json").write_text(json.dumps(config, indent=4))
    (root / "docs" / "README.md").write_text("# Phantom spleen CT segmentation\n\nA tiny model for medseg's tests.\n")
    (root / "LICENSE").write_text("Apache License, Version 2.0\n")
    torch.save(state, root / "models" / "model.pt")
    return root


@pytest.fixture(scope="session")
def bundle(tmp_path_factory) -> Path:
    """The trained bundle folder, built once per session."""
    from monai.bundle import ConfigParser
    from monai.utils import set_determinism

    torch.set_num_threads(1)
    set_determinism(seed=0)
    network = ConfigParser(copy.deepcopy(INFERENCE)).get_parsed_content("network_def")
    set_determinism(None)
    root = tmp_path_factory.mktemp("bundle")
    train(network, root)
    return write_bundle(root / "phantom_spleen_ct_segmentation", INFERENCE, network.state_dict())


@pytest.fixture(scope="session")
def cases(tmp_path_factory) -> dict[str, tuple[Path, Volume]]:
    """Three NIfTI phantoms as a user holds them: uneven shapes and spacings, one feet-first, one oblique."""
    folder = tmp_path_factory.mktemp("dataset") / "imagesTs"
    grids = {
        "axial": ((50, 46, 30), (6.2, 5.1, 6.5), None),
        "feet_first": ((44, 40, 36), (6.8, 6.0, 5.0), np.diag([-1.0, 1.0, -1.0])),
        "oblique": ((46, 42, 28), (6.5, 5.8, 6.8), factories.rotation("z", 8) @ factories.rotation("x", -6)),
    }
    found = {}
    for seed, (name, (shape, spacing, direction)) in enumerate(grids.items()):
        image, labels = phantom(10 + seed, shape, spacing, direction)
        found[name] = (write_nifti(image, folder / f"{name}.nii.gz"), labels)
    return found


@pytest.fixture(scope="session")
def segmenter(bundle) -> BundleSegmenter:
    return BundleSegmenter(describe_model(bundle), device="cpu", settings=SETTINGS)


def monai_bundle_run(bundle: Path, dataset: Path, output: Path) -> None:
    """``python -m monai.bundle run`` as a user runs it (on the CPU, in one process)."""
    missing = [m for m in ("fire", "ignite") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"`python -m monai.bundle run` needs {' and '.join(missing)} (pip install fire pytorch-ignite)")
    command = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", str(bundle / "configs" / "inference.json"),
        "--bundle_root", str(bundle),
        "--dataset_dir", str(dataset),
        "--output_dir", str(output),
        "--device", "$torch.device('cpu')",
        "--dataloader#num_workers", "0",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]


# -- agreement with monai.bundle run ------------------------------------------------------------------


def test_agrees_with_monai_bundle_run_voxel_for_voxel(bundle, cases, segmenter, tmp_path, record_property):
    dataset = next(iter(cases.values()))[0].parent.parent
    started = time.monotonic()
    monai_bundle_run(bundle, dataset, tmp_path)
    log.info("monai.bundle run: %.1f s for %d cases", time.monotonic() - started, len(cases))
    for name, (path, truth) in cases.items():
        theirs = read_image(tmp_path / name / f"{name}_trans.nii.gz", kind=VolumeKind.LABEL)
        image = read_image(path)
        ours = segmenter.segment(image)
        theirs.geometry.require_same_grid(image.geometry, tolerance_mm=1e-3, what=f"{name}: monai.bundle run's output")
        assert ours.geometry == image.geometry
        agreement = float((ours.array == theirs.array).mean())
        score = dice(ours.array, truth.array)
        record_property(f"agreement_{name}", agreement)
        record_property(f"dice_{name}", score)
        print(f"{name}: {agreement:.6%} of voxels agree with monai.bundle run; Dice vs truth {score:.3f}")
        assert agreement >= 0.999, f"{name}: {agreement:.6%}"
        assert score >= MIN_DICE, f"{name}: Dice {score:.3f}"


def test_labels_segments_and_confidence(bundle, segmenter, cases):
    path, truth = cases["oblique"]
    labels, confidence = segmenter.segment_with_confidence(read_image(path))
    assert not (bundle / "eval").exists()  # SaveImaged's output_dir: the writer was left out
    assert [(s.number, s.name) for s in labels.segments] == [(1, "spleen")]
    assert labels.segments[0].type is not None  # spleen has a SNOMED code medseg knows
    assert set(np.unique(labels.array)) == {0, 1}
    assert confidence.dtype == np.uint8 and confidence.shape == labels.spatial_shape
    inside, border = confidence[labels.array[0] == 1], confidence[(labels.array[0] == 0) & (truth.array[0] == 1)]
    assert inside.min() >= 127  # the winner of two classes holds at least half
    assert inside.mean() > border.mean() if border.size else inside.mean() > 200
    assert segmenter.batch_size == 4 and segmenter.overlap == 0.5 and segmenter.mirror_axes == ()


def test_overlap_and_batch_come_from_the_settings(bundle):
    info = describe_model(bundle)
    segmenter = BundleSegmenter(info, device="cpu", settings=InferenceSettings(overlap=0.25, batch_size=2))
    assert (segmenter.inferer.overlap, segmenter.inferer.sw_batch_size) == (0.25, 2)
    assert segmenter.effective_settings.overlap == 0.25 and segmenter.effective_settings.batch_size == 2
    assert "SaveImaged" in segmenter.metadata["dropped"]


def test_zip_bundle_gives_the_same_labels(bundle, cases, segmenter, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    archive = tmp_path / "phantom_spleen_ct_segmentation_v0.1.0.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for file in sorted(bundle.rglob("*")):
            handle.write(file, Path(bundle.name) / file.relative_to(bundle))
    before = archive.stat().st_mtime_ns
    zipped = load_segmenter(archive, device="cpu")
    assert isinstance(zipped, BundleSegmenter)
    assert zipped.root.is_relative_to(tmp_path / "cache" / "medseg" / "bundles")
    image = read_image(cases["axial"][0])
    np.testing.assert_array_equal(zipped.segment(image).array, segmenter.segment(image).array)
    assert archive.stat().st_mtime_ns == before
    again = load_segmenter(archive, device="cpu")  # extracted once
    assert again.root == zipped.root
    assert zipped.model_identity["sha256"] != segmenter.model_identity["sha256"]


# -- through the workflow and the CLI -----------------------------------------------------------------


@pytest.fixture()
def dicom_series(tmp_path) -> tuple[Path, Volume]:
    image, labels = phantom(21, (48, 44, 30), (6.0, 5.6, 6.4), factories.rotation("z", -5))
    folder = tmp_path / "dicom" / "ct"
    factories.write_series(image, folder)
    return folder, labels


def test_predict_writes_seg_on_the_series_grid(bundle, dicom_series, tmp_path):
    from medseg.io.seg import read_seg
    from medseg.workflows.predict import PredictOptions, predict

    folder, truth = dicom_series
    report = predict([folder], tmp_path / "out", model=bundle,
                     options=PredictOptions(formats=("nifti", "seg"), device="cpu"))
    [result] = report.results
    assert result.status == "done", result.message
    seg_path = next(Path(p) for p in result.outputs if p.endswith(".seg.dcm"))
    nifti = read_image(next(p for p in result.outputs if p.endswith(".nii.gz")), kind=VolumeKind.LABEL)
    series = read_image(folder)
    seg = read_seg(seg_path, reference=series.geometry)
    assert [s.name for s in seg.segments] == ["spleen"]
    np.testing.assert_array_equal(seg.array, nifti.array)
    nifti.geometry.require_same_grid(series.geometry, tolerance_mm=1e-3)
    assert dice(seg.array, truth.array) >= MIN_DICE
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert "monai-bundle" in json.dumps(run)


def test_cli_predict_with_a_bundle(bundle, dicom_series, tmp_path):
    from medseg.cli import main

    folder, _ = dicom_series
    out = tmp_path / "cli"
    assert main(["predict", str(folder), "--model", str(bundle), "-o", str(out), "--format", "nifti,seg"]) == 0
    assert len(list(out.rglob("*.seg.dcm"))) == 1


# -- bad bundles --------------------------------------------------------------------------------------


def bad_bundle(bundle: Path, tmp_path: Path, *, config: dict | None = None, state: dict | None = None) -> Path:
    return write_bundle(tmp_path / "bad_bundle", config or INFERENCE, state if state is not None else torch.load(
        bundle / "models" / "model.pt", weights_only=True))


def test_missing_package_is_named(bundle, tmp_path):
    config = copy.deepcopy(INFERENCE)
    config["network_def"]["_target_"] = "nonexistent_pkg.nets.Net"
    with pytest.raises(ModelError) as caught:
        BundleSegmenter(describe_model(bad_bundle(bundle, tmp_path, config=config)), device="cpu")
    message = str(caught.value)
    assert "'nonexistent_pkg', which is not installed (pip install nonexistent_pkg)" in message
    assert "\n" not in message


def test_missing_package_in_an_expression_is_named(bundle, tmp_path):
    config = copy.deepcopy(INFERENCE)
    config["imports"].append("$import absent_transforms_pkg")
    config["preprocessing"]["transforms"].append("$absent_transforms_pkg.Clamp(keys='image')")
    with pytest.raises(ModelError, match=r"needs the package 'absent_transforms_pkg', which is not installed"):
        BundleSegmenter(describe_model(bad_bundle(bundle, tmp_path, config=config)), device="cpu")


def test_weights_that_do_not_fit_name_the_file(bundle, tmp_path):
    folder = bad_bundle(bundle, tmp_path, state=torch.nn.Conv3d(1, 4, 3).state_dict())
    with pytest.raises(ModelError, match=r"model\.pt: the weights do not fit the bundle's network") as caught:
        BundleSegmenter(describe_model(folder), device="cpu")
    assert "\n" not in str(caught.value)


def test_weights_under_a_model_key_load(bundle, cases, segmenter, tmp_path):
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    folder = bad_bundle(bundle, tmp_path, state={"model": state, "epoch": torch.tensor(3)})
    image = read_image(cases["axial"][0])
    wrapped = BundleSegmenter(describe_model(folder), device="cpu")
    np.testing.assert_array_equal(wrapped.segment(image).array, segmenter.segment(image).array)


def test_torchscript_weights_give_the_same_labels(bundle, cases, segmenter, tmp_path):
    folder = bad_bundle(bundle, tmp_path)
    scripted = torch.jit.script(segmenter.network.cpu().eval())
    torch.jit.save(scripted, str(folder / "models" / "model.ts"))
    (folder / "models" / "model.pt").unlink()
    image = read_image(cases["feet_first"][0])
    from_ts = BundleSegmenter(describe_model(folder), device="cpu")
    assert isinstance(from_ts.network, torch.jit.ScriptModule)
    np.testing.assert_array_equal(from_ts.segment(image).array, segmenter.segment(image).array)


def test_missing_config_is_named(bundle, tmp_path):
    folder = bad_bundle(bundle, tmp_path)
    (folder / "configs" / "inference.json").unlink()
    with pytest.raises(ModelError, match=r"no configs/inference\.json or configs/inference\.yaml"):
        BundleSegmenter(describe_model(folder), device="cpu")


def test_wrong_channel_count_is_refused(segmenter, cases):
    image = read_image(cases["axial"][0])
    two = image.with_array(np.concatenate([image.array, image.array]))
    with pytest.raises(InputError, match=r"2 channel\(s\)"):
        segmenter.segment(two)
