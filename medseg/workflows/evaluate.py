"""Score predicted label maps against references, case by case and label by label.

:func:`evaluate` pairs prediction and reference files by case id, scores every
pair with :func:`medseg.metrics.score_labels` and summarises each label over
the cases; :func:`write_evaluation` writes the rows as CSV with a JSON summary
and a box plot beside it.

Case ids: ``X.nii.gz`` (or ``.nii``, ``.nrrd``, ``.mha``, ``.seg.dcm``, ``.dcm``)
is case ``X``; a folder ``<name>/`` holding ``<name>.nii.gz`` or
``<name>.seg.dcm`` (what ``medseg predict`` writes for a DICOM series) is case
``<name>``, the NIfTI preferred. A trailing ``_0000`` (nnU-Net's channel
suffix) is dropped. Cases on one side only are listed, not scored.

References may be DICOM SEG or RT Structure Sets. An RTSTRUCT's contours are
filled on the prediction's grid, and its ROIs become labels by name: by the label
table of a ``dataset.json`` beside the references (``labels`` with
``label_names`` / ``label_priority``), else the prediction's segment names (a
SEG's) or that ``dataset.json``'s label names, matched as :mod:`medseg.io.labels`
does; ROIs that match none are left out with a warning.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.datasets.manifest import parse_label_table, parse_labels, read_json
from medseg.errors import ConfigError, InputError, MedsegError
from medseg.io import image_format, read_image
from medseg.io.files import atomic_path
from medseg.io.labels import LabelTable, dicom_label_kind, read_label
from medseg.metrics import DEFAULT_TOLERANCE_MM, METRICS, LabelScores, LabelStatus, score_labels
from medseg.parallel import ordered_map
from medseg.volume import Volume

logger = logging.getLogger(__name__)

#: Label-map endings in order of preference when one case has several files.
LABEL_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".seg.dcm", ".dcm")
#: Distance between matching voxels (mm) up to which a prediction and its reference share a grid.
GRID_TOLERANCE_MM = 0.01
_CHANNEL_SUFFIX = re.compile(r"_\d{4}$")

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class EvaluationRow:
    """The scores of one label of one case, with the files they came from."""

    case_id: str
    name: str
    scores: LabelScores
    prediction: Path
    reference: Path

    def as_dict(self) -> dict[str, Any]:
        """One CSV row: case, label, name, status, the metrics, volumes and the two files."""
        values = self.scores.as_dict()
        return {
            "case": self.case_id,
            "label": values.pop("label"),
            "name": self.name,
            "status": values.pop("status"),
            **{m: values.pop(m) for m in METRICS},
            **values,
            "prediction": os.fspath(self.prediction),
            "reference": os.fspath(self.reference),
        }


@dataclass(frozen=True)
class CaseFailure:
    """A paired case that could not be scored, and why."""

    case_id: str
    message: str


@dataclass(frozen=True)
class MetricSummary:
    """Mean and median of one metric over the cases where it is defined (``count``)."""

    mean: float
    median: float
    count: int


@dataclass(frozen=True)
class LabelSummary:
    """One label over all scored cases: how often each status occurred, and each metric's summary."""

    label: int
    name: str
    cases: int
    statuses: dict[str, int]
    metrics: dict[str, MetricSummary]


