"""One prediction output folder read as a batch of cases: what the report and the review server show.

:func:`read_batch` reads ``OUT/manifest.csv`` and ``OUT/run.json`` as ``medseg predict``
writes them (see docs/predict.md) and finds each case's mask and preview by the output
layout. The quality columns (``flags``, ``batch_flags``, ``confidence``, ``volumes_ml``)
are used when the manifest has them; older folders lack them, and then volumes come from
``run.json``'s per-case ``quality`` or the ``<stem>.stats.json`` that ``--stats`` writes,
and the rest is left blank.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.errors import InputError

logger = logging.getLogger(__name__)

MANIFEST = "manifest.csv"
RUN_JSON = "run.json"


@dataclass(frozen=True)
class BatchCase:
    """One row of the manifest, with its files found and its list cells split.

    Attributes:
        name: the case name (``OUT/<name>.nii.gz`` or ``OUT/<name>/<name>.nii.gz``).
        input: the scan it was predicted from (a file or a DICOM folder), as the manifest says.
        series_uid: the DICOM series, when the input is DICOM.
        status: ``done``, ``failed``, ...
        mask: the NIfTI mask, None when it is missing.
        preview: the preview PNG, None when it is missing.
        seconds: time spent on the case, None when unknown.
        warnings: guardrail warnings.
        message: why it failed, or notes.
        flags: the case's own quality flags, in plain words.
        batch_flags: flags from comparing the case with the rest of the batch.
        confidence: mean max-softmax over the predicted foreground, None when unknown or empty.
        volumes_ml: label name -> volume in mL (empty when unknown).
    """

    name: str
    input: str
    series_uid: str
    status: str
    mask: Path | None = None
    preview: Path | None = None
    seconds: float | None = None
    warnings: tuple[str, ...] = ()
    message: str = ""
    flags: tuple[str, ...] = ()
    batch_flags: tuple[str, ...] = ()
    confidence: float | None = None
    volumes_ml: dict[str, float] = field(default_factory=dict)

    @property
    def flagged(self) -> bool:
        """Whether the case has any quality flag, its own or from the batch."""
        return bool(self.flags or self.batch_flags)


@dataclass(frozen=True)
class Batch:
    """The cases of one output folder, in manifest order, and its ``run.json``."""

    folder: Path
    cases: tuple[BatchCase, ...]
    run: dict[str, Any]

    @property
    def labels(self) -> list[str]:
        """Label names with a volume in any case, in the order they first appear."""
        return list(dict.fromkeys(name for case in self.cases for name in case.volumes_ml))

    def case(self, name: str) -> BatchCase:
        """The case called ``name``.

        Raises:
            InputError: no case of this folder has that name.
        """
        for case in self.cases:
            if case.name == name:
                return case
        raise InputError(f"{self.folder}: no case {name!r} in {MANIFEST}")

    def counts(self) -> dict[str, int]:
        """How many cases are done, failed and flagged, and how many in all."""
        return {
            "cases": len(self.cases),
            "done": sum(c.status in ("done", "exists") for c in self.cases),
            "failed": sum(c.status == "failed" for c in self.cases),
            "flagged": sum(c.flagged for c in self.cases),
        }


def read_batch(folder: str | os.PathLike[str]) -> Batch:
    """Read a ``medseg predict`` output folder.

    Raises:
        InputError: the folder or its ``manifest.csv`` is missing or unreadable.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder (expected a `medseg predict` output folder)")
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise InputError(f"{folder}: no {MANIFEST}; is this a `medseg predict` output folder?")
    try:
        with open(manifest, newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.DictReader(handle) if row.get("case")]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{manifest}: unreadable: {exc}") from None
    run = _read_run(folder / RUN_JSON)
    facts = run.get("cases") if isinstance(run.get("cases"), dict) else {}
    cases = tuple(_case(folder, row, facts.get(row["case"]) or {}) for row in rows)
    logger.info("read %d case(s) from %s", len(cases), manifest)
    return Batch(folder, cases, run)


def _case(folder: Path, row: dict[str, str], facts: dict[str, Any]) -> BatchCase:
    name = row["case"]
    quality = facts.get("quality") if isinstance(facts.get("quality"), dict) else {}
    stem = _stem(folder, name)
    mask = Path(f"{stem}.nii.gz")
    preview = Path(f"{stem}.preview.png")
    flags, batch_flags = _split(row.get("flags")), _split(row.get("batch_flags"))
    if "flags" not in row and "batch_flags" not in row:
        flags = tuple(str(f) for f in quality.get("flags") or ())
        batch_flags = tuple(str(f) for f in quality.get("batch_flags") or ())
    confidence = _number(row.get("confidence"))
    if confidence is None and "confidence" not in row:
        confidence = _number(quality.get("confidence"))
    return BatchCase(
        name=name,
        input=row.get("input") or "",
        series_uid=row.get("series_uid") or "",
        status=row.get("status") or "",
        mask=mask if mask.is_file() else None,
        preview=preview if preview.is_file() else None,
        seconds=_number(row.get("seconds")),
        warnings=_split(row.get("warnings")),
        message=row.get("message") or "",
        flags=flags,
        batch_flags=batch_flags,
        confidence=confidence,
        volumes_ml=_volumes(row.get("volumes_ml")) or _quality_volumes(quality) or _stats_volumes(stem),
    )


def _stem(folder: Path, name: str) -> Path:
    """``OUT/<name>/<name>`` for a DICOM series' case folder, else ``OUT/<name>``."""
    nested = folder / name / name
    return nested if (folder / name).is_dir() else folder / name


def _split(cell: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (cell or "").split(";") if part.strip())


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _volumes(cell: str | None) -> dict[str, float]:
    """``liver=1520.3;spleen=210.1`` -> ``{"liver": 1520.3, "spleen": 210.1}``; bad parts are left out."""
    volumes = {}
    for part in _split(cell):
        name, _, value = part.rpartition("=")
        number = _number(value)
        if name.strip() and number is not None:
            volumes[name.strip()] = number
    return volumes


def _quality_volumes(quality: dict[str, Any]) -> dict[str, float]:
    labels = quality.get("labels") if isinstance(quality.get("labels"), dict) else {}
    volumes = {}
    for name, facts in labels.items():
        number = _number(facts.get("volume_ml")) if isinstance(facts, dict) else None
        if number is not None:
            volumes[str(name)] = number
    return volumes


def _stats_volumes(stem: Path) -> dict[str, float]:
    """Volumes from ``<stem>.stats.json`` (``medseg predict --stats``), when there is one."""
    path = Path(f"{stem}.stats.json")
    if not path.is_file():
        return {}
    try:
        rows = json.loads(path.read_text(encoding="utf-8")).get("labels", [])
        return {str(r["name"]): float(r["volume_ml"]) for r in rows}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        logger.warning("%s: volumes not read: %s", path, exc)
        return {}


def _read_run(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        logger.warning("%s: not read: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}
