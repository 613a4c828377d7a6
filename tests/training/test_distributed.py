"""Training under `torchrun` with DistributedDataParallel (2 CPU processes, gloo), and the run-folder lock.

The launcher is the real one (``python -m torch.distributed.run``) running the real
``medseg train`` command, as a user would on a GPU node.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from medseg.cli import main
from medseg.errors import ConfigError
from medseg.models.folder import load_model
from medseg.training.distributed import Distributed, launched_by_torchrun, main_process
from medseg.training.records import read_metrics
from medseg.workflows.train import LOCK_FILE, lock_run_dir
from medseg.training.state import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
LAUNCH = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
LAUNCH += ["--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0", "-m", "medseg", "train"]


def torchrun(*args: str | Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*LAUNCH, *map(str, args)], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def same_rows(a: list[dict[str, float]], b: list[dict[str, float]]) -> bool:
    """Equal metrics rows (NaN equal to NaN)."""
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(x[k] == y[k] or (math.isnan(x[k]) and math.isnan(y[k])) for k in x)
        for x, y in zip(a, b)
    )


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "model.pt", weights_only=True)


@pytest.fixture(scope="module")
def ddp_run(phantom_dataset, tiny_pipeline_file, tmp_path_factory):
    """Two epochs of the tiny pipeline trained by two processes; returns (run folder, finished process)."""
    run = tmp_path_factory.mktemp("ddp") / "run"
    args = ["--output", run, "--pipeline", tiny_pipeline_file, "--epochs", "2", "--device", "cpu"]
    done = torchrun(phantom_dataset, *args)
    return run, done


def test_torchrun_trains_with_two_processes_and_rank_0_writes_the_run(ddp_run):
    run, done = ddp_run
    assert done.returncode == 0, done.stderr[-3000:]
    network, pipeline, facts = load_model(run / "model")
    assert facts["processes"] == 2 and facts["epochs_run"] == 2 and pipeline.name == "tiny"
    assert [row["epoch"] for row in read_metrics(run / "metrics.csv")] == [1.0, 2.0]  # each epoch once
    log = (run / "train.log").read_text()
    assert log.count("started:") == 1 and "world size 2 (gloo, 2 processes on 1 node(s))" in log
    assert log.count("epoch 2/2  loss") == 1
    assert done.stderr.count("epoch 2/2  loss") == 1  # one epoch line on the console, from rank 0
    assert done.stderr.count("trained 2 epoch(s)") == 1
    assert not (run / LOCK_FILE).exists()  # released and removed at the end
    checkpoint = load_checkpoint(run / "checkpoints" / "last.pt")
    assert not any(name.startswith("module.") for name in checkpoint.model)  # the bare network, as single runs save


def test_the_two_ranks_trained_together(ddp_run, phantom_dataset, tiny_pipeline_file, tmp_path):
    """Rank 0 draws a single process's patches: only rank 1's gradients can make the weights differ.

    (Were both ranks to draw the same patches, the averaged gradients would be exactly a
    single process's, and so would the weights: the single run uses one thread, as the ranks do.)
    """
    run, done = ddp_run
    assert done.returncode == 0, done.stderr[-3000:]
    alone = tmp_path / "alone"
    args = [phantom_dataset, "-o", alone, "--pipeline", tiny_pipeline_file, "--epochs", "2", "--device", "cpu"]
    single = subprocess.run(
        [sys.executable, "-m", "medseg", "train", *map(str, args)],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    together, by_one = weights(run / "model"), weights(alone / "model")
    assert together.keys() == by_one.keys()
    assert not all(torch.equal(together[name], by_one[name]) for name in by_one)
    # The epoch loss is the mean over the ranks, so it differs from rank 0's alone.
    assert read_metrics(run / "metrics.csv")[0]["train_loss"] != read_metrics(alone / "metrics.csv")[0]["train_loss"]


def test_torchrun_resumes_over_a_stale_lock_and_stops_together_at_a_time_limit(ddp_run, phantom_dataset):
    """All ranks load the checkpoint, and stop at the step rank 0 chooses (else DDP would hang)."""
    run, done = ddp_run
    assert done.returncode == 0, done.stderr[-3000:]
    before = read_metrics(run / "metrics.csv")
    (run / LOCK_FILE).write_text("pid 999999 on a node that died")  # left by a killed run: no one holds it
    args = ["-o", run, "--resume", "--epochs", "1000", "--time-limit", "0.05", "--device", "cpu"]
    resumed = torchrun(phantom_dataset, *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = read_metrics(run / "metrics.csv")
    assert 3 <= len(rows) < 1000 and same_rows(rows[:2], before)
    assert [row["epoch"] for row in rows] == list(range(1, len(rows) + 1))
    log = (run / "train.log").read_text()
    assert "resumed after epoch 2" in log and "time limit reached" in log
    assert load_model(run / "model")[2]["stopped"] == "time limit"


def test_a_run_folder_in_use_is_refused_in_one_line(phantom_dataset, tiny_pipeline_file, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", str(phantom_dataset), "-o", str(run), "--pipeline", str(tiny_pipeline_file), "--device", "cpu"]
    with held_lock(run):  # another live process holds the lock, as a running `medseg train` would
        assert main([*args, "--resume"]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and "another process (pid 4242 on somewhere) is training into this" in err
        assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]  # nothing touched
    with lock_run_dir(run):  # once its holder is gone, the folder is free again
        assert (run / LOCK_FILE).is_file()
    assert not (run / LOCK_FILE).exists()


def test_an_error_of_rank_0_stops_every_rank_at_once(phantom_dataset, tiny_pipeline_file, tmp_path):
    """Rank 0 is refused the folder while rank 1 waits for it: both end, neither hangs."""
    run = tmp_path / "run"
    with held_lock(run):
        failed = torchrun(phantom_dataset, "-o", run, "--pipeline", tiny_pipeline_file, "--resume", timeout=120)
    assert failed.returncode != 0
    refusal = "medseg train: error: " + f"{run}: another process (pid 4242 on somewhere)"
    assert failed.stderr.count(refusal) == 2  # from each rank
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]


def test_torchrun_is_recognised_by_its_environment():
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "localhost", "MASTER_PORT": "29500"}
    assert launched_by_torchrun(env) and not main_process(env)
    assert main_process({**env, "RANK": "0"})
    assert not launched_by_torchrun({**env, "MASTER_PORT": ""}) and main_process({})
    single = Distributed()  # what a plain run gets: everything local
    assert single.is_main and not single.is_distributed and single.describe() == "1 process"
    assert single.run_on_main(lambda: 7) == 7 and single.agree(True) and single.mean(0.5) == 0.5


def test_train_help_mentions_torchrun(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "torchrun --nproc-per-node" in " ".join(capsys.readouterr().out.split())


@contextmanager
def held_lock(run: Path) -> Iterator[None]:
    """The run folder's lock, held by another process (a bare ``flock``, not medseg's code)."""
    run.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run / LOCK_FILE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.communicate("", timeout=10)


def test_a_lock_is_exclusive_and_a_new_folder_that_stays_empty_is_removed(tmp_path):
    run = tmp_path / "new" / "run"
    with lock_run_dir(run):
        assert run.is_dir()
        with pytest.raises(ConfigError, match=r"another process \(pid \d+ on .+\) is training into this folder"):
            with lock_run_dir(run):
                pass
    assert not run.exists()


HOLD = """\
import fcntl, os, sys
handle = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(handle, fcntl.LOCK_EX)
os.write(handle, b"pid 4242 on somewhere")
print("held", flush=True)
sys.stdin.read()
"""
