"""review.csv: one row per case, the latest decision, rewritten atomically and read back."""

from __future__ import annotations

import csv

import pytest

from medseg.errors import InputError
from medseg.review.decisions import DecisionBook, read_decisions


def test_decisions_are_written_replaced_and_read_back(tmp_path):
    path = tmp_path / "review.csv"
    book = DecisionBook(path)
    book.record("alpha", "rejected", "spleen  split\nin three")
    book.record("bravo", "accepted")
    book.record("alpha", "needs-edit", 'liver, "upper" edge')
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["case"], r["decision"], r["note"]) for r in rows] == [
        ("alpha", "needs-edit", 'liver, "upper" edge'),
        ("bravo", "accepted", ""),
    ]
    assert all(r["time"].endswith("+00:00") for r in rows)
    again = DecisionBook(path).all()
    assert again["alpha"].decision == "needs-edit" and again["bravo"].decision == "accepted"
    assert [p.name for p in tmp_path.iterdir()] == ["review.csv"]  # no temporary file left
    assert book.record("charlie", "rejected", "a\nb").note == "a b"  # one line per case in the file


def test_unknown_decisions_and_foreign_files_are_refused(tmp_path):
    book = DecisionBook(tmp_path / "review.csv")
    with pytest.raises(InputError, match="accepted, rejected, needs-edit"):
        book.record("alpha", "maybe")
    assert not (tmp_path / "review.csv").exists()
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="not a review file"):
        read_decisions(tmp_path / "other.csv")
