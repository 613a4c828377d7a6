"""`train()` end to end on phantoms with a tiny network: records, model folder, resume, determinism, budgets."""

from __future__ import annotations

import json
import math

import pytest
import torch

from medseg.config import parse_pipeline
from medseg.datasets import load_case, open_dataset
from medseg.errors import ConfigError, ModelError
from medseg.models.folder import file_sha256, load_model
from medseg.training.records import read_metrics
from medseg.training.splits import read_splits
from medseg.training.state import load_checkpoint
from medseg.training.validation import predict_logits
from medseg.transforms.prepare import prepare_case
from medseg.workflows.train import TrainOptions, train
from tests.training.conftest import TINY

COLUMNS = [
    "epoch",
    "train_loss",
    "pseudo_dice_mean",
    "val_dice_mean",
    "val_dice_liver",
    "val_dice_spleen",
    "val_dice_kidney",
    "lr",
    "seconds",
    "train_seconds",
    "data_seconds",
    "validation_seconds",
]


def same_rows(a: list[dict[str, float]], b: list[dict[str, float]]) -> bool:
    """Equal metrics (NaN equal to NaN), wall times aside."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        for key in x:
            if not key.endswith("seconds") and not (x[key] == y[key] or (math.isnan(x[key]) and math.isnan(y[key]))):
                return False
    return True


def weights(folder) -> dict[str, torch.Tensor]:
    return torch.load(folder / "model.pt", weights_only=True)


@pytest.fixture(scope="module")
def reference(phantom_dataset, tiny_pipeline_file, tmp_path_factory):
    """Three uninterrupted epochs of the tiny pipeline, validating on fold 0."""
    run = tmp_path_factory.mktemp("runs") / "reference"
    return train(phantom_dataset, run, TrainOptions(pipeline=tiny_pipeline_file, device="cpu"))


def test_a_run_leaves_metrics_curves_log_events_and_checkpoints(reference):
    run = reference.run_dir
    assert reference.epochs == 3 and reference.stopped == "completed"
    assert (run / "metrics.csv").read_text().splitlines()[0].split(",") == COLUMNS
    rows = read_metrics(run / "metrics.csv")
    assert same_rows(rows, reference.history)
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert all(math.isfinite(row["train_loss"]) and 0 <= row["val_dice_mean"] <= 1 for row in rows)
    assert rows[0]["lr"] == pytest.approx(0.01) and rows[0]["lr"] > rows[1]["lr"] > rows[2]["lr"] > 0
    best = max(range(3), key=lambda i: (rows[i]["val_dice_mean"], i))  # ties go to the later epoch
    assert reference.best_epoch == best + 1 and reference.best_dice == rows[best]["val_dice_mean"]

    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log_lines = (run / "train.log").read_text().splitlines()
    assert sum(" epoch " in line and "loss" in line for line in log_lines) == 3

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert {"loss/train", "dice/mean", "dice/liver", "lr"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("loss/train")] == [1, 2, 3]

    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last.epoch == 3 and len(last.history) == 3 and last.fold == 0
    assert load_checkpoint(run / "checkpoints" / "best.pt").epoch == reference.best_epoch


def test_the_model_folder_holds_the_best_weights_and_says_what_they_are(reference, phantom_dataset):
    folder = reference.model_dir
    assert sorted(p.name for p in folder.iterdir()) == ["labels.json", "model.json", "model.pt", "pipeline.yaml"]
    facts = json.loads((folder / "model.json").read_text())
    assert facts["model_sha256"] == file_sha256(folder / "model.pt")
    assert facts["dataset"] == "Phantom" and facts["fold"] == 0 and facts["epochs_run"] == 3
    assert facts["best_epoch"] == reference.best_epoch and facts["best_dice"] == reference.best_dice
    assert facts["in_channels"] == 1 and facts["num_classes"] == 4
    assert {"medseg_version", "torch_version", "monai_version", "created"} <= set(facts)
    splits = read_splits(reference.run_dir / "splits.json")
    assert tuple(facts["cases"]["validation"]) == splits[0].validation
    assert tuple(facts["cases"]["train"]) == splits[0].train
    assert json.loads((folder / "labels.json").read_text()) == {
        "1": {"name": "liver"},
        "2": {"name": "spleen"},
        "3": {"name": "kidney"},
    }
    assert (folder / "pipeline.yaml").read_text() == TINY  # the given file, comments kept
    best = load_checkpoint(reference.run_dir / "checkpoints" / "best.pt").model
    assert all(torch.equal(best[name], value) for name, value in weights(folder).items())


def test_a_loaded_model_predicts_a_whole_volume(reference, phantom_dataset):
    network, pipeline, facts = load_model(reference.model_dir, device="cpu")
    assert not network.training and pipeline == parse_pipeline(TINY)
    assert facts["best_epoch"] == reference.best_epoch
    dataset = open_dataset(phantom_dataset)
    image, _ = load_case(dataset, dataset.cases[0])
    prepared = prepare_case(image, None, pipeline)
    logits = predict_logits(network, prepared.image, pipeline, device=torch.device("cpu"))
    assert logits.shape == (4, *prepared.image.shape[1:])
    assert torch.isfinite(logits).all()
    # The run's folder names its model too (`--model RUN_DIR`), as RUN_DIR/model does.
    from_run, _, run_facts = load_model(reference.run_dir, device="cpu")
    assert run_facts == facts and all(torch.equal(a, b) for a, b in zip(from_run.parameters(), network.parameters()))
    with pytest.raises(ModelError, match="not a complete model folder"):
        load_model(reference.run_dir / "checkpoints")


def test_the_same_seed_gives_the_same_run(reference, phantom_dataset, tiny_pipeline_file, tmp_path):
    again = train(phantom_dataset, tmp_path / "again", TrainOptions(pipeline=tiny_pipeline_file, device="cpu"))
    assert same_rows(again.history, reference.history)
    first, second = weights(reference.model_dir), weights(again.model_dir)
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_an_interrupted_run_resumes_as_if_never_stopped(reference, phantom_dataset, tiny_pipeline_file, tmp_path):
    run = tmp_path / "run"
    epochs_done = []

    def kill_in_epoch_three(stage: str, done: int, total: int) -> None:
        if stage == "epoch":
            epochs_done.append(done)
        if stage == "train" and done == 2 and epochs_done[-1] == 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of epoch 3

    with pytest.raises(KeyboardInterrupt):
        train(
            phantom_dataset, run, TrainOptions(pipeline=tiny_pipeline_file, device="cpu"), progress=kill_in_epoch_three
        )
    assert load_checkpoint(run / "checkpoints" / "last.pt").epoch == 2
    assert same_rows(read_metrics(run / "metrics.csv"), reference.history[:2])
    assert not (run / "model").exists()

    resumed = train(phantom_dataset, run, TrainOptions(device="cpu", resume=True))  # "auto": the run's own pipeline
    assert resumed.epochs == 3
    assert same_rows(read_metrics(run / "metrics.csv"), reference.history)
    first, second = weights(reference.model_dir), weights(resumed.model_dir)
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert "resumed after epoch 2" in (run / "train.log").read_text()


def test_a_finished_run_can_be_extended_on_resume(phantom_dataset, tiny_pipeline_file, tmp_path):
    run = tmp_path / "run"
    short = train(phantom_dataset, run, TrainOptions(pipeline=tiny_pipeline_file, epochs=2, device="cpu"))
    longer = train(phantom_dataset, run, TrainOptions(pipeline=tiny_pipeline_file, epochs=3, device="cpu", resume=True))
    assert len(longer.history) == 3 and same_rows(longer.history[:2], short.history)
    assert longer.history[2]["lr"] == pytest.approx(0.01 * (1 - 2 / 3) ** 0.9)  # the 3-epoch curve from epoch 3
    text = (run / "pipeline.yaml").read_text()
    assert "  epochs: 3  # three epochs" in text and text.startswith("# A tiny pipeline for tests.")
    again = train(phantom_dataset, run, TrainOptions(device="cpu", resume=True))  # nothing left to do: exports again
    assert again.epochs == 3 and same_rows(again.history, longer.history)


def test_resuming_with_another_pipeline_or_fold_is_refused(reference, phantom_dataset, tiny_pipeline):
    before = (reference.run_dir / "metrics.csv").read_bytes()
    optimizer = tiny_pipeline.training.optimizer.model_copy(update={"learning_rate": 0.02})
    changed = tiny_pipeline.model_copy(
        update={"training": tiny_pipeline.training.model_copy(update={"optimizer": optimizer})}
    )
    with pytest.raises(ConfigError, match=r"different pipeline \(changed: training\.optimizer\.learning_rate\)"):
        train(phantom_dataset, reference.run_dir, TrainOptions(pipeline=changed, device="cpu", resume=True))
    with pytest.raises(ConfigError, match="this run trains fold 0"):
        train(phantom_dataset, reference.run_dir, TrainOptions(fold=1, device="cpu", resume=True))
    with pytest.raises(ConfigError, match="holds a training run already"):
        train(phantom_dataset, reference.run_dir, TrainOptions(pipeline=tiny_pipeline, device="cpu"))
    assert (reference.run_dir / "metrics.csv").read_bytes() == before


def test_a_time_limit_stops_cleanly_and_exports_the_best_model(phantom_dataset, tiny_pipeline, tmp_path):
    limit_minutes = 0.05
    result = train(
        phantom_dataset,
        tmp_path / "run",
        TrainOptions(pipeline=tiny_pipeline, epochs=10_000, time_limit_minutes=limit_minutes),
    )
    assert result.stopped == "time limit" and 1 <= result.epochs < 10_000
    log = (tmp_path / "run" / "train.log").read_text()
    # A 3-second run affords a closing validation only where a case costs under 0.15 s to validate.
    assert not math.isnan(result.history[-1]["val_dice_mean"]) or "validation skipped" in log
    facts = json.loads((result.model_dir / "model.json").read_text())
    assert facts["stopped"] == "time limit" and facts["epochs_run"] == result.epochs
    load_model(result.model_dir)
    assert result.seconds < limit_minutes * 60 + 2.0  # see tests/training/test_budget.py for the promise
    assert "time limit reached" in log


def test_under_a_time_limit_the_learning_rate_anneals_by_the_clock(phantom_dataset, tiny_pipeline, tmp_path):
    result = train(
        phantom_dataset, tmp_path / "run", TrainOptions(pipeline=tiny_pipeline, epochs=10_000, time_limit_minutes=0.15)
    )
    rates = [row["lr"] for row in result.history]
    assert result.stopped == "time limit" and len(rates) >= 3
    assert rates == sorted(rates, reverse=True)
    assert rates[0] == pytest.approx(tiny_pipeline.training.optimizer.learning_rate, rel=0.02)
    # By epochs alone the rate would still be above 99.7% of its start; by the clock it has decayed.
    assert rates[-1] < 0.6 * rates[0]
    progress = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt").extra["schedule_progress"]
    assert 0.4 < progress <= 1.0


def test_fold_all_trains_on_every_case_and_exports_the_last_epoch(phantom_dataset, tiny_pipeline, tmp_path):
    result = train(
        phantom_dataset, tmp_path / "run", TrainOptions(pipeline=tiny_pipeline, epochs=2, fold="all", device="cpu")
    )
    assert result.best_epoch == 2 and math.isnan(result.best_dice)
    assert all(math.isnan(row["val_dice_mean"]) for row in result.history)
    facts = json.loads((result.model_dir / "model.json").read_text())
    assert facts["fold"] == "all" and facts["best_dice"] is None
    assert len(facts["cases"]["train"]) == 6 and facts["cases"]["validation"] == []
    assert not (tmp_path / "run" / "splits.json").exists()


def test_a_2d_pipeline_trains_on_slices_and_validates_slice_by_slice(phantom_dataset, tmp_path):
    text = (
        TINY.replace("dimensions: 3", "dimensions: 2")
        .replace("[[3, 3, 3], [3, 3, 3], [3, 3, 3]]", "[[3, 3], [3, 3], [3, 3]]")
        .replace("[[1, 1, 1], [2, 2, 2], [2, 2, 2]]", "[[1, 1], [2, 2], [2, 2]]")
        .replace("patch_size: [32, 32, 16]", "patch_size: [32, 32]\n  augmentation: {flip_axes: [0, 1]}")
    )
    pipeline = parse_pipeline(text)
    result = train(phantom_dataset, tmp_path / "run", TrainOptions(pipeline=pipeline, epochs=1, device="cpu"))
    assert 0 <= result.best_dice <= 1
    _, loaded, _ = load_model(result.model_dir)
    assert loaded.network.dimensions == 2
    cases = read_splits(tmp_path / "run" / "splits.json")[0].validation
    assert len(cases) == 2


def test_a_pipeline_with_an_added_monai_transform_trains(phantom_dataset, tmp_path):
    steps = (
        "  augmentation:\n"
        "    - {name: RandGaussianSmoothd, keys: [image], prob: 0.5, sigma_x: [0.5, 1.0]}\n"
        "    - {name: RandFlipd, keys: [image, label], prob: 0.5, spatial_axis: 0}\n"
    )
    path = tmp_path / "smooth.yaml"
    path.write_text(TINY.replace("  folds: 3\n", "  folds: 3\n" + steps))
    result = train(phantom_dataset, tmp_path / "run", TrainOptions(pipeline=path, epochs=1, device="cpu"))
    assert result.epochs == 1 and math.isfinite(result.history[0]["train_loss"])
    _, saved, _ = load_model(result.model_dir)
    assert [step.name for step in saved.training.augmentation] == ["RandGaussianSmoothd", "RandFlipd"]
    assert saved.training.augmentation[0].arguments["sigma_x"] == [0.5, 1.0]


def test_training_refuses_a_misspelled_step_before_it_starts(phantom_dataset, tmp_path):
    path = tmp_path / "pipe.yaml"
    text = TINY.replace(
        "  folds: 3\n", "  folds: 3\n  augmentation:\n    - {name: RandGausianSmoothd, keys: [image]}\n"
    )
    path.write_text(text)
    line = text.splitlines().index("    - {name: RandGausianSmoothd, keys: [image]}") + 1
    with pytest.raises(
        ConfigError, match=rf"pipe.yaml:{line}: training.augmentation\[0\]: .*did you mean 'RandGaussianSmoothd'"
    ):
        train(phantom_dataset, tmp_path / "run", TrainOptions(pipeline=path, device="cpu"))
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("channels", r"takes 2 channel\(s\) \['CT', 'PET'\], the dataset 'Phantom' has 1"),
        ("labels", r"label\(s\) 2 spleen, 3 kidney that pipeline 'tiny' does not list"),
    ],
)
def test_a_pipeline_that_does_not_fit_the_dataset_is_refused(phantom_dataset, tmp_path, change, message):
    if change == "channels":
        extra = "    - {name: PET, normalization: {scheme: zscore}}\n"
        text = TINY.replace("std: 50.0}}\n", "std: 50.0}}\n" + extra)
    else:
        text = TINY.replace("labels: {1: liver, 2: spleen, 3: kidney}", "labels: {1: liver}")
    with pytest.raises(ConfigError, match=message):
        train(phantom_dataset, tmp_path / "run", TrainOptions(pipeline=parse_pipeline(text), device="cpu"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"epochs": 0}, "epochs must be"),
        ({"time_limit_minutes": -1}, "time limit must be"),
        ({"fold": -1}, "fold must be"),
        ({"fold": 7}, "fold must be 'all' or a number from 0 to 2"),
        ({"device": "tpu"}, "device must be one of"),
    ],
)
def test_bad_options_are_refused_with_a_clear_message(phantom_dataset, tiny_pipeline, tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        train(phantom_dataset, tmp_path / "run", TrainOptions(pipeline=tiny_pipeline, **options))


def test_cuda_is_refused_clearly_where_there_is_none(phantom_dataset, tiny_pipeline, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        train(phantom_dataset, tmp_path / "run", TrainOptions(pipeline=tiny_pipeline, device="cuda"))


def test_a_planned_pipeline_file_brings_its_fingerprint_into_the_model_folder(phantom_dataset, tmp_path):
    from medseg.cli import main as cli

    assert cli(["-q", "plan", str(phantom_dataset), "--output", str(tmp_path / "plan.yaml"), "--memory-gb", "0.6"]) == 0
    fingerprint = json.loads((tmp_path / "plan.fingerprint.json").read_text())
    # The plan's fingerprint beside a tiny pipeline file of the same name, so the test stays fast.
    (tmp_path / "tiny.yaml").write_text(TINY)
    (tmp_path / "tiny.fingerprint.json").write_text(json.dumps(fingerprint))
    result = train(
        phantom_dataset, tmp_path / "run", TrainOptions(pipeline=tmp_path / "tiny.yaml", epochs=1, device="cpu")
    )
    assert json.loads((result.model_dir / "fingerprint.json").read_text()) == fingerprint
    assert fingerprint["num_cases"] == 6


def test_an_edited_case_file_is_prepared_again_on_resume(phantom_dataset, tiny_pipeline, tmp_path):
    """The cache follows the files: a changed label map is re-read, the untouched cases are not."""
    import shutil

    import nibabel as nib
    import numpy as np

    from medseg.transforms.cache import CaseCache

    dataset = shutil.copytree(phantom_dataset, tmp_path / "Dataset001_Phantom")
    run = tmp_path / "run"
    train(dataset, run, TrainOptions(pipeline=tiny_pipeline, epochs=1, fold="all", device="cpu"))
    cache = CaseCache(run / "cache", tiny_pipeline)
    edited, untouched = cache.paths("phantom_002"), cache.paths("phantom_001")
    assert 3 in np.load(edited["label"])
    untouched_meta = untouched["meta"].stat().st_mtime_ns

    label_file = dataset / "labelsTr" / "phantom_002.nii.gz"
    label = nib.load(label_file)
    data = np.asarray(label.dataobj).copy()
    data[data == 3] = 0  # the kidney removed from this case's label map
    nib.save(nib.Nifti1Image(data, label.affine, label.header), label_file)

    train(dataset, run, TrainOptions(pipeline=tiny_pipeline, epochs=1, fold="all", device="cpu", resume=True))
    assert 3 not in np.load(edited["label"])
    assert untouched["meta"].stat().st_mtime_ns == untouched_meta


def test_post_processing_is_chosen_on_the_validation_cases_when_the_pipeline_asks(phantom_dataset, tmp_path):
    """The tiny network's early predictions hold islands; the exported pipeline keeps the largest component of
    exactly the labels whose validation Dice that raised, says why in a comment, and the log says it too."""
    import re

    from medseg.config import load_pipeline

    text = TINY + "inference:\n  postprocessing:\n    choose_on_validation: true\n"
    (tmp_path / "choose.yaml").write_text(text)
    result = train(phantom_dataset, tmp_path / "run", TrainOptions(pipeline=tmp_path / "choose.yaml", device="cpu"))
    note = next(line for line in (result.run_dir / "train.log").read_text().splitlines() if "post-processing:" in line)
    changes = dict(re.findall(r"(\d): ([\d.]+ -> [\d.]+)", note))
    assert set(changes) == {"1", "2", "3"}
    expected = [
        int(n) for n, change in changes.items() if float(change.split(" -> ")[1]) > float(change.split(" -> ")[0])
    ]
    exported = load_pipeline(result.model_dir / "pipeline.yaml")
    assert exported.inference.postprocessing.largest_component == expected
    assert exported.inference.postprocessing.choose_on_validation
    written = (result.model_dir / "pipeline.yaml").read_text()
    assert written.startswith("# A tiny pipeline for tests.\n")  # the header is kept
    if expected:
        assert "nnU-Net's rule" in written
    else:
        assert written == text
