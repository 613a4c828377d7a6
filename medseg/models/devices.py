"""Where a run computes, and the settings that go with it.

On CUDA: mixed precision (float16 autocast with a gradient scaler) and cuDNN's
autotuner, for speed. On the CPU: float32 and deterministic algorithms, so a
run with a fixed seed gives the same weights twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from medseg.errors import ConfigError

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is CUDA when a GPU is usable, else the CPU.

    Raises:
        ConfigError: an unknown name, or ``"cuda"`` without a usable GPU.
    """
    if isinstance(device, torch.device):
        chosen = device
    elif device == "auto":
        chosen = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif isinstance(device, str) and (device == "cpu" or device.startswith("cuda")):
        chosen = torch.device(device)
    else:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device 'cuda' asked for, but torch sees no CUDA GPU "
            f"(torch {torch.__version__}; is it a CUDA build, and is a driver installed?); use 'cpu' or 'auto'"
        )
    return chosen


@contextmanager
def compute_settings(device: torch.device) -> Iterator[None]:
    """Deterministic algorithms on the CPU, cuDNN autotuning on CUDA; restored on exit.

    These are process-wide torch flags, so they are set for the run only.
    """
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    try:
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        else:
            torch.use_deterministic_algorithms(True, warn_only=True)
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark


def autocast(device: torch.device) -> torch.autocast:
    """float16 autocast on CUDA; disabled (float32) elsewhere."""
    return torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda")


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler for float16 training on CUDA; a pass-through elsewhere."""
    return torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
