"""Folds: disjoint, covering, deterministic from the seed, saved once and reused."""

from __future__ import annotations

import json

import pytest

from medseg.datasets import DatasetError
from medseg.errors import ConfigError
from medseg.training.splits import load_or_make_splits, make_splits, read_splits, select_fold

CASES = [f"case_{n:02d}" for n in range(11)]


def test_folds_are_disjoint_cover_every_case_and_differ_by_at_most_one():
    splits = make_splits(CASES, folds=5, seed=1)
    assert len(splits) == 5
    held_out = [set(fold.validation) for fold in splits]
    assert set().union(*held_out) == set(CASES) and sum(map(len, held_out)) == len(CASES)
    assert {len(v) for v in held_out} == {2, 3}
    for fold in splits:
        assert set(fold.train) == set(CASES) - set(fold.validation)


def test_the_seed_decides_the_folds_not_the_order_of_the_cases():
    assert make_splits(CASES, folds=5, seed=1) == make_splits(list(reversed(CASES)), folds=5, seed=1)
    assert make_splits(CASES, folds=5, seed=1) != make_splits(CASES, folds=5, seed=2)


def test_fewer_cases_than_folds_gives_one_case_per_fold():
    splits = make_splits(CASES[:3], folds=5, seed=0)
    assert [len(fold.validation) for fold in splits] == [1, 1, 1]
    with pytest.raises(DatasetError, match="at least 2 training cases"):
        make_splits(CASES[:1], folds=5, seed=0)


def test_splits_are_saved_and_then_reused_even_when_edited(tmp_path):
    first = load_or_make_splits(tmp_path, CASES, folds=5, seed=1)
    saved = json.loads((tmp_path / "splits.json").read_text())
    assert saved[0] == {"train": list(first[0].train), "val": list(first[0].validation)}
    custom = [{"train": CASES[3:], "val": CASES[:3]}, {"train": CASES[:3], "val": CASES[3:]}]
    (tmp_path / "splits.json").write_text(json.dumps(custom))
    again = load_or_make_splits(tmp_path, CASES, folds=5, seed=99)
    assert len(again) == 2 and again[0].validation == tuple(CASES[:3])


def test_saved_splits_that_name_other_cases_are_refused(tmp_path):
    load_or_make_splits(tmp_path, CASES, folds=5, seed=1)
    with pytest.raises(DatasetError, match=r"not in the file: \['new_case'\]"):
        load_or_make_splits(tmp_path, [*CASES, "new_case"], folds=5, seed=1)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "cannot read the folds"),
        ('{"train": []}', "expected a list"),
        ('[{"train": ["a"], "val": ["a"]}]', "both train and validate"),
        ('[{"train": ["a"], "validation": ["b"]}]', "expected a list"),
    ],
)
def test_malformed_splits_files_are_refused(tmp_path, content, message):
    (tmp_path / "splits.json").write_text(content)
    with pytest.raises(DatasetError, match=message):
        read_splits(tmp_path / "splits.json")


def test_select_fold():
    splits = make_splits(CASES, folds=5, seed=1)
    assert select_fold(splits, 2) is splits[2]
    every = select_fold(splits, "all")
    assert every.train == tuple(CASES) and every.validation == ()
    with pytest.raises(ConfigError, match="from 0 to 4"):
        select_fold(splits, 5)
