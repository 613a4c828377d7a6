"""The phantom training set: deterministic, varied grids, and clean under check_dataset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medseg.datasets import check_dataset, load_case, open_dataset
from medseg.errors import InputError
from medseg.synthetic import phantom_case_grid, write_phantom_dataset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phantoms") / "Dataset001_Phantom"
    return write_phantom_dataset(folder, num_training=24, num_test=6, seed=0)


def test_24_cases_open_and_check_clean(phantoms):
    dataset = open_dataset(phantoms)
    assert (dataset.layout, dataset.name, dataset.modality) == ("nnunet", "Phantom", "CT")
    assert dataset.labels == {1: "liver", 2: "spleen", 3: "kidney"}
    assert [c.case_id for c in dataset.cases] == [f"phantom_{n:03d}" for n in range(1, 25)]
    assert [c.case_id for c in dataset.test_cases] == [f"phantom_{n:03d}" for n in range(25, 31)]
    assert all(c.label == phantoms / "labelsTs" / f"{c.case_id}.nii.gz" for c in dataset.test_cases)
    assert check_dataset(dataset) == []
    assert json.loads((phantoms / "dataset.json").read_text())["numTraining"] == 24


def test_grids_vary_like_real_scans_and_every_organ_is_in_view(phantoms):
    dataset = open_dataset(phantoms)
    grids = []
    for case in dataset.all_cases:
        image, label = load_case(dataset, case)
        assert set(np.unique(label.array).tolist()) == {0, 1, 2, 3}, case.case_id
        grids.append(image.geometry)
    shapes = {g.shape for g in grids}
    assert len(shapes) > 20
    low, high = np.min(list(shapes), axis=0), np.max(list(shapes), axis=0)
    assert np.all(low >= (73, 56, 35)) and np.all(high <= (115, 97, 52)) and np.all(high - low >= 8)
    spacings = np.array([g.spacing for g in grids])
    assert spacings[:, :2].min() >= 2.8 and spacings[:, :2].max() <= 3.8 * 1.05 + 1e-6
    assert spacings[:, 2].min() >= 3.5 and spacings[:, 2].max() <= 4.5
    assert np.ptp(spacings, axis=0).min() > 0.3  # spacing really varies along every axis
    rotated = [g for g in grids if not np.allclose(g.direction, np.eye(3))]
    assert 3 <= len(rotated) <= 20
    for g in rotated:
        angle = np.degrees(np.arccos(np.clip(g.direction[0, 0], -1, 1)))
        assert 2.0 <= angle <= 6.0 and g.direction[2, 2] == pytest.approx(1.0)


def test_deterministic_per_seed(phantoms, tmp_path):
    again = write_phantom_dataset(tmp_path / "again", num_training=2, seed=0)
    other = write_phantom_dataset(tmp_path / "other", num_training=2, seed=1)
    first = open_dataset(phantoms)
    for case_id in ("phantom_001", "phantom_002"):
        image, label = load_case(first, first.case(case_id))
        same, same_label = load_case(open_dataset(again), open_dataset(again).case(case_id))
        np.testing.assert_array_equal(image.array, same.array)
        np.testing.assert_array_equal(label.array, same_label.array)
        assert image.geometry == same.geometry
        different, _ = load_case(open_dataset(other), open_dataset(other).case(case_id))
        assert different.geometry != image.geometry
    assert phantom_case_grid(5) == phantom_case_grid(5) and phantom_case_grid(5) != phantom_case_grid(6)


def test_msd_layout(tmp_path):
    folder = write_phantom_dataset(tmp_path / "Task01_Phantom", num_training=3, num_test=1, layout="msd", seed=2)
    dataset = open_dataset(folder)
    assert dataset.layout == "msd" and dataset.channels == ("CT",)
    assert [c.case_id for c in dataset.cases] == ["phantom_001", "phantom_002", "phantom_003"]
    assert dataset.cases[0].images == (folder / "imagesTr" / "phantom_001.nii.gz",)
    assert [(c.case_id, c.label) for c in dataset.test_cases] == [
        ("phantom_004", folder / "labelsTs" / "phantom_004.nii.gz")
    ]
    assert check_dataset(dataset) == []


def test_refuses_a_folder_with_files_and_bad_arguments(tmp_path):
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        write_phantom_dataset(tmp_path, num_training=1)
    with pytest.raises(InputError, match="layout must be one of"):
        write_phantom_dataset(tmp_path / "new", num_training=1, layout="monai")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="case counts must be 0 or more"):
        write_phantom_dataset(tmp_path / "new", num_training=-1)


def test_generate_script_writes_a_dataset(tmp_path):
    command = [sys.executable, str(REPO / "sample_data" / "generate.py"), "--output", str(tmp_path)]
    result = subprocess.run([*command, "--dataset", "2", "--test", "1"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "Dataset001_Phantom"
    assert sorted(p.name for p in folder.iterdir()) == ["dataset.json", "imagesTr", "imagesTs", "labelsTr", "labelsTs"]
    assert not (tmp_path / "ct_phantom").exists()  # --dataset writes the dataset only
    dataset = open_dataset(folder)
    assert len(dataset.cases) == 2 and len(dataset.test_cases) == 1 and check_dataset(dataset) == []
    rerun = subprocess.run([*command, "--dataset", "1", "--layout", "msd"], capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert open_dataset(tmp_path / "Task01_Phantom").layout == "msd"
    again = subprocess.run([*command, "--dataset", "1"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and len(open_dataset(folder).cases) == 1  # replaces the earlier dataset
