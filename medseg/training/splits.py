"""Cross-validation folds: which cases train and which validate, fixed once per run.

The split is a shuffled k-fold over the sorted case ids, drawn from the
pipeline's seed, so the same cases and seed always give the same folds. It is
written to ``RUN_DIR/splits.json`` (the shape nnU-Net's ``splits_final.json``
has: one ``{"train": [...], "val": [...]}`` per fold) and read back on later
runs, so a resumed or repeated run validates on the same cases; edit that file
to choose your own folds.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from medseg.datasets import DatasetError
from medseg.errors import ConfigError
from medseg.io.files import write_atomically

log = logging.getLogger(__name__)

SPLITS_FILE = "splits.json"

Fold = int | Literal["all"]


@dataclass(frozen=True)
class FoldCases:
    """The case ids one fold trains and validates on (``validation`` is empty for ``"all"``)."""

    fold: Fold
    train: tuple[str, ...]
    validation: tuple[str, ...]


def make_splits(case_ids: Sequence[str], *, folds: int, seed: int) -> list[FoldCases]:
    """Split ``case_ids`` into ``folds`` disjoint validation sets (fewer when there are fewer cases).

    Cases are shuffled by a generator seeded with ``seed`` and dealt out in turn,
    so fold sizes differ by at most one. Each fold trains on all other cases.

    Raises:
        DatasetError: fewer than two cases, or repeated case ids.
    """
    ids = sorted(case_ids)
    if len(set(ids)) != len(ids):
        repeated = sorted({c for c in ids if ids.count(c) > 1})
        raise DatasetError(f"case ids must be unique, repeated: {repeated[:5]}")
    if len(ids) < 2:
        raise DatasetError(
            f"cross-validation needs at least 2 training cases, the dataset has {len(ids)}; "
            "train with fold 'all' (no validation) instead"
        )
    count = min(folds, len(ids))
    if count < folds:
        log.warning("only %d cases: using %d folds instead of %d", len(ids), count, folds)
    order = np.random.default_rng(seed).permutation(len(ids))
    validation: list[list[str]] = [[] for _ in range(count)]
    for position, index in enumerate(order):
        validation[position % count].append(ids[index])
    result = []
    for fold, held_out in enumerate(validation):
        held = set(held_out)
        result.append(FoldCases(fold, tuple(c for c in ids if c not in held), tuple(sorted(held_out))))
    return result


def load_or_make_splits(run_dir: Path, case_ids: Sequence[str], *, folds: int, seed: int) -> list[FoldCases]:
    """The splits saved in ``run_dir/splits.json``, made and saved there first if absent.

    Raises:
        DatasetError: the saved splits name other cases than the dataset holds,
            or the file is malformed.
    """
    path = Path(run_dir) / SPLITS_FILE
    if path.exists():
        splits = read_splits(path)
        named = {c for fold in splits for c in (*fold.train, *fold.validation)}
        if named != set(case_ids):
            missing, extra = sorted(set(case_ids) - named), sorted(named - set(case_ids))
            raise DatasetError(
                f"{path}: the saved folds do not match the dataset's cases "
                f"(not in the file: {missing[:5] or 'none'}; not in the dataset: {extra[:5] or 'none'}); "
                "train into a new folder, or delete the file to split again"
            )
        log.info("using the folds saved in %s", path)
        return splits
    splits = make_splits(case_ids, folds=folds, seed=seed)
    write_splits(splits, path)
    return splits


def select_fold(splits: Sequence[FoldCases], fold: Fold) -> FoldCases:
    """One fold of ``splits``; ``"all"`` trains on every case and validates on none.

    Raises:
        ConfigError: a fold number outside the splits.
    """
    if fold == "all":
        every = sorted({c for f in splits for c in (*f.train, *f.validation)})
        return FoldCases("all", tuple(every), ())
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < len(splits):
        raise ConfigError(f"fold must be 'all' or a number from 0 to {len(splits) - 1}, got {fold!r}")
    return splits[fold]


def write_splits(splits: Sequence[FoldCases], path: str | os.PathLike[str]) -> Path:
    """Write splits as nnU-Net does: a list of ``{"train": [...], "val": [...]}``."""
    data = [{"train": list(f.train), "val": list(f.validation)} for f in splits]
    text = json.dumps(data, indent=2) + "\n"
    return write_atomically(path, lambda tmp: tmp.write_text(text))


def read_splits(path: str | os.PathLike[str]) -> list[FoldCases]:
    """Read a splits file written by :func:`write_splits` (or nnU-Net's ``splits_final.json``).

    Raises:
        DatasetError: unreadable, malformed, or a case both trains and validates in one fold.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read the folds ({exc})") from exc
    shape = 'a list of {"train": [case ids], "val": [case ids]}, one per fold'
    if not isinstance(data, list) or not data:
        raise DatasetError(f"{path}: expected {shape}")
    result = []
    for index, entry in enumerate(data):
        if not isinstance(entry, dict) or set(entry) != {"train", "val"}:
            raise DatasetError(f"{path}: fold {index}: expected {shape}")
        train, val = entry["train"], entry["val"]
        if not all(isinstance(v, list) and all(isinstance(c, str) for c in v) for v in (train, val)):
            raise DatasetError(f"{path}: fold {index}: train and val must be lists of case ids")
        both = sorted(set(train) & set(val))
        if both:
            raise DatasetError(f"{path}: fold {index}: cases both train and validate: {both[:5]}")
        result.append(FoldCases(index, tuple(train), tuple(val)))
    return result