@dataclass(frozen=True)
class Evaluation:
    """The result of :func:`evaluate`.

    Attributes:
        cases: ids of the scored cases, in order.
        rows: one per scored case and label, cases in id order.
        labels: the scored labels, number -> name.
        tolerance_mm: tolerance of the normalised surface Dice.
        failures: paired cases that could not be read or compared.
        unmatched_predictions: case ids with a prediction but no reference.
        unmatched_references: case ids with a reference but no prediction.
        warnings: everything else worth telling (duplicates, labels only in predictions).
    """

    cases: tuple[str, ...]
    rows: tuple[EvaluationRow, ...]
    labels: dict[int, str]
    tolerance_mm: float
    failures: tuple[CaseFailure, ...] = ()
    unmatched_predictions: tuple[str, ...] = ()
    unmatched_references: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    def summary(self) -> list[LabelSummary]:
        """Per label: statuses and, for every metric, mean and median over the cases where it is defined."""
        out = []
        for label, name in self.labels.items():
            scores = [row.scores for row in self.rows if row.scores.label == label]
            statuses = {s.value: sum(x.status is s for x in scores) for s in LabelStatus}
            metrics = {}
            for metric in METRICS:
                values = np.array([getattr(x, metric) for x in scores], dtype=np.float64)
                values = values[np.isfinite(values)]
                metrics[metric] = MetricSummary(
                    mean=float(values.mean()) if values.size else math.nan,
                    median=float(np.median(values)) if values.size else math.nan,
                    count=int(values.size),
                )
            out.append(LabelSummary(label, name, len(scores), statuses, metrics))
        return out

    def summary_dict(self) -> dict[str, Any]:
        """The JSON summary: settings, counts, per-label summaries, unmatched and failed cases (NaN -> null)."""
        return _json_safe(
            {
                "tolerance_mm": self.tolerance_mm,
                "cases": len(self.cases),
                "labels": [
                    {
                        "label": s.label,
                        "name": s.name,
                        "cases": s.cases,
                        "statuses": s.statuses,
                        "metrics": {m: vars(v) for m, v in s.metrics.items()},
                    }
                    for s in self.summary()
                ],
                "failed": [{"case": f.case_id, "error": f.message} for f in self.failures],
                "unmatched_predictions": list(self.unmatched_predictions),
                "unmatched_references": list(self.unmatched_references),
                "warnings": list(self.warnings),
            }
        )


def evaluate(
    predictions: str | os.PathLike[str],
    references: str | os.PathLike[str],
    *,
    labels: Sequence[int | str] | None = None,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
    workers: int = 1,
    progress: Progress | None = None,
) -> Evaluation:
    """Score predicted label maps against reference label maps.

    Args:
        predictions: a label file (NIfTI, NRRD, MHA or DICOM SEG) or a folder of them
            (or of ``medseg predict`` case folders).
        references: a label file (NIfTI, NRRD, MHA, DICOM SEG or RTSTRUCT) or a folder of them
            (e.g. nnU-Net's ``labelsTs``).
        labels: label numbers or names to score; default: every label present in
            the references. Names come from the references' segments (DICOM SEG)
            or a ``dataset.json`` in or above the reference folder.
        tolerance_mm: tolerance of the normalised surface Dice.
        workers: processes scoring cases side by side.
        progress: ``callback(stage, done, total)``.

    Raises:
        InputError: a path is missing or holds no label maps.
        ConfigError: a label name is unknown, or a setting is out of range.
    """
    if not tolerance_mm >= 0:
        raise ConfigError(f"tolerance must be 0 mm or more, got {tolerance_mm}")
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    if labels is not None and not len(labels):
        raise ConfigError("no labels given; leave labels out to score every label of the references")
    predictions, references = Path(predictions), Path(references)
    warnings: list[str] = []
    found_p = find_cases(predictions, warnings=warnings)
    found_r = find_cases(references, warnings=warnings)
    if predictions.is_file() and references.is_file():  # one pair: names need not agree
        found_p = {next(iter(found_r)): found_p[next(iter(found_p))]}
    pairs = sorted(set(found_p) & set(found_r))
    names, table = _dataset_labels(references)
    numbers = _numbers(labels, names)
    tasks = [_Task(case, found_p[case], found_r[case], numbers, tolerance_mm, names, table) for case in pairs]
    outcomes = []
    for done, outcome in enumerate(ordered_map(_score_case, tasks, workers=workers, min_items=2), 1):
        outcomes.append(outcome)
        if progress:
            progress("evaluate", done, len(tasks))
    for outcome in outcomes:
        for number, name in outcome.names.items():
            names.setdefault(number, name)
        warnings.extend(outcome.warnings)
    if labels is None:
        chosen = sorted({n for o in outcomes for n in o.in_reference})
        extra = sorted({n for o in outcomes for n in o.in_prediction} - set(chosen))
        if extra:
            warnings.append(
                f"label(s) {extra} appear in predictions only and are not scored; pass --labels to score them"
            )
    else:
        chosen = numbers if numbers is not None else _resolve(labels, names)
    evaluation = Evaluation(
        cases=tuple(o.case_id for o in outcomes if not o.error),
        rows=tuple(_rows(outcomes, chosen, names, tolerance_mm)),
        labels={n: names.get(n, f"label {n}") for n in chosen},
        tolerance_mm=tolerance_mm,
        failures=tuple(CaseFailure(o.case_id, o.error) for o in outcomes if o.error),
        unmatched_predictions=tuple(sorted(set(found_p) - set(found_r))),
        unmatched_references=tuple(sorted(set(found_r) - set(found_p))),
        warnings=tuple(warnings),
    )
    logger.info(
        "scored %d case(s), %d label(s); %d failed, %d prediction(s) and %d reference(s) unmatched",
        len(evaluation.cases),
        len(chosen),
        len(evaluation.failures),
        len(evaluation.unmatched_predictions),
        len(evaluation.unmatched_references),
    )
    return evaluation


def find_cases(path: Path, *, warnings: list[str] | None = None) -> dict[str, Path]:
    """Case id -> label file for a file or a folder (see the module docs for the naming rules).

    Raises:
        InputError: ``path`` does not exist, or is a folder without label maps.
    """
    if path.is_file():
        return {case_id(path): path}
    if not path.is_dir():
        raise InputError(f"{path}: no such file or folder")
    candidates: dict[str, list[Path]] = {}
    for entry in sorted(path.iterdir()):
        if entry.name.startswith("."):
            continue
        chosen = _case_folder_file(entry) if entry.is_dir() else entry if _label_suffix(entry.name) else None
        if chosen is not None:
            candidates.setdefault(case_id(entry), []).append(chosen)
    if not candidates:
        raise InputError(f"{path}: no label maps ({', '.join(LABEL_SUFFIXES)}) or case folders found")
    found = {}
    for case, files in candidates.items():
        files.sort(key=lambda p: LABEL_SUFFIXES.index(_label_suffix(p.name)))
        if len(files) > 1 and warnings is not None:
            warnings.append(f"{path}: case {case} has {len(files)} files; using {files[0].name}")
        found[case] = files[0]
    return found


def case_id(path: str | os.PathLike[str]) -> str:
    """The case a label file or case folder belongs to: its name without ending or ``_0000`` suffix."""
    name = Path(path).name
    stem = name[: len(name) - len(_label_suffix(name))] or name
    return _CHANNEL_SUFFIX.sub("", stem) or stem


def write_evaluation(evaluation: Evaluation, csv_path: str | os.PathLike[str]) -> list[Path]:
    """Write the rows as CSV, the summary as JSON and a box plot as PNG (same stem), atomically.

    NaN is an empty CSV field and ``null`` in JSON.

    Returns:
        The CSV, JSON and PNG paths.
    """
    import csv
    import io

    csv_path = Path(csv_path)
    json_path, png_path = csv_path.with_suffix(".json"), csv_path.with_suffix(".png")
    rows = [row.as_dict() for row in evaluation.rows]
    buffer = io.StringIO()
    fields = list(rows[0]) if rows else ["case", "label", "name", "status", *METRICS]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _csv_value(v) for k, v in row.items()} for row in rows)
    with atomic_path(csv_path) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(evaluation.summary_dict(), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    with atomic_path(png_path) as tmp:
        _box_plot(evaluation, tmp)
    return [csv_path, json_path, png_path]


# -- scoring one case (module level, so worker processes can run it) ---------------------


@dataclass(frozen=True)
class _Task:
    case_id: str
    prediction: Path
    reference: Path
    labels: list[int] | None
    tolerance_mm: float
    names: dict[int, str] = field(default_factory=dict)  # known label names: an RTSTRUCT's ROIs are matched to them
    table: LabelTable | None = None  # the references' dataset.json label table (label_names, label_priority)


@dataclass(frozen=True)
class _Outcome:
    task: _Task
    scores: tuple[LabelScores, ...] = ()
    names: dict[int, str] = field(default_factory=dict)
    in_reference: frozenset[int] = frozenset()
    in_prediction: frozenset[int] = frozenset()
    error: str = ""
    warnings: tuple[str, ...] = ()

    @property
    def case_id(self) -> str:
        return self.task.case_id


def _score_case(task: _Task) -> _Outcome:
    warnings: tuple[str, ...] = ()
    try:
        if image_format(task.reference) is None and dicom_label_kind(task.reference) == "RTSTRUCT":
            # contours: filled on the prediction's grid
            prediction = read_label_map(task.prediction)
            names = {s.number: s.name for s in prediction.segments} or task.names
            table = task.table or (LabelTable.build(names) if names else None)
            reading = read_label(task.reference, reference=prediction.geometry, table=table)
            reference = reading.volume
            if reading.unmatched:
                left = ", ".join(repr(n) for n in reading.unmatched)
                warnings = (f"{task.reference}: ROI(s) {left} match no label of the prediction; not scored",)
        else:
            reference = read_label_map(task.reference)
            prediction = read_label_map(task.prediction, reference=reference)
        scores = score_labels(
            prediction,
            reference,
            labels=task.labels,
            tolerance_mm=task.tolerance_mm,
            grid_tolerance_mm=GRID_TOLERANCE_MM,
        )
    except (MedsegError, OSError) as exc:
        logger.warning("case %s not scored: %s", task.case_id, exc)
        return _Outcome(task, error=str(exc))
    names = {s.number: s.name for s in prediction.segments}
    names.update({s.number: s.name for s in reference.segments})
    return _Outcome(
        task,
        scores=tuple(scores),
        names=names,
        in_reference=frozenset(s.label for s in scores if s.status in (LabelStatus.OK, LabelStatus.MISSED)),
        in_prediction=frozenset(s.label for s in scores if s.status in (LabelStatus.OK, LabelStatus.SPURIOUS)),
        warnings=warnings,
    )


def read_label_map(path: Path, *, reference: Volume | None = None) -> Volume:
    """Read a label file: NIfTI/NRRD/MHA, or a DICOM SEG resampled onto ``reference``'s grid when given.

    Raises:
        InputError: unreadable, or not a label map (DicomError for DICOM problems).
    """
    if image_format(path) is None:  # DICOM: a SEG (.seg.dcm, .dcm or no ending)
        try:
            from medseg.io.seg import read_seg  # highdicom: loaded for SEG only
        except ImportError:
            raise InputError(f"{path}: reading DICOM SEG needs medseg.io.seg, which this installation lacks") from None
        return read_seg(path, reference=reference.geometry if reference is not None else None)
    return read_image(path, kind="label")


def _rows(
    outcomes: Sequence[_Outcome], chosen: Sequence[int], names: Mapping[int, str], tolerance_mm: float
) -> list[EvaluationRow]:
    rows = []
    for outcome in outcomes:
        if outcome.error:
            continue
        by_label = {s.label: s for s in outcome.scores}
        task = outcome.task
        for number in chosen:
            scores = by_label.get(number) or LabelScores.absent(number, tolerance_mm)
            name = names.get(number, f"label {number}")
            rows.append(EvaluationRow(task.case_id, name, scores, task.prediction, task.reference))
    return rows


# -- labels --------------------------------------------------------------------------------


def _numbers(labels: Sequence[int | str] | None, names: Mapping[int, str]) -> list[int] | None:
    """Requested label numbers when they can be known before reading (numbers, or names in dataset.json)."""
    if labels is None:
        return None
    try:
        return _resolve(labels, names)
    except ConfigError:
        return None  # names that only the references' segments can resolve: score every label


def _resolve(labels: Sequence[int | str], names: Mapping[int, str]) -> list[int]:
    by_name = {name.lower(): number for number, name in names.items()}
    out = []
    for item in labels:
        text = str(item).strip()
        if text.isdigit():
            number = int(text)
        elif text.lower() in by_name:
            number = by_name[text.lower()]
        else:
            known = ", ".join(f"{n}={name}" for n, name in sorted(names.items())) or "none"
            raise ConfigError(f"unknown label {text!r}; known labels: {known}")
        if number < 1:
            raise ConfigError(f"label numbers start at 1 (0 is the background), got {number}")
        if number not in out:
            out.append(number)
    if not out:
        raise ConfigError("no labels given")
    return out


def _dataset_labels(references: Path) -> tuple[dict[int, str], LabelTable | None]:
    """Label names, and the label table where it has ``label_names`` or ``label_priority``, from a
    ``dataset.json`` in the reference folder or its parent (nnU-Net, Decathlon, a DICOM tree)."""

    folder = references if references.is_dir() else references.parent
    for candidate in (folder / "dataset.json", folder.parent / "dataset.json"):
        if candidate.is_file():
            try:
                data = read_json(candidate)
                if not isinstance(data, dict):
                    return {}, None
                names = parse_labels(data.get("labels", {}), candidate)
                return names, parse_label_table(data, names, candidate)
            except InputError as exc:
                logger.warning("label names not read: %s", exc)
                return {}, None
    return {}, None


# -- files ---------------------------------------------------------------------------------


def _label_suffix(name: str) -> str:
    lower = name.lower()
    return next((s for s in LABEL_SUFFIXES if lower.endswith(s)), "")


def _case_folder_file(folder: Path) -> Path | None:
    """``<name>/<name>.nii.gz`` (preferred) or ``<name>/<name>.seg.dcm``, as ``medseg predict`` writes."""
    for suffix in LABEL_SUFFIXES:
        candidate = folder / f"{folder.name}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _csv_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return value


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _box_plot(evaluation: Evaluation, path: Path) -> None:
    """One panel per metric (Dice, NSD, HD95, ASSD), one box per label, drawn with the Agg backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = (
        ("dice", "Dice"),
        ("nsd", f"NSD @ {evaluation.tolerance_mm:g} mm"),
        ("hd95_mm", "HD95 (mm)"),
        ("assd_mm", "ASSD (mm)"),
    )
    labels = list(evaluation.labels.items())
    width = max(8.0, 2.0 + 0.5 * len(labels) * 2)
    figure = Figure(figsize=(width, 6.5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, 2)
    for ax, (metric, title) in zip(axes.flat, panels):
        data = []
        for number, _ in labels:
            values = np.array([getattr(r.scores, metric) for r in evaluation.rows if r.scores.label == number])
            data.append(values[np.isfinite(values)])
        positions = [i for i, values in enumerate(data, 1) if values.size]
        if positions:
            ax.boxplot([data[p - 1] for p in positions], positions=positions, widths=0.6, showfliers=False)
        jitter = np.random.default_rng(0)
        for position, values in enumerate(data, 1):  # every case as a dot, so small samples show
            ax.scatter(position + jitter.uniform(-0.15, 0.15, values.size), values, s=9, alpha=0.6, color="tab:blue")
        many = len(labels) > 6
        ax.set_xticks(
            range(1, len(labels) + 1),
            [name for _, name in labels],
            rotation=45 if many else 0,
            ha="right" if many else "center",
        )
        ax.set_xlim(0.4, len(labels) + 0.6)
        ax.set_title(title)
        if metric in ("dice", "nsd"):
            ax.set_ylim(-0.02, 1.02)
        ax.grid(axis="y", alpha=0.3)
    figure.suptitle(f"{len(evaluation.cases)} case(s)")
    figure.savefig(path, format="png")
