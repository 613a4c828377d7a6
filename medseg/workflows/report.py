"""The batch report of a prediction output folder: one HTML file to find the cases that went wrong.

:func:`write_report` reads the folder (:func:`medseg.review.batch.read_batch`), scores the
masks against references with :func:`medseg.workflows.evaluate.evaluate` when asked, and
writes the page :func:`medseg.review.report.render_report` lays out, atomically.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from medseg.io.files import write_atomically
from medseg.review.batch import Batch, read_batch
from medseg.review.report import render_report
from medseg.workflows.evaluate import Progress, evaluate

logger = logging.getLogger(__name__)

REPORT_HTML = "report.html"


@dataclass(frozen=True)
class ReportResult:
    """What :func:`write_report` wrote and found.

    Attributes:
        path: the HTML file.
        counts: cases, done, failed, flagged.
        warnings: what the scoring could not do (cases without a reference, failures).
    """

    path: Path
    counts: dict[str, int]
    warnings: tuple[str, ...] = field(default=())


def write_report(
    folder: str | os.PathLike[str],
    *,
    reference: str | os.PathLike[str] | None = None,
    output: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> ReportResult:
    """Write the HTML report of a ``medseg predict`` output folder.

    Args:
        folder: the output folder (``manifest.csv``, ``run.json``, masks, previews).
        reference: reference label maps (a folder, as for ``medseg evaluate``): adds Dice and
            HD95 per label to the table.
        output: the HTML file (default ``folder/report.html``).
        progress: ``callback(stage, done, total)`` while scoring.

    Raises:
        InputError: the folder is not a prediction output folder, or the references cannot be read.
    """
    folder = Path(folder)
    batch = read_batch(folder)
    scores: dict[str, dict[str, dict[str, float | None]]] = {}
    warnings: list[str] = []
    if reference is not None:
        evaluation = evaluate(folder, reference, progress=progress)
        names = _label_names(batch)
        for row in evaluation.rows:
            name = names.get(row.scores.label, row.name) if row.name == f"label {row.scores.label}" else row.name
            scores.setdefault(row.case_id, {})[name] = {"dice": row.scores.dice, "hd95_mm": row.scores.hd95_mm}
        warnings.extend(evaluation.warnings)
        warnings.extend(f"{f.case_id}: not scored: {f.message}" for f in evaluation.failures)
        if evaluation.unmatched_predictions:
            warnings.append(f"{len(evaluation.unmatched_predictions)} case(s) without a reference, not scored")
    page = render_report(batch, scores=scores, reference=os.fspath(reference) if reference else "")
    path = Path(output) if output is not None else folder / REPORT_HTML
    write_atomically(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    logger.info("report of %d case(s) written to %s (%d bytes)", len(batch.cases), path, len(page))
    return ReportResult(path, batch.counts(), tuple(warnings))


def _label_names(batch: Batch) -> dict[int, str]:
    """Label number -> name, for references that name no labels (a NIfTI mask has no segment table):
    from a case's ``.stats.json`` (number and name), else the order of the batch's volumes (label order)."""
    for case in batch.cases:
        if case.mask is None:
            continue
        stats = Path(str(case.mask).removesuffix(".nii.gz") + ".stats.json")
        try:
            rows = json.loads(stats.read_text(encoding="utf-8"))["labels"]
            return {int(r["label"]): str(r["name"]) for r in rows}
        except (OSError, ValueError, TypeError, KeyError):
            continue
    return {number: name for number, name in enumerate(batch.labels, start=1)}
