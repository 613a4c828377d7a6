"""Markdown tables over ``planner_robustness.py``'s JSON lines (``planner_robustness.py --table FILE``).

One row per dataset and arm (the ``--double-check`` rerun, and runs of other minutes, get
rows of their own), over the seeds of one role: the **report** seeds by default (100, 101,
102: never used to decide anything), the development seeds with ``--role dev`` (lines
written before roles existed count as dev). Per seed the latest line wins; lines carrying
``"reverted"`` (a change measured and taken back) are skipped. A row gives:

* seeds: how many ran (and how many of them failed; a failed seed enters no figure);
* steps, training minutes (mean, and the longest: the time limit kept), seconds before the
  clock (medseg's ``plan``; the recipes' statistics, and monai-cpu's caching), predict
  seconds (wall / in the cases), means over the seeds;
* mean Dice: the mean over seeds of each seed's mean over labels (itself the mean over the
  test cases), with its range over the seeds; per label, the mean over seeds;
* HD95: per label, the **median over every test case of every seed** where it is defined
  (both prediction and reference hold the label; ``missed`` counts the cases where the
  prediction lacks it, which the median cannot see); the row's figure is the mean of the
  labels' medians, so each label counts once, as in the mean Dice.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

#: The arms in the order tables list them; lines of the old ``monai`` arm were the tutorial's defaults.
ARMS = ("medseg", "medseg-ref", "monai-cpu", "nnunet", "monai-tutorial")
LEGACY_ARMS = {"monai": "monai-tutorial"}


def number(value: Any) -> float | None:
    """A JSON number as float; ``None``, NaN and text as ``None``."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _mean(values: Iterable[float | None]) -> float | None:
    finite = [v for v in values if v is not None]
    return sum(finite) / len(finite) if finite else None


def read_lines(path: Path) -> list[dict]:
    """The JSON lines of ``path``, without the reverted ones."""
    lines = []
    for index, text in enumerate(path.read_text().splitlines(), start=1):
        if text.strip():
            try:
                line = json.loads(text)
            except json.JSONDecodeError as exc:
                raise SystemExit(f"{path}:{index}: not a JSON line ({exc.msg})") from None
            if not line.get("reverted"):  # a change measured and taken back: kept in the file, not in the table
                lines.append(line)
    return lines


def seed_of(line: dict) -> int | None:
    """The line's seed; older lines: the seed their dataset was generated with."""
    if line.get("seed") is not None:
        return int(line["seed"])
    seed = (line.get("generator") or {}).get("seed")
    return None if seed is None else int(seed)


def group_lines(lines: Iterable[dict], role: str) -> dict[tuple, list[dict]]:
    """Lines of ``role`` by (dataset, arm, check, minutes), the latest per seed."""
    groups: dict[tuple, dict[int | None, dict]] = {}
    for line in lines:
        if (line.get("role") or "dev") != role:
            continue
        arm = LEGACY_ARMS.get(line.get("arm", "?"), line.get("arm", "?"))
        if arm == "medseg-ref":  # an earlier checkout: named by its commit
            arm = f"medseg {(line.get('settings') or {}).get('commit') or 'ref'}"
        dataset = line.get("dataset", "?")
        if ((line.get("generator") or {}).get("version") or 1) < 2:  # every case LPS, before the stored orders
            dataset += " (v1 data)"
        key = (dataset, arm, line.get("check") or "", number(line.get("minutes")))
        groups.setdefault(key, {})[seed_of(line)] = line
    return {key: list(by_seed.values()) for key, by_seed in groups.items()}


def before_clock(line: dict) -> float | None:
    """Seconds the arm spent before its clock started: planning, statistics, caching (where recorded)."""
    settings, timing = line.get("settings") or {}, line.get("timing") or {}
    parts = [number(settings.get("plan_seconds")), number(settings.get("stats_seconds"))]
    parts += [number(timing.get("stats_seconds")), number(timing.get("cache_seconds"))]
    found = [p for p in parts if p is not None]
    return sum(found) if found else None


