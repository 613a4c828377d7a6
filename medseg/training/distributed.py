"""Training on several GPUs or nodes: one process per GPU, started by ``torchrun``.

``torchrun --nproc-per-node N -m medseg train ...`` starts N copies of the command
and tells each its place through the environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). :func:`process_group` reads
them, joins the processes into a ``torch.distributed`` group (NCCL on CUDA,
gloo on the CPU), gives each process its device (``cuda:LOCAL_RANK``) and
leaves the group when training ends, however it ends. Without those variables
it yields a group of one process and touches nothing, so a plain run behaves
exactly as it always has.

Two kinds of waiting, two timeouts:

- the collectives of training (DistributedDataParallel's gradient all-reduce)
  use the group's :data:`TIMEOUT`;
- rank 0's long solo work (planning, preparing the cache, exporting) and the
  small messages of the loop (the time-limit decision, losses, validation
  scores) go through a second, gloo, group with :data:`WAIT_TIMEOUT`, so that
  ranks waiting for rank 0 to prepare a large dataset do not give up.

A process that fails raises and exits; ``torchrun`` sees it and stops the
others, so no rank waits forever for a dead one. Errors rank 0 meets while it
works alone (see :meth:`Distributed.run_on_main`) reach every rank at once.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from medseg.errors import ConfigError, ModelError
from medseg.models.devices import resolve_device

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The environment ``torchrun`` gives each process it starts.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
#: How long a training collective (the gradient all-reduce) may wait for the other ranks.
TIMEOUT = timedelta(minutes=30)
#: How long ranks may wait for rank 0's solo work (planning, preparing cases, exporting).
WAIT_TIMEOUT = timedelta(hours=24)


def launched_by_torchrun(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process was started by ``torchrun`` (or a launcher that sets the same variables)."""
    environ = os.environ if environ is None else environ
    return all(environ.get(name) for name in TORCHRUN_VARIABLES)


def main_process(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this is rank 0 (or a single process): the one that prints and writes. Imports nothing."""
    environ = os.environ if environ is None else environ
    return not launched_by_torchrun(environ) or environ.get("RANK") == "0"


@dataclass(frozen=True)
class Distributed:
    """This process's place among the processes training together.

    A group of one (``world_size == 1``, no backend) is what a plain run gets:
    every method then works locally and at once.

    Attributes:
        rank: this process's number, 0 to ``world_size - 1``; rank 0 writes the run's files.
        world_size: processes training together.
        local_rank: its number on this node (its GPU's index).
        device: where it computes.
        backend: ``"nccl"`` or ``"gloo"``; None for a single process.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None
    _control: Any = field(default=None, repr=False, compare=False)

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """Whether several processes train together (and the network is wrapped in DDP)."""
        return self.world_size > 1

    def describe(self) -> str:
        """E.g. ``"world size 2 (gloo, 2 processes on 1 node(s))"``, or ``"1 process"`` without torchrun."""
        if self.backend is None:
            return "1 process"
        nodes = len(set(self.gather(socket.gethostname())))
        processes = f"{self.world_size} process{'es' if self.world_size > 1 else ''}"
        return f"world size {self.world_size} ({self.backend}, {processes} on {nodes} node(s))"

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.backend is not None:
            dist.barrier(group=self._control)

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` (any picklable object), on every rank."""
        if self.backend is None:
            return value
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self._control)
        return box[0]

    def agree(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank: decisions all ranks must take together (e.g. stop now)."""
        if self.backend is None:
            return flag
        value = torch.tensor([1 if flag else 0], dtype=torch.int32)
        dist.broadcast(value, src=0, group=self._control)
        return bool(value.item())

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks, on every rank."""
        if self.backend is None:
            return value
        total = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(total, group=self._control)
        return float(total.item()) / self.world_size

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        if self.backend is None:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value, group=self._control)
        return values

    def run_on_main(self, work: Callable[[], T]) -> T:
        """Rank 0 runs ``work`` while the others wait; every rank gets its result or raises its error.

        The result must be picklable. An error rank 0 meets is raised on every rank,
        so none waits for a result that will never come.
        """
        if self.backend is None:
            return work()
        if not self.is_main:
            done, value = self.broadcast(None)
            if not done:
                raise value
            return value
        try:
            result = work()
        except BaseException as exc:
            self.broadcast((False, _portable(exc)))
            raise
        self.broadcast((True, result))
        return result

    def check_same(self, value: float, *, what: str, tolerance: float = 1e-6) -> None:
        """Raise when ranks hold different values of something they must agree on.

        Raises:
            ModelError: the largest and smallest values differ by more than ``tolerance`` (relative).
        """
        if self.backend is None:
            return
        values = self.gather(float(value))
        low, high = min(values), max(values)
        if high - low > tolerance * max(abs(low), abs(high), 1.0):
            listing = ", ".join(f"rank {rank} {v:.9g}" for rank, v in enumerate(values))
            raise ModelError(f"the ranks disagree on {what} ({listing}); they no longer train the same network")


@contextmanager
def process_group(device: str | torch.device = "auto", *, timeout: timedelta = TIMEOUT) -> Iterator[Distributed]:
    """This process's :class:`Distributed` place, joined to its group for the ``with`` block.

    Under ``torchrun`` the process joins the group (NCCL when it computes on CUDA,
    gloo on the CPU) and, on CUDA, uses GPU ``LOCAL_RANK``; the group is left on exit,
    also after an error. A group the caller initialised already is used, not left.
    Without ``torchrun`` the device is :func:`resolve_device`'s and no group exists.

    Args:
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (under ``torchrun``, ``cuda`` means ``cuda:LOCAL_RANK``).
        timeout: how long a training collective may wait for the other ranks.

    Raises:
        ConfigError: a bad device, or more processes on a node than it has GPUs.
    """
    if not launched_by_torchrun() and not dist.is_initialized():
        yield Distributed(device=resolve_device(device))
        return
    rank, world_size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = _local_device(device, local_rank)
    backend = "nccl" if chosen.type == "cuda" else "gloo"
    ours = not dist.is_initialized()
    if ours:
        dist.init_process_group(backend, timeout=timeout)
    else:
        backend = str(dist.get_backend())
        rank, world_size = dist.get_rank(), dist.get_world_size()
    control = None
    try:
        control = dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT)
        log.info("rank %d of %d (%s) on %s", rank, world_size, backend, chosen)
        yield Distributed(rank, world_size, local_rank, chosen, backend, control)
    finally:
        if ours:
            dist.destroy_process_group()
        elif control is not None:
            dist.destroy_process_group(control)


def _local_device(device: str | torch.device, local_rank: int) -> torch.device:
    chosen = resolve_device(device)
    if chosen.type != "cuda":
        return chosen
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ConfigError(
            f"LOCAL_RANK {local_rank} needs GPU {local_rank}, but this node has {count}; "
            f"start at most {count} process(es) per node (torchrun --nproc-per-node {count})"
        )
    chosen = torch.device("cuda", local_rank)
    torch.cuda.set_device(chosen)
    return chosen


def _portable(exc: BaseException) -> BaseException:
    """``exc`` itself when it survives pickling, else a RuntimeError with its message."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - any failure to pickle means: send the text instead
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc
