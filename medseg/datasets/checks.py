"""Checking a whole dataset before training: every case read, every problem collected."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from medseg.datasets.loading import GRID_TOLERANCE_MM, inspect_case
from medseg.datasets.model import CaseProblem, Dataset

log = logging.getLogger(__name__)

#: Called as ``progress(cases_done, cases_total)`` after each case.
Progress = Callable[[int, int], None]


def check_dataset(
    dataset: Dataset, *, progress: Progress | None = None, tolerance_mm: float = GRID_TOLERANCE_MM
) -> list[CaseProblem]:
    """Read every training and test case and report all that is wrong, without stopping at the first.

    Errors: missing or unreadable files, a wrong number of channels, channel
    grids that differ, a label grid that differs from the image's (by more than
    ``tolerance_mm``; the message gives the distance in mm), label values that
    are not declared (listed), non-integer or negative labels. Warnings: empty
    label maps, labels a list does not declare, RTSTRUCT ROIs / SEG segments that
    match no label, and what opening the dataset noticed (stray files, a
    ``numTraining`` that does not match). Notes: for each DICOM label, which ROI
    became which label, and overlaps a label priority resolved.

    Returns:
        The problems, case by case in dataset order, after those found on opening;
        empty for a clean dataset. Pass them to :func:`require_valid` to raise on errors.
    """
    problems = list(dataset.problems)
    found_values: set[int] = set()
    cases = dataset.all_cases
    for done, case in enumerate(cases, start=1):
        inspection = inspect_case(dataset, case, tolerance_mm=tolerance_mm)
        problems.extend(inspection.problems)
        found_values.update(inspection.label_values)
        if progress is not None:
            progress(done, len(cases))
    found_values.discard(0)
    if not dataset.labels and found_values:
        problems.append(
            CaseProblem(
                "",
                str(dataset.manifest or dataset.root),
                f"labels are not declared; the label maps hold {sorted(found_values)} "
                f"(named label_<n> until declared in a 'labels' mapping)",
                "warning",
            )
        )
    errors = sum(p.severity == "error" for p in problems)
    warnings = sum(p.severity == "warning" for p in problems)
    log.info("checked %d case(s) of %r: %d error(s), %d warning(s)", len(cases), dataset.name, errors, warnings)
    return problems


def infer_labels(dataset: Dataset, *, progress: Progress | None = None) -> Dataset:
    """The dataset with labels named ``label_<n>`` after the values its label maps hold.

    For lists that declare no labels; a dataset that declares labels is returned
    as it is. Unreadable label maps are skipped (:func:`check_dataset` reports them).
    """
    if dataset.labels:
        return dataset
    labelled = [c for c in dataset.all_cases if c.label is not None]
    values: set[int] = set()
    for done, case in enumerate(labelled, start=1):
        label_only = dataclasses.replace(case, images=())
        values.update(inspect_case(dataset, label_only).label_values)
        if progress is not None:
            progress(done, len(labelled))
    return dataclasses.replace(dataset, labels={v: f"label_{v}" for v in sorted(values) if v})
