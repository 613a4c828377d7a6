"""``OUT/review.csv``: a reviewer's decision on each case (accepted, rejected, needs-edit), with a note.

One row per case, the latest decision only: ``case,decision,note,time`` (UTC, ISO 8601).
The file is rewritten whole under a temporary name and renamed, so a crash never leaves
half a file, and read again when the review server starts, so a restart loses nothing.
Nothing else in the output folder is touched.
"""

from __future__ import annotations

import csv
import io
import os
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from medseg.errors import InputError
from medseg.io.files import write_atomically

REVIEW_CSV = "review.csv"
DECISIONS = ("accepted", "rejected", "needs-edit")
COLUMNS = ("case", "decision", "note", "time")
#: Longest note kept, in characters.
MAX_NOTE = 2000


@dataclass(frozen=True)
class Decision:
    """One case's review."""

    case: str
    decision: str
    note: str = ""
    time: str = ""


class DecisionBook:
    """The decisions of one output folder, kept in memory and in ``review.csv`` (thread-safe)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._decisions = read_decisions(self.path)

    def all(self) -> dict[str, Decision]:
        """Case -> its latest decision."""
        with self._lock:
            return dict(self._decisions)

    def record(self, case: str, decision: str, note: str = "") -> Decision:
        """Set ``case``'s decision and rewrite the file.

        Raises:
            InputError: the decision is not one of :data:`DECISIONS`, or the note is too long.
        """
        if decision not in DECISIONS:
            raise InputError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
        if len(note) > MAX_NOTE:
            raise InputError(f"the note has {len(note)} characters; at most {MAX_NOTE} are kept")
        entry = Decision(
            case, decision, " ".join(note.split()), datetime.now(timezone.utc).isoformat(timespec="seconds")
        )
        with self._lock:
            self._decisions[case] = entry
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(asdict(d) for d in self._decisions.values())
            write_atomically(self.path, lambda tmp: tmp.write_text(text.getvalue(), encoding="utf-8"))
        return entry


def read_decisions(path: str | os.PathLike[str]) -> dict[str, Decision]:
    """The decisions in a ``review.csv`` by case (empty when there is none; a later row wins).

    Raises:
        InputError: the file exists but is not a review file.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"case", "decision"} <= set(reader.fieldnames):
                raise InputError(f"{path}: not a review file (expected the columns {', '.join(COLUMNS)})")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: unreadable: {exc}") from None
    return {
        row["case"]: Decision(row["case"], row.get("decision") or "", row.get("note") or "", row.get("time") or "")
        for row in rows
        if row.get("case")
    }
