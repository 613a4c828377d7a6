"""The planner-robustness datasets (``benchmarks/robustness_data.py``): stored voxel orders and ``touching``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.append(str(BENCHMARKS))  # benchmarks/ is a folder of scripts, not a package

import robustness_data as data  # noqa: E402


def world_centroids(labels: np.ndarray, affine: np.ndarray) -> dict[int, np.ndarray]:
    """Per label value (background left out), the mean position (mm) of its voxels through ``affine``."""
    found = {}
    for value in np.unique(labels[labels > 0]):
        index = np.argwhere(labels == value)
        found[int(value)] = (affine[:3, :3] @ index.mean(axis=0)) + affine[:3, 3]
    return found


def lps_grid_centroids(labels: np.ndarray, grid: data.Grid) -> dict[int, np.ndarray]:
    """The same from a generator's own LPS-ordered array, given in RAS (x and y negated)."""
    found = {}
    for value in np.unique(labels[labels > 0]):
        lps = np.asarray(grid.origin) + np.argwhere(labels == value).mean(axis=0) * np.asarray(grid.spacing)
        found[int(value)] = lps * [-1, -1, 1]
    return found


def touching_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    """The pairs of different labels (background left out) with voxels that are 26-neighbours."""
    pairs = set()
    for shift in np.ndindex(3, 3, 3):
        offset = np.array(shift) - 1
        if tuple(offset) <= (0, 0, 0):
            continue  # each direction once
        a = labels[tuple(slice(max(d, 0), n + min(d, 0)) for d, n in zip(offset, labels.shape))]
        b = labels[tuple(slice(max(-d, 0), n + min(-d, 0)) for d, n in zip(offset, labels.shape))]
        differ = (a != b) & (a > 0) & (b > 0)
        pairs |= {tuple(sorted(pair)) for pair in zip(a[differ].tolist(), b[differ].tolist())}
    return pairs  # type: ignore[return-value]


def test_every_stored_order_keeps_each_voxel_in_place(tmp_path: Path) -> None:
    grid = data.Grid((7, 6, 5), (0.8, 1.1, 2.5), (-31.0, 12.5, -402.0))
    labels = np.arange(1, 7 * 6 * 5 + 1, dtype=np.uint8).reshape(grid.shape)  # every voxel its own value
    expected = lps_grid_centroids(labels, grid)
    for order in data.STORED_ORDERS:
        data.write_nifti(labels, grid, tmp_path / f"{order}.nii.gz", order=order)
        stored = nib.load(tmp_path / f"{order}.nii.gz")
        assert "".join(nib.aff2axcodes(stored.affine)) == order
        np.testing.assert_allclose(stored.header.get_qform(), stored.affine)
        positions = world_centroids(np.asarray(stored.dataobj), stored.affine)
        assert positions.keys() == expected.keys()
        for value, position in positions.items():
            np.testing.assert_allclose(position, expected[value], atol=1e-3, err_msg=f"{order}, voxel {value}")
    with pytest.raises(ValueError, match="voxel order"):
        data.reversed_axes("SPL")


def test_stored_orders_are_drawn_in_their_shares() -> None:
    rng = np.random.default_rng(0)
    drawn = [data.stored_order(rng) for _ in range(4000)]
    assert set(drawn) == set(data.STORED_ORDERS)
    for order, share in data.STORED_ORDERS.items():
        assert abs(drawn.count(order) / len(drawn) - share) < 0.03, order


@pytest.fixture(scope="module")
def touching(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("robustness") / "touching"
    data.write_dataset("touching", folder, train_cases=2, test_cases=1)
    return folder


def case_files(folder: Path, case: dict) -> tuple[list[Path], Path]:
    """A recorded case's channel images and its label map."""
    images, labels = ("imagesTr", "labelsTr") if case["split"] == "train" else ("imagesTs", "labelsTs")
    return sorted((folder / images).glob(f"{case['case']}_*.nii.gz")), folder / labels / f"{case['case']}.nii.gz"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["touching", "mr"])
def test_files_carry_the_recorded_order(name: str, touching: Path, tmp_path: Path) -> None:
    folder = touching
    if name != "touching":
        folder = tmp_path / name
        data.write_dataset(name, folder, train_cases=1, test_cases=1)
    record = json.loads((folder / data.PARAMS_FILE).read_text())
    assert record["version"] == data.GENERATOR_VERSION
    for case in record["cases"]:
        images, label_path = case_files(folder, case)
        label = nib.load(label_path)
        assert len(images) == len(data.SPECS[name].channels)
        assert "".join(nib.aff2axcodes(label.affine)) == case["stored"]
        assert list(label.shape) == case["shape"]
        for path in images:
            image = nib.load(path)
            np.testing.assert_array_equal(image.affine, label.affine)
            assert image.shape == label.shape


@pytest.mark.slow
def test_touching_regenerated_case_sits_where_its_files_put_it(touching: Path) -> None:
    spec = data.SPECS["touching"]
    record = json.loads((touching / data.PARAMS_FILE).read_text())
    for number, case in enumerate(record["cases"], start=1):
        rng = data.case_rng(spec, data.SEED, number)
        scan = spec.make(rng)
        assert data.stored_order(rng) == case["stored"]
        label = nib.load(case_files(touching, case)[1])
        stored = world_centroids(np.asarray(label.dataobj), label.affine)
        expected = lps_grid_centroids(scan.labels, scan.grid)
        assert stored.keys() == expected.keys()
        for value, position in stored.items():
            np.testing.assert_allclose(position, expected[value], atol=1e-3, err_msg=f"{case['case']}, label {value}")


@pytest.mark.slow
def test_touching_holds_ten_touching_structures_in_their_places(touching: Path) -> None:
    manifest = json.loads((touching / "dataset.json").read_text())
    number = {name: n for name, n in manifest["labels"].items() if n > 0}
    assert len(number) >= 8 and list(number) == list(data.TOUCHING_LABELS)
    record = json.loads((touching / data.PARAMS_FILE).read_text())
    for case in record["cases"]:
        label = nib.load(case_files(touching, case)[1])
        labels = np.asarray(label.dataobj)
        assert set(np.unique(labels)) == {0, *number.values()}, case["case"]
        fractions = case["label_fractions"]
        assert max(fractions, key=fractions.get) == "liver"
        assert fractions["liver"] > 100 * fractions["ureter"] > 0 and fractions["adrenal"] < 0.005
        pairs = touching_pairs(labels)
        for a, b in [("kidney", "capsule"), ("liver", "cyst"), ("psoas", "quadratus"), ("ureter", "psoas")]:
            assert tuple(sorted((number[a], number[b]))) in pairs, (case["case"], a, b)
        ureter_slices = np.flatnonzero((labels == number["ureter"]).any(axis=(0, 1)))
        assert len(ureter_slices) > labels.shape[2] / 2  # stored axis 2 is z in every order
        # in patient space (RAS mm): the liver on the right (+x) of the aorta and above the ureter,
        # the ureter on the right and below the kidneys' centre, whatever the voxel order
        at = world_centroids(labels, label.affine)
        assert at[number["liver"]][0] > at[number["aorta"]][0]
        assert at[number["ureter"]][0] > at[number["aorta"]][0]
        assert at[number["liver"]][2] > at[number["ureter"]][2]
        assert at[number["kidney"]][2] > at[number["ureter"]][2]
