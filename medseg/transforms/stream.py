"""Batches made in background processes, so that loading overlaps the training step."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from typing_extensions import Self

from medseg.config.schema import Pipeline
from medseg.transforms.prepare import PreparedCase
from medseg.transforms.sampling import PatchSampler


def worker_seed(seed: int, worker: int) -> int:
    """The seed of worker ``worker``'s sampler: independent streams, fixed by ``seed``."""
    return int(np.random.SeedSequence([seed, worker]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _label_dtype(labels: torch.Tensor) -> torch.dtype:
    """The smallest type for the trip between processes (labels are int64 only at the end)."""
    return torch.uint8 if labels.numel() == 0 or int(labels.max()) <= 255 else torch.int16


class _Batches(IterableDataset):
    """Endless batches from one :class:`PatchSampler` per worker process."""

    def __init__(self, cases: Sequence[PreparedCase], pipeline: Pipeline, options: dict[str, Any], seed: int) -> None:
        self.cases, self.pipeline, self.options, self.seed = list(cases), pipeline, options, seed

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        worker = 0 if info is None else info.id
        sampler = PatchSampler(self.cases, self.pipeline, seed=worker_seed(self.seed, worker), **self.options)
        while True:
            images, labels = sampler.batch()
            yield images, labels.to(_label_dtype(labels))


class BatchStream:
    """An endless iterator of training batches made by :class:`PatchSampler` in worker processes.

    A ``torch.utils.data.DataLoader`` runs one sampler per worker (seeded from
    ``seed`` and the worker's number, see :func:`worker_seed`) and hands out
    their batches in turn, so the sequence is fixed by ``seed`` and ``workers``.
    Memory-mapped cases reach the workers as file names (or are inherited when
    processes fork), not as copies. Iterating again continues the same stream;
    call :meth:`close` (or use ``with``) to stop the workers.

    Args:
        cases: prepared cases with labels.
        pipeline: as for :class:`PatchSampler`.
        seed: fixes the stream.
        workers: background processes; 0 makes batches in the caller's thread
            (the same batches as ``PatchSampler(cases, pipeline, seed=worker_seed(seed, 0))``).
        prefetch: batches each worker keeps ready.
        augment: as for :class:`PatchSampler`.
        batch_size: overrides ``training.batch_size``.
        pin_memory: pin batches for faster copies to a GPU.
    """

    def __init__(
        self,
        cases: Sequence[PreparedCase],
        pipeline: Pipeline,
        *,
        seed: int,
        workers: int = 2,
        prefetch: int = 2,
        augment: bool = True,
        batch_size: int | None = None,
        pin_memory: bool = False,
    ) -> None:
        dataset = _Batches(cases, pipeline, {"augment": augment, "batch_size": batch_size}, seed)
        extra: dict[str, Any] = {"prefetch_factor": prefetch, "persistent_workers": True} if workers > 0 else {}
        self._loader = DataLoader(dataset, batch_size=None, num_workers=workers, pin_memory=pin_memory, **extra)
        self._iterator: Iterator[tuple[torch.Tensor, torch.Tensor]] | None = None

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._iterator is None:
            self._iterator = iter(self._loader)
        images, labels = next(self._iterator)
        return images, labels.to(torch.int64)

    def close(self) -> None:
        """Stop the worker processes (a later ``next`` starts them again, from the beginning)."""
        iterator, self._iterator = self._iterator, None
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
