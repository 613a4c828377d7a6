"""``medseg.workflows.demo`` and the bundled model: the sample CT, end to end, scored; the model ships as package data."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from medseg.errors import InputError
from medseg.io import read_image, read_nifti
from medseg.io.dicom import read_series, scan
from medseg.models.bundled import BUNDLED_FILES, bundled_model_path
from medseg.workflows.demo import MIN_DICE, SAMPLE_NAME, run_demo

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_data" / "ct_phantom"
DCIODVFY = shutil.which("dciodvfy")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return run_demo(tmp_path_factory.mktemp("demo") / "out", device="cpu")


def test_every_label_reaches_the_promised_dice(demo):
    assert set(demo.dice) == {"liver", "spleen", "kidney"}
    assert all(value > MIN_DICE for value in demo.dice.values()), demo.dice
    assert demo.passed and demo.device == "cpu"
    assert demo.seconds["total"] < 60, demo.seconds


def test_outputs_are_written_on_the_scans_grid(demo):
    for kind in ("nifti", "seg", "stats_json", "stats_csv", "preview", "manifest", "evaluation", "summary"):
        assert demo.outputs[kind].is_file(), kind
    assert demo.outputs["seg"] == demo.output / "masks" / SAMPLE_NAME / f"{SAMPLE_NAME}.seg.dcm"
    mask = read_nifti(demo.outputs["nifti"])
    image = read_nifti(SAMPLE / "image.nii.gz")
    assert mask.spatial_shape == image.spatial_shape and mask.geometry.is_close(image.geometry)
    stats = json.loads(demo.outputs["stats_json"].read_text())["labels"]
    assert {row["name"] for row in stats} >= {"liver", "spleen", "kidney"}
    assert "voxel-identical" in demo.seg_check


def test_summary_json_holds_what_the_console_shows(demo):
    summary = json.loads((demo.output / "summary.json").read_text())
    assert summary["passed"] is True and summary["min_dice"] == MIN_DICE
    assert summary["dice"] == {name: round(value, 4) for name, value in demo.dice.items()}
    assert summary["model"]["sha256"] == json.loads((bundled_model_path() / "model.json").read_text())["model_sha256"]
    assert Path(summary["outputs"]["seg"]).is_file() and summary["seconds"]["total"] > 0


def test_the_regenerated_scan_is_the_repositorys_sample(demo):
    (series,) = scan(demo.scan.dicom).volumes()
    image = read_series(series)
    reference = read_image(SAMPLE / "image.nii.gz")
    np.testing.assert_array_equal(image.array, reference.array)
    assert image.geometry.is_close(reference.geometry)
    labels = read_image(demo.scan.labels, kind="label")
    np.testing.assert_array_equal(labels.array, read_image(SAMPLE / "labels.nii.gz", kind="label").array)


@pytest.mark.integration
@pytest.mark.skipif(DCIODVFY is None, reason="dicom3tools' dciodvfy is not installed")
def test_the_seg_passes_dciodvfy(demo):
    result = subprocess.run([DCIODVFY, str(demo.outputs["seg"])], capture_output=True, text=True, timeout=60)
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
    assert errors == []


def test_a_folder_of_other_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a demo folder"):
        run_demo(tmp_path, device="cpu")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_the_bundled_model_loads_and_knows_the_phantom_labels():
    from medseg.models.folder import load_model

    folder = bundled_model_path()
    network, pipeline, facts = load_model(folder, device="cpu")
    assert {n: label.name for n, label in pipeline.labels.items()} == {1: "liver", 2: "spleen", 3: "kidney"}
    assert facts["trained_by"] == "scripts/train_bundled_model.py"
    assert sum(p.numel() for p in network.parameters()) > 0
    assert sum((folder / name).stat().st_size for name in BUNDLED_FILES) < 6e6  # float16 weights: 5.5 MB


@pytest.mark.slow
def test_a_built_wheel_ships_the_bundled_model(tmp_path):
    """``pip install .`` (not editable) must carry the model: build the wheel and look inside."""
    source = tmp_path / "source"  # a copy: building in the checkout would leave build/ there
    shutil.copytree(REPO / "medseg", source / "medseg", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = tmp_path.glob("medseg-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in BUNDLED_FILES:
        assert f"medseg/models/bundled/phantom/{name}" in names
    assert "medseg/models/bundled/__init__.py" in names
