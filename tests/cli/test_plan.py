"""`medseg plan`: a dataset in, a validated and explained pipeline out."""

from __future__ import annotations

import json

import pytest

from medseg.cli import main
from medseg.config import load_pipeline, parse_pipeline
from medseg.planning import Fingerprint
from medseg.synthetic import write_phantom_dataset


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return write_phantom_dataset(tmp_path_factory.mktemp("phantoms"), num_training=6)


def test_plan_writes_pipeline_and_fingerprint(phantoms, tmp_path):
    output = tmp_path / "plan.yaml"
    assert main(["-q", "plan", str(phantoms), "--output", str(output), "--memory-gb", "1.5", "--epochs", "50"]) == 0
    pipeline = load_pipeline(output)
    assert pipeline.modality == "CT" and pipeline.training.epochs == 50
    assert {label.name for label in pipeline.labels.values()} == {"liver", "spleen", "kidney"}
    assert pipeline.preprocessing.channels[0].normalization.scheme == "ct"
    text = output.read_text()
    assert text.count("\n#") + text.count("\n  #") > 10  # the choices are explained
    fingerprint = Fingerprint.from_dict(json.loads((tmp_path / "plan.fingerprint.json").read_text()))
    assert fingerprint.num_cases == 6


def test_plan_is_deterministic_and_prints_to_stdout(phantoms, capsys):
    outputs = []
    for _ in range(2):
        assert main(["-q", "plan", str(phantoms), "--memory-gb", "1.5", "--cpu-speed", "1"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    assert parse_pipeline(outputs[0]).network.dimensions == 3


def test_a_smaller_budget_gives_a_smaller_patch(phantoms, capsys):
    sizes = []
    for budget in ("2", "0.8"):
        assert main(["-q", "plan", str(phantoms), "--memory-gb", budget, "--device", "cuda"]) == 0
        patch = parse_pipeline(capsys.readouterr().out).training.patch_size
        sizes.append(patch[0] * patch[1] * patch[2])
    assert sizes[1] < sizes[0]


def test_broken_cases_are_all_listed_and_nothing_is_written(phantoms, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(phantoms, broken)
    (broken / "labelsTr" / "phantom_002.nii.gz").unlink()
    (broken / "imagesTr" / "phantom_004_0000.nii.gz").write_bytes(b"not a nifti")
    output = tmp_path / "plan.yaml"
    assert main(["-q", "plan", str(broken), "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert "phantom_002" in err and "phantom_004" in err
    assert not output.exists()


def test_missing_dataset_is_a_usage_error(tmp_path, capsys):
    assert main(["plan", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err


def test_a_csv_list_without_declared_labels_is_planned(phantoms, tmp_path, capsys):
    rows = ["image,label"]
    for image in sorted((phantoms / "imagesTr").glob("*_0000.nii.gz")):
        case = image.name.removesuffix("_0000.nii.gz")
        rows.append(f"{image},{phantoms / 'labelsTr' / (case + '.nii.gz')}")
    (tmp_path / "cases.csv").write_text("\n".join(rows) + "\n")
    assert main(["-q", "plan", str(tmp_path / "cases.csv"), "--memory-gb", "1.5"]) == 0
    pipeline = parse_pipeline(capsys.readouterr().out)
    assert {n: label.name for n, label in pipeline.labels.items()} == {1: "label_1", 2: "label_2", 3: "label_3"}


def test_plan_for_a_cpu_says_so_and_fits_a_step_budget(phantoms, tmp_path, capsys):
    from medseg.planning import pipeline_step_seconds
    from medseg.planning.budget import CPU_STEP_SECONDS

    output = tmp_path / "cpu.yaml"
    command = ["plan", str(phantoms), "--device", "cpu", "--threads", "2", "--cpu-speed", "1", "--output", str(output)]
    assert main(command) == 0
    assert "to train on a CPU (2 threads)" in capsys.readouterr().err
    text = output.read_text()
    assert text.startswith("# Pipeline planned by `medseg plan`") and "# Planned for a CPU (2 threads)" in text
    pipeline = load_pipeline(output)
    assert pipeline.network.filters[0] == 16 and "for a CPU" in pipeline.description
    assert pipeline_step_seconds(pipeline, threads=2) <= CPU_STEP_SECONDS
    assert main(["-q", "plan", str(phantoms), "--device", "cuda"]) == 0
    gpu = parse_pipeline(capsys.readouterr().out)
    assert gpu.network.filters[0] == 32 and gpu.training.epochs == 1000
    assert gpu.training.patch_size != pipeline.training.patch_size


def test_more_threads_plan_a_larger_cpu_patch(phantoms, capsys):
    sizes = []
    for threads in ("1", "8"):
        assert main(["-q", "plan", str(phantoms), "--device", "cpu", "--threads", threads, "--cpu-speed", "1"]) == 0
        patch = parse_pipeline(capsys.readouterr().out).training.patch_size
        sizes.append(patch[0] * patch[1] * patch[2])
    assert sizes[0] < sizes[1]


def test_bad_threads_are_a_usage_error(phantoms, capsys):
    assert main(["-q", "plan", str(phantoms), "--device", "cpu", "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err
    assert main(["-q", "plan", str(phantoms), "--device", "cpu", "--cpu-speed", "0"]) == 2
    assert "--cpu-speed must be a positive factor" in capsys.readouterr().err


def test_a_slower_machine_plans_a_cheaper_step_and_says_so(phantoms, capsys):
    """The step budget is on the machine that trains: twice as slow, about half the work per step."""
    from medseg.planning import pipeline_step_seconds

    plans = {}
    for speed in ("1", "2"):
        assert main(["-q", "plan", str(phantoms), "--device", "cpu", "--threads", "2", "--cpu-speed", speed]) == 0
        text = capsys.readouterr().out
        plans[speed] = (parse_pipeline(text), text)
    fast, slow = plans["1"][0], plans["2"][0]
    assert pipeline_step_seconds(slow, threads=2) < pipeline_step_seconds(fast, threads=2)
    assert slow.training.planned_step_seconds == pytest.approx(2 * pipeline_step_seconds(slow, threads=2), rel=0.01)
    assert "this machine measured at 2x the formula's reference step time" in " ".join(plans["2"][1].split())


@pytest.mark.slow
def test_plan_measures_the_machine_by_default(phantoms, capsys):
    from medseg.planning.calibrate import measure_cpu_speed

    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    speed = measure_cpu_speed(1)
    assert 0.1 <= speed < 20 and torch.get_num_threads() == threads  # threads restored
    assert main(["-q", "plan", str(phantoms), "--device", "cpu", "--threads", "1"]) == 0
    pipeline = parse_pipeline(capsys.readouterr().out)
    assert pipeline.training.planned_step_seconds is not None