def hd95_medians(lines: Sequence[dict]) -> tuple[dict[str, float | None], dict[str, int]]:
    """Per label: the median HD95 over every case of every line where it is defined, and the cases missed."""
    values: dict[str, list[float]] = {}
    missed: dict[str, int] = {}
    for line in lines:
        for label, scores in (line.get("per_case") or {}).items():
            values.setdefault(label, []).extend(v for v in map(number, scores.get("hd95_mm", [])) if v is not None)
            missed[label] = missed.get(label, 0) + sum(s == "missed" for s in scores.get("status", []))
    return {k: statistics.median(v) if v else None for k, v in values.items()}, missed


def table_row(key: tuple, lines: Sequence[dict]) -> str:
    """One Markdown row: a dataset and arm over its seeds."""
    dataset, arm, check, minutes = key
    ok = [line for line in lines if line.get("ok", not line.get("error"))]
    failed = len(lines) - len(ok)
    seeds = f"{len(lines)}" + (f" ({failed} failed)" if failed else "")
    name = f"{arm} ({check})" if check else arm
    if not ok:
        error = " ".join(str(lines[-1].get("error")).split()).replace("|", "\\|")
        cells = ["-"] * 4 + [f"failed: {error[:100]}{'...' if len(error) > 100 else ''}"] + ["-"] * 3
        return f"| {dataset} | {name} | {fmt(minutes, 'g')} | {seeds} | " + " | ".join(cells) + " |"
    means = [number(line.get("mean_dice")) for line in ok]
    finite = [m for m in means if m is not None]
    dice_range = f" ({min(finite):.3f}-{max(finite):.3f})" if len(finite) > 1 else ""
    labels = list(dict.fromkeys(label for line in ok for label in line.get("dice") or {}))
    per_label = ", ".join(
        f"{label} {fmt(_mean(number((line.get('dice') or {}).get(label)) for line in ok), '.3f')}" for label in labels
    )
    medians, missed = hd95_medians(ok)  # lines older than the per-case scores have none
    hd95 = ", ".join(
        f"{label} {fmt(medians.get(label), '.1f')}" + (f" ({missed[label]} missed)" if missed.get(label) else "")
        for label in labels
        if label in medians
    )
    train = [number(line.get("train_minutes")) for line in ok]
    cases = [number((line.get("timing") or {}).get("predict_cases_seconds")) for line in ok]
    longest = max((t for t in train if t is not None), default=None)
    return (
        f"| {dataset} | {name} | {fmt(minutes, 'g')} | {seeds} | {fmt(_mean(line.get('steps') for line in ok), ',.0f')} "
        f"| {fmt(_mean(train), '.1f')} ({fmt(longest, '.1f')}) | {fmt(_mean(before_clock(line) for line in ok), '.0f')} "
        f"| {fmt(_mean(number(line.get('predict_seconds')) for line in ok), '.0f')} / {fmt(_mean(cases), '.1f')} "
        f"| {fmt(_mean(finite), '.3f')}{dice_range} | {per_label or '-'} "
        f"| {fmt(_mean(medians.values()), '.1f')} | {hd95 or '-'} |"
    )


def markdown_table(path: Path, role: str = "report") -> str:
    """The results in the JSON-lines file ``path`` of seeds of ``role``, one row per dataset and arm."""
    from robustness_data import SPECS

    groups = group_lines(read_lines(path), role)
    if not groups:
        other = "dev" if role == "report" else "report"
        return f"(no {role} lines in {path}; `--table FILE --role {other}` for the {other} seeds)"
    order = {name: i for i, name in enumerate(SPECS)}
    keys = sorted(
        groups,
        key=lambda k: (order.get(k[0], len(order)), k[0], ARMS.index(k[1]) if k[1] in ARMS else 9, k[2], k[3] or 0),
    )
    rows = [
        (
            f"Seeds of role {role!r}. Dice: mean over seeds (range); HD95: median over cases and seeds, "
            "mean of the labels' medians."
        ),
        "",
        (
            "| dataset | arm | minutes | seeds | steps | train min (max) | s before the clock | predict s (wall / cases) "
            "| mean Dice (range) | Dice per label | HD95 (mm) | HD95 per label, median (mm) |"
        ),
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    rows += [table_row(key, groups[key]) for key in keys]
    return "\n".join(rows)
