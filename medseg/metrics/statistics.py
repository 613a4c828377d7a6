"""Per-label volume and intensity statistics of a label map (``medseg predict --stats``).

One pass of :func:`numpy.bincount` per block of slices gives every label's
voxel count, intensity sum and spread at once, so a 512x512x600 scan with
100 labels needs a few blocks of memory, never one mask per label. Spreads are
merged block by block with Chan et al.'s pairwise formula, which stays exact
where a running sum of squares would cancel (HU values around 1000 with a
spread of a few HU).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import InputError
from medseg.io.files import atomic_path
from medseg.volume import Volume, VolumeKind

#: Voxels per block: bounds the temporaries (a few float64 copies of a block) to about 20 MB.
_BLOCK_VOXELS = 1 << 19
#: A connected piece of a label smaller than this share of the label's voxels is a speck, not a piece.
PIECE_SHARE = 0.01


@dataclass(frozen=True)
class LabelStats:
    """One label's size and, given an image, the intensity inside it.

    ``mean`` and ``std`` (population standard deviation) are in the image's units
    (HU for CT) from its first channel; None without an image or for an empty label.
    """

    label: int
    name: str
    voxels: int
    volume_ml: float
    mean: float | None = None
    std: float | None = None


def label_statistics(labels: Volume, image: Volume | None = None) -> list[LabelStats]:
    """Voxel count, volume and intensity of each label of a label map.

    Labels are those of ``labels.segments`` and every other non-zero value present,
    in increasing order; a segment with no voxels is listed with a count of 0.

    Args:
        labels: the label map.
        image: an image on the same grid, for mean and standard deviation inside
            each label; None to skip intensities.

    Raises:
        InputError: ``labels`` is not a label map, or holds negative values.
        GeometryError: the image lies on another grid.
    """
    if labels.kind is not VolumeKind.LABEL:
        raise InputError(f"{labels.path or 'labels'}: expected a label map, got a {labels.kind.value} volume")
    if image is not None:
        image.geometry.require_same_grid(
            labels.geometry, tolerance_mm=0.01, what=f"{image.path or 'the image'} and {labels.path or 'the labels'}"
        )
    label_array = labels.channel(0)
    values = image.channel(0) if image is not None else None
    size = int(label_array.max(initial=0)) + 1
    if label_array.size and label_array.min() < 0:
        raise InputError(f"{labels.path or 'labels'}: label maps hold non-negative integers, found {label_array.min()}")
    size = max(size, max((s.number for s in labels.segments), default=0) + 1)
    count, mean, m2 = np.zeros(size, np.int64), np.zeros(size), np.zeros(size)
    for block in _blocks(label_array.shape):
        flat = label_array[block].ravel().astype(np.intp, copy=False)
        block_count = np.bincount(flat, minlength=size)
        if values is not None:
            weights = values[block].ravel().astype(np.float64)
            block_mean = np.bincount(flat, weights=weights, minlength=size) / np.maximum(block_count, 1)
            block_m2 = np.bincount(flat, weights=(weights - block_mean[flat]) ** 2, minlength=size)
            mean, m2 = _merge(count, mean, m2, block_count, block_mean, block_m2)
        count += block_count
    names = {s.number: s.name for s in labels.segments}
    numbers = sorted(set(names) | {int(n) for n in np.flatnonzero(count)}) if size else []
    voxel_ml = labels.geometry.voxel_volume_ml
    stats = []
    for n in (n for n in numbers if n != 0):
        voxels = int(count[n])
        has_values = values is not None and voxels > 0
        stats.append(
            LabelStats(
                label=n,
                name=names.get(n, f"label {n}"),
                voxels=voxels,
                volume_ml=voxels * voxel_ml,
                mean=float(mean[n]) if has_values else None,
                std=math.sqrt(m2[n] / voxels) if has_values else None,
            )
        )
    return stats


def piece_sizes(mask: np.ndarray) -> np.ndarray:
    """Voxels of each 26-connected piece of a boolean mask, largest first (empty for an empty mask)."""
    from scipy import ndimage

    pieces, count = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.bincount(pieces.ravel())[1:])[::-1]


def significant_pieces(sizes: np.ndarray) -> int:
    """Pieces holding at least :data:`PIECE_SHARE` of the mask's voxels (smaller ones are specks)."""
    total = int(sizes.sum())
    return int(np.sum(sizes >= PIECE_SHARE * total)) if total else 0


def write_statistics(
    stats: Sequence[LabelStats],
    json_path: str | os.PathLike[str] | None,
    csv_path: str | os.PathLike[str] | None = None,
    *,
    extra: Mapping[str, Mapping[str, Any]] | None = None,
    case: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write statistics as JSON (a list of objects) and/or CSV (one row per label), atomically.

    Args:
        stats: one entry per label.
        json_path: where the JSON goes (None: none).
        csv_path: where the CSV goes (None: none).
        extra: more fields per label, by label name (e.g. quality signals); added to its
            object and as CSV columns (lists joined by ``;``).
        case: more top-level JSON entries about the whole case (e.g. its flags).

    Returns:
        The paths written (None paths are skipped).
    """
    extra = extra or {}
    rows = [{**asdict(s), **extra.get(s.name, {})} for s in stats]
    columns = list(dict.fromkeys([*LabelStats.__dataclass_fields__, *(k for e in extra.values() for k in e)]))
    written = []
    if json_path is not None:
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps({"labels": rows, **(case or {})}, indent=2) + "\n", encoding="utf-8")
        written.append(Path(json_path))
    if csv_path is not None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: _csv_value(v) for k, v in row.items()} for row in rows)
        with atomic_path(csv_path) as tmp:
            tmp.write_text(buffer.getvalue(), encoding="utf-8")
        written.append(Path(csv_path))
    return written


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ";".join(str(v) for v in value)
    return value


def _blocks(shape: tuple[int, ...]) -> list[tuple[slice, ...]]:
    """Slabs along the last axis of about ``_BLOCK_VOXELS`` voxels each."""
    per_slice = max(1, int(np.prod(shape[:-1])))
    step = max(1, _BLOCK_VOXELS // per_slice)
    return [(slice(None), slice(None), slice(k, k + step)) for k in range(0, shape[-1], step)]


def _merge(
    n_a: np.ndarray, mean_a: np.ndarray, m2_a: np.ndarray, n_b: np.ndarray, mean_b: np.ndarray, m2_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Chan et al.'s merge of two (count, mean, sum of squared deviations) summaries, per label."""
    total = n_a + n_b
    safe = np.maximum(total, 1)
    delta = mean_b - mean_a
    mean = mean_a + delta * n_b / safe
    m2 = m2_a + m2_b + delta**2 * n_a * n_b / safe
    return mean, m2
