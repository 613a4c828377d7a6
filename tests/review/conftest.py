"""A real prediction output folder for the report and review tests.

``medseg predict --model bundled --preview --stats`` runs once per session on three small
phantoms (two NIfTI files, one DICOM series) and a broken file. Tests that need known flags
overwrite the quality columns (``flags``, ``batch_flags``, ``confidence``, ``volumes_ml``) so
that one case is flagged by itself and one by the batch (``batch_folder``); ``older_folder``
strips them, as a folder from a medseg before the quality signals.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from medseg.cli import main
from medseg.io import write_image
from medseg.synthetic import make_phantom
from tests import factories

QUALITY = {
    "alpha": {"flags": "spleen: 3 pieces, largest 71%;liver touches the upper edge of the scan", "confidence": "0.81"},
    "bravo": {"batch_flags": "liver: 3400 mL, far above this batch (median 1500 mL)", "confidence": "0.93"},
    "charlie": {"confidence": "0.95"},
}
FLAGGED = {"alpha", "bravo"}


def _grid(seed: int):
    return factories.axial_geometry((48, 40, 12), (6.0, 6.0, 8.0), (-140.0 + seed, -120.0, -45.0))


def add_quality_columns(folder: Path) -> None:
    """Add the quality columns to ``folder/manifest.csv``, volumes from each case's stats."""
    import json

    path = folder / "manifest.csv"
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        stem = folder / row["case"] / row["case"] if (folder / row["case"]).is_dir() else folder / row["case"]
        stats = Path(f"{stem}.stats.json")
        volumes = json.loads(stats.read_text())["labels"] if stats.is_file() else []
        row.update({"flags": "", "batch_flags": "", "confidence": "", **QUALITY.get(row["case"], {})})
        row["volumes_ml"] = ";".join(f"{v['name']}={v['volume_ml']:.1f}" for v in volumes)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="session")
def predicted(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(inputs, OUT as predict left it, references): four cases, one failed, with predict's own quality columns."""
    root = tmp_path_factory.mktemp("predicted")
    inputs, references = root / "in", root / "ref"
    for seed, name in enumerate(("alpha", "bravo")):
        image, labels = make_phantom(seed, geometry=_grid(seed))
        write_image(image, inputs / f"{name}.nii.gz")
        write_image(labels, references / f"{name}.nii.gz")
    image, labels = make_phantom(2, geometry=_grid(2))
    factories.write_series(image, inputs / "charlie")
    write_image(labels, references / "charlie.nii.gz")
    (inputs / "broken.nii.gz").write_bytes(b"not a NIfTI file")
    out = root / "out"
    code = main(["-q", "predict", "--model", "bundled", str(inputs), "-o", str(out), "--preview", "--stats",
                 "--device", "cpu"])
    assert code == 4  # the broken file failed, the rest were segmented
    return inputs, out, references


@pytest.fixture()
def older_folder(predicted, tmp_path) -> Path:
    """The output folder as a medseg before the quality signals left it: no quality columns, no run.json quality."""
    import json

    out = tmp_path / "older"
    shutil.copytree(predicted[1], out)
    with open(out / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = [c for c in rows[0] if c not in ("flags", "batch_flags", "confidence", "volumes_ml")]
    with open(out / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    run = json.loads((out / "run.json").read_text())
    for facts in run["cases"].values():
        facts.pop("quality", None)
    (out / "run.json").write_text(json.dumps(run))
    return out


@pytest.fixture()
def batch_folder(predicted, tmp_path) -> Path:
    """A fresh copy of the output folder, with the quality columns filled in."""
    out = tmp_path / "out"
    shutil.copytree(predicted[1], out)
    add_quality_columns(out)
    return out
