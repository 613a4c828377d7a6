"""BatchStream: PatchSampler batches from worker processes, in a fixed order."""

from __future__ import annotations

import functools

import pytest
import torch

from medseg.datasets import load_case, open_dataset
from medseg.synthetic import write_phantom_dataset
from medseg.transforms import BatchStream, CaseCache, PatchSampler, worker_seed
from tests.transforms.helpers import make_pipeline


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    dataset = open_dataset(write_phantom_dataset(root / "Dataset001_Phantom", num_training=2))
    pipeline = make_pipeline(patch=(32, 32, 16))
    cache = CaseCache(root / "cache", pipeline)
    return pipeline, [cache.get(c.case_id, functools.partial(load_case, dataset, c)) for c in dataset.cases]


def expected(cases, pipeline, seed: int, workers: int, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """What the workers make, taken in turn."""
    samplers = [PatchSampler(cases, pipeline, seed=worker_seed(seed, w)) for w in range(max(workers, 1))]
    return [samplers[n % len(samplers)].batch() for n in range(count)]


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_come_in_a_fixed_order(cached, workers):
    pipeline, cases = cached
    with BatchStream(cases, pipeline, seed=3, workers=workers) as stream:
        got = [next(stream) for _ in range(4)]
    for (image, label), (want_image, want_label) in zip(got, expected(cases, pipeline, 3, workers, 4)):
        assert image.shape == (2, 1, 32, 32, 16) and label.dtype == torch.int64
        assert torch.equal(image, want_image) and torch.equal(label, want_label)


def test_worker_seeds_differ():
    assert len({worker_seed(1, w) for w in range(8)} | {worker_seed(2, 0)}) == 9
