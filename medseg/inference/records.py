"""What a prediction run leaves beside its masks: ``manifest.csv`` and ``run.json``.

``manifest.csv`` has one row per case (input path, series UID, status, output
paths, seconds, the SEG self-check, warnings, quality flags, confidence, volumes); ``run.json`` says what made the
outputs: versions, device, the model's identity, the settings, each input's
hash and timings. Both are updated after every case, under a lock and by atomic
replacement, so that shards of a job array can share one output folder and a
killed run leaves them whole.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import os
import platform
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medseg.io.files import write_atomically

MANIFEST = "manifest.csv"
RUN_JSON = "run.json"
_LOCK = ".medseg-predict.lock"

MANIFEST_COLUMNS = (
    "case",
    "input",
    "series_uid",
    "status",
    "outputs",
    "seconds",
    "seg_check",
    "warnings",
    "message",
    "flags",
    "batch_flags",
    "confidence",
    "volumes_ml",
)


@contextmanager
def output_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on the output folder's records (blocks while another shard holds it)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / _LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_manifest(folder: Path) -> dict[str, dict[str, str]]:
    """The manifest's rows by case name (empty when there is none)."""
    path = folder / MANIFEST
    if not path.is_file():
        return {}
    with open(path, newline="") as handle:
        return {row["case"]: row for row in csv.DictReader(handle) if row.get("case")}


def record_case(folder: Path, row: Mapping[str, Any], facts: Mapping[str, Any]) -> None:
    """Merge one case's manifest row and its ``run.json`` entry into the records.

    Args:
        folder: the output folder.
        row: values for :data:`MANIFEST_COLUMNS` (``outputs`` and ``warnings`` may be lists).
        facts: the case's entry under ``run.json``'s ``cases`` (input hash, seconds, ...).
    """
    with output_lock(folder):
        rows = read_manifest(folder)
        rows[str(row["case"])] = {column: _cell(row.get(column)) for column in MANIFEST_COLUMNS}
        _write_manifest(folder, rows)
        run = _read_run(folder)
        run.setdefault("cases", {})[str(row["case"])] = dict(facts)
        _write_run(folder, run)


def record_batch_flags(
    folder: Path, flag: Callable[[Mapping[str, Mapping[str, float]]], Mapping[str, Sequence[str]]]
) -> dict[str, list[str]]:
    """Hold every segmented case's label volumes against the batch and rewrite each row's ``batch_flags``.

    Runs under the records' lock, over every ``done`` row of the manifest (all shards' cases so far).

    Args:
        folder: the output folder.
        flag: per case its volumes by label name -> per case its flags (:func:`~medseg.inference.quality.batch_flags`).

    Returns:
        The flags of the cases that have any.
    """
    with output_lock(folder):
        rows = read_manifest(folder)
        volumes = {
            name: parse_volumes(row.get("volumes_ml", ""))
            for name, row in rows.items()
            if row.get("status") == "done" and row.get("volumes_ml")
        }
        flags = {name: list(found) for name, found in flag(volumes).items()}
        for name, row in rows.items():
            row["batch_flags"] = _cell(flags.get(name, []))
        _write_manifest(folder, rows)
        run = _read_run(folder)
        for name, facts in run.get("cases", {}).items():
            if isinstance(facts.get("quality"), dict):
                facts["quality"]["batch_flags"] = flags.get(name, [])
        _write_run(folder, run)
    return {name: found for name, found in flags.items() if found}


def format_volumes(volumes: Mapping[str, float]) -> str:
    """``liver=1520.3;spleen=210.1``: the manifest's ``volumes_ml`` cell."""
    return ";".join(f"{name}={value:.1f}" for name, value in volumes.items())


def parse_volumes(cell: str) -> dict[str, float]:
    """The volumes of a ``volumes_ml`` cell (entries that do not parse are left out)."""
    volumes = {}
    for entry in cell.split(";"):
        name, _, value = entry.rpartition("=")
        try:
            volumes[name] = float(value)
        except ValueError:
            continue
    return volumes


def record_run(folder: Path, facts: Mapping[str, Any], *, key: str) -> None:
    """Set the run's facts (versions, device, model, settings) and add or update this session under ``sessions``.

    Args:
        folder: the output folder.
        facts: top-level ``run.json`` entries; ``session`` (this invocation's shard,
            host, start, end, counts) goes into the ``sessions`` list under ``key``.
        key: identifies this invocation among the sessions (e.g. its start time and pid).
    """
    with output_lock(folder):
        run = _read_run(folder)
        session = dict(facts.get("session", {}))
        for name, value in facts.items():
            if name != "session":
                run[name] = value
        sessions = [s for s in run.get("sessions", []) if s.get("key") != key]
        sessions.append({"key": key, **session})
        run["sessions"] = sessions
        _write_run(folder, run)


def files_sha256(paths: Sequence[str | os.PathLike[str]]) -> str:
    """One SHA-256 over the bytes of several files, in order (a DICOM series' identity)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def environment() -> dict[str, Any]:
    """Versions of medseg and what it runs on, for ``run.json``."""
    import highdicom
    import monai
    import nibabel
    import numpy
    import pydicom
    import SimpleITK
    import torch

    import medseg

    return {
        "medseg": medseg.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "monai": monai.__version__,
        "highdicom": highdicom.__version__,
        "pydicom": pydicom.__version__,
        "nibabel": nibabel.__version__,
        "SimpleITK": SimpleITK.Version.VersionString(),
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "host": socket.gethostname(),
    }


def now() -> str:
    """The current UTC time as ISO 8601, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ";".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _write_manifest(folder: Path, rows: Mapping[str, Mapping[str, str]]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for name in sorted(rows):
        writer.writerow({column: rows[name].get(column, "") for column in MANIFEST_COLUMNS})
    write_atomically(folder / MANIFEST, lambda tmp: tmp.write_text(text.getvalue()))


def _read_run(folder: Path) -> dict[str, Any]:
    path = folder / RUN_JSON
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return {}  # unreadable (written by something else): start it anew
    return data if isinstance(data, dict) else {}


def _write_run(folder: Path, run: Mapping[str, Any]) -> None:
    text = json.dumps(run, indent=2) + "\n"
    write_atomically(folder / RUN_JSON, lambda tmp: tmp.write_text(text))
