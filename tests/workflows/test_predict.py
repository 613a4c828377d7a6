"""``medseg predict`` end to end: a trained model segments DICOM series and NIfTI files, on their own grids."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medseg.geometry import Geometry
from medseg.inference.engine import Segmenter
from medseg.inference.records import read_manifest
from medseg.io import read_image, write_image
from medseg.io.dicom import DicomReadOptions, read_dicom
from medseg.io.seg import read_seg
from medseg.synthetic import make_phantom
from medseg.training.validation import dice_per_label
from medseg.workflows.predict import PredictOptions, predict
from tests import factories

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_dir(trained_model) -> Path:
    return trained_model


def _grid(shape, spacing, origin, direction) -> Geometry:
    return Geometry.from_spacing(
        shape, spacing, origin, direction, frame_of_reference_uid="1.2.826.0.1.3680043.8.498.1"
    )


#: The scans of the batch: an oblique series, a feet-first series, and a NIfTI file.
GRIDS = {
    "oblique": _grid(
        (44, 36, 12),
        (6.5, 7.0, 9.0),
        (-140.0, -120.0, -50.0),
        factories.rotation("z", 12) @ factories.rotation("x", -8),
    ),
    "feet_first": _grid((40, 34, 11), (7.0, 7.5, 9.0), (140.0, -125.0, 40.0), np.diag([-1.0, 1.0, -1.0])),
    "nifti_case": _grid((42, 35, 10), (7.0, 7.0, 10.0), (-145.0, -125.0, -45.0), np.eye(3)),
}


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """A folder with two DICOM series, a localizer beside them, and a NIfTI file; plus the true labels."""
    root = tmp_path_factory.mktemp("scans")
    truth = {}
    for number, (name, grid) in enumerate(GRIDS.items(), start=2):
        image, labels = make_phantom(number, geometry=grid)
        truth[name] = np.asarray(labels.array[0])
        if name == "nifti_case":
            write_image(image, root / "nifti" / "nifti_case_0000.nii.gz")
        else:
            factories.write_series(image, root / "dicom" / name, series_number=number, series_description=name)
    localizer = Geometry.from_spacing((32, 28, 1), (4.0, 4.0, 5.0), (-60.0, -50.0, 10.0), np.eye(3))
    (path,) = factories.write_series(factories.ramp_volume(localizer), root / "dicom" / "scout", series_number=1)
    factories.edit_dicom(path, ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    (root / "dicom" / "README.txt").write_text("not a scan")
    return root, truth


def test_every_series_is_segmented_on_its_own_grid_and_seg_matches_nifti(model_dir, scans, tmp_path):
    root, truth = scans
    out = tmp_path / "out"
    options = PredictOptions(formats=("nifti", "seg", "rtstruct"), device="cpu", stats=True, preview=True)
    report = predict([root / "dicom", root / "nifti"], out, model=model_dir, options=options)

    by_name = {r.name: r for r in report.results}
    assert {n: r.status for n, r in by_name.items() if r.status != "skipped"} == {
        "oblique": "done",
        "feet_first": "done",
        "nifti_case": "done",
    }
    assert any(r.status == "skipped" and r.message == "localizer" for r in report.results)
    labels = sorted(int(n) for n in json.loads((model_dir / "labels.json").read_text()))
    for name in ("oblique", "feet_first"):
        folder = out / name
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            f"{name}{ext}"
            for ext in (".nii.gz", ".seg.dcm", ".rtstruct.dcm", ".stats.json", ".stats.csv", ".preview.png")
        )
        scan = read_dicom(root / "dicom" / name, options=DicomReadOptions(tilt="keep"))
        mask = read_image(folder / f"{name}.nii.gz", kind="label")
        assert mask.geometry.is_close(scan.geometry, tolerance_mm=1e-3)
        seg = read_seg(folder / f"{name}.seg.dcm", reference=scan.geometry)
        assert np.array_equal(seg.array, mask.array)
        assert dice_per_label(seg.array[0], truth[name], labels) == dice_per_label(mask.array[0], truth[name], labels)
        assert "identical" in by_name[name].seg_check or "ok" in by_name[name].seg_check.lower()
    nifti = read_image(out / "nifti_case.nii.gz", kind="label")
    assert nifti.geometry.is_close(GRIDS["nifti_case"], tolerance_mm=1e-3)
    assert "SEG, RTSTRUCT not written" in by_name["nifti_case"].message

    rows = read_manifest(out)
    assert set(rows) == {"oblique", "feet_first", "nifti_case"}
    assert all(float(r["seconds"]) > 0 and r["status"] == "done" for r in rows.values())
    assert rows["oblique"]["series_uid"] == read_dicom(root / "dicom" / "oblique").source.series_instance_uid
    run = json.loads((out / "run.json").read_text())
    model_json = json.loads((model_dir / "model.json").read_text())
    assert run["model"]["sha256"] == model_json["model_sha256"]
    assert run["device"] == "cpu" and run["settings"]["formats"] == ["nifti", "seg", "rtstruct"]
    assert all(len(c["input_sha256"]) == 64 for c in run["cases"].values())


def test_a_rerun_skips_finished_cases_and_redoes_a_missing_output(model_dir, scans, tmp_path):
    root, _ = scans
    out = tmp_path / "out"
    segmenter = Segmenter.from_folder(model_dir, device="cpu")
    first = predict([root / "nifti", root / "dicom"], out, model=segmenter)
    assert [r.status for r in first.results if r.status != "skipped"] == ["done"] * 3
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")}
    (out / "feet_first" / "feet_first.nii.gz").unlink()
    second = predict([root / "nifti", root / "dicom"], out, model=segmenter)
    statuses = {r.name: r.status for r in second.results if r.status != "skipped"}
    assert statuses == {"feet_first": "done", "oblique": "exists", "nifti_case": "exists"}
    for path, stamp in stamps.items():
        if path.parent.name != "feet_first":
            assert path.stat().st_mtime_ns == stamp


def test_a_failing_case_is_reported_and_the_batch_goes_on(model_dir, scans, tmp_path):
    root, _ = scans
    inputs = tmp_path / "in"
    shutil.copytree(root / "nifti", inputs)
    (inputs / "broken_0000.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    report = predict([inputs], tmp_path / "out", model=model_dir, options=PredictOptions(device="cpu"))
    statuses = {r.name: r.status for r in report.results}
    assert statuses == {"broken": "failed", "nifti_case": "done"}
    assert "broken_0000.nii.gz" in report.failed[0].message
    assert read_manifest(tmp_path / "out")["broken"]["status"] == "failed"


def test_shards_split_the_batch_between_runs(model_dir, scans, tmp_path):
    root, _ = scans
    out = tmp_path / "out"
    segmenter = Segmenter.from_folder(model_dir, device="cpu")
    names = []
    for index in (1, 2):
        report = predict(
            [root / "dicom", root / "nifti"], out, model=segmenter, options=PredictOptions(shard=(index, 2))
        )
        names.append({r.name for r in report.results if r.status == "done"})
    assert names[0] and names[1] and not names[0] & names[1]
    assert names[0] | names[1] == {"oblique", "feet_first", "nifti_case"}
    assert set(read_manifest(out)) == names[0] | names[1]
    assert len(json.loads((out / "run.json").read_text())["sessions"]) == 2


def test_killing_predict_mid_batch_and_rerunning_finishes_without_recomputing(model_dir, scans, tmp_path):
    root, _ = scans
    inputs = tmp_path / "in"
    inputs.mkdir()
    for n in range(6):
        image, _ = make_phantom(20 + n, geometry=GRIDS["nifti_case"])
        write_image(image, inputs / f"case{n}.nii.gz")
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "medseg",
        "predict",
        "--model",
        str(model_dir),
        str(inputs),
        "--output",
        str(out),
        "--device",
        "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(read_manifest(out) if (out / "manifest.csv").exists() else {}) < 2:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = read_manifest(out)
    assert 2 <= len(finished) < 6, "the run should have been killed mid-batch"
    stamps = {name: (out / f"{name}.nii.gz").stat().st_mtime_ns for name in finished}

    rerun = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    rows = read_manifest(out)
    assert len(rows) == 6 and all(r["status"] == "done" for r in rows.values())
    for name, stamp in stamps.items():
        assert (out / f"{name}.nii.gz").stat().st_mtime_ns == stamp, f"{name} was computed twice"
    assert f"{len(finished)} exists" in rerun.stdout and f"{6 - len(finished)} done" in rerun.stdout
    for n in range(6):
        assert read_image(out / f"case{n}.nii.gz", kind="label").spatial_shape == GRIDS["nifti_case"].shape
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") and "nii" in p.name]


def test_a_series_with_a_missing_slice_is_refused_or_resampled_without_seg(model_dir, scans, tmp_path):
    root, _ = scans
    series = tmp_path / "gap"
    shutil.copytree(root / "dicom" / "oblique", series)
    sorted(series.iterdir())[5].unlink()
    out = tmp_path / "out"
    formats = ("nifti", "seg")
    refused = predict([series], out, model=model_dir, options=PredictOptions(formats=formats, device="cpu"))
    (result,) = refused.results
    assert result.status == "failed" and "missing" in result.message
    resampled = predict(
        [series],
        out,
        model=model_dir,
        options=PredictOptions(formats=formats, device="cpu", dicom=DicomReadOptions(irregular="resample")),
    )
    (result,) = resampled.results
    assert result.status == "done" and "SEG/RTSTRUCT not written" in result.message
    assert [Path(p).name for p in result.outputs] == ["gap.nii.gz"]
    assert (out / "gap" / "gap.nii.gz").is_file() and not (out / "gap" / "gap.seg.dcm").exists()
