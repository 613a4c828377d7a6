"""``pacs segment``: query series, pull each, segment it with the batch predictor, push the results back.

For every image series the query finds (SEG, RTSTRUCT, SR and other non-image series
are left out):

1. unless ``force``, the study's SEG (and RTSTRUCT) series in the PACS are inspected: a
   result whose algorithm identification names this model (pipeline name and version,
   which carries a hash of the weights) and that references the series means the
   series is done, and it is skipped;
2. the series is pulled into ``WORK/images/<series>/`` (a completed pull is not repeated);
3. :func:`medseg.workflows.predict.predict` writes ``WORK/results/<series>/<series>.seg.dcm``
   (and ``.rtstruct.dcm``), with its own manifest and ``run.json`` in ``WORK/results``;
4. the SEG/RTSTRUCT files are pushed, and the pulled images removed (unless kept).

``WORK/manifest.csv`` gets one row per series (status ``pushed``, ``skipped`` or
``failed``), updated after each one. A failed series is reported and the run goes
on; running the command again finishes what is missing and pushes nothing twice.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from pydicom.dataset import Dataset

from medseg.errors import ConfigError, MedsegError
from medseg.inference.engine import InferenceSettings, Segmenter
from medseg.io.dicom_outputs import AlgorithmIdentity
from medseg.io.files import write_atomically
from medseg.model_formats import ModelOptions, is_loaded, load_segmenter
from medseg.pacs.client import PacsClient
from medseg.pacs.model import SeriesInfo, SeriesQuery, folder_name
from medseg.workflows.predict import FORMATS, PredictOptions, predict

log = logging.getLogger(__name__)

PUSHED_FORMATS = ("seg", "rtstruct")
MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = (
    "series_uid",
    "study_uid",
    "modality",
    "description",
    "status",
    "outputs",
    "stored",
    "seconds",
    "message",
)
_PULLED = ".pulled"
Status = Literal["pushed", "skipped", "failed"]
#: ``(stage, done, total)``: ``series`` (finished) and ``windows`` (of the current series).
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class SegmentOptions:
    """Settings of :func:`segment_series`.

    Attributes:
        formats: what to write and push: ``seg`` and/or ``rtstruct`` (``nifti`` is written but not pushed).
        force: segment and push again series that already have a result of this model in the PACS.
        keep_images: keep the pulled images in ``WORK/images`` after a series is pushed.
        device: ``auto``, ``cpu`` or ``cuda``.
        inference: overlap, windows per batch, mirroring (None: the model's defaults).
        model_options: nnU-Net folds, checkpoint and orientation (:class:`~medseg.model_formats.ModelOptions`).
    """

    formats: tuple[str, ...] = ("seg",)
    force: bool = False
    keep_images: bool = False
    device: str = "auto"
    inference: InferenceSettings = field(default_factory=InferenceSettings)
    model_options: ModelOptions = field(default_factory=ModelOptions)

    def __post_init__(self) -> None:

        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown:
            raise ConfigError(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
        if not any(f in PUSHED_FORMATS for f in self.formats):
            raise ConfigError("pacs segment pushes seg and/or rtstruct: give --format seg, rtstruct or seg,rtstruct")


@dataclass(frozen=True)
class SeriesResult:
    """What became of one series."""

    series: SeriesInfo
    status: Status
    outputs: tuple[str, ...] = ()
    stored: int = 0
    seconds: float = 0.0
    message: str = ""


@dataclass
class SegmentReport:
    """Every series' result, in query order."""

    work: Path
    results: list[SeriesResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[SeriesResult]:
        return [r for r in self.results if r.status == "failed"]

    def count(self, status: Status) -> int:
        return sum(r.status == status for r in self.results)


def segment_series(
    client: PacsClient,
    query: SeriesQuery,
    *,
    model: str | os.PathLike[str] | Segmenter,
    work: str | os.PathLike[str],
    options: SegmentOptions | None = None,
    progress: Progress | None = None,
) -> SegmentReport:
    """Segment the image series that ``query`` finds in the PACS and push the results back.

    Args:
        client: the PACS (see :func:`medseg.pacs.client.connect`).
        query: which series; non-image series (SEG, RTSTRUCT, SR, ...) are left out.
        model: a model (or list of models to merge), or a loaded segmenter.
        work: the work folder (created): pulled images, results, ``manifest.csv``.
        options: formats, force, device and inference settings.
        progress: ``(stage, done, total)`` callbacks.

    Returns:
        The report; the same rows are in ``WORK/manifest.csv``.

    Raises:
        PacsError: the query itself failed (a failing series is reported, not raised).
        ModelError: the model cannot be loaded.
    """

    started = time.monotonic()
    options = options or SegmentOptions()
    folder = Path(work)
    folder.mkdir(parents=True, exist_ok=True)
    report = SegmentReport(folder)
    series_list = [s for s in client.find_series(query) if s.is_image]
    if not series_list:
        report.seconds = time.monotonic() - started
        return report
    segmenter = (
        model
        if is_loaded(model)
        else load_segmenter(model, device=options.device, settings=options.inference, options=options.model_options)
    )
    identity = segmenter.model_identity
    algorithm = AlgorithmIdentity(name=identity["name"], version=identity["version"])
    predict_options = PredictOptions(
        formats=options.formats, device=options.device, inference=options.inference, overwrite=options.force
    )
    done_in_pacs: dict[str, dict[str, set[str]]] = {}  # study UID -> series UID -> formats present
    for index, series in enumerate(series_list, start=1):
        series_started = time.monotonic()
        try:
            if not options.force:
                if series.study_uid not in done_in_pacs:
                    done_in_pacs[series.study_uid] = existing_results(client, series.study_uid, algorithm)
                present = done_in_pacs[series.study_uid].get(series.series_uid, set())
                wanted = {f for f in options.formats if f in PUSHED_FORMATS}
                if wanted <= present:
                    kinds = ", ".join(sorted(wanted)).upper()
                    result = SeriesResult(series, "skipped", message=f"the PACS has this model's {kinds}")
                    _finish(report, result, progress, index, len(series_list))
                    continue
            result = _segment_one(client, series, folder, segmenter, predict_options, options, progress)
        except MedsegError as exc:
            log.warning("series %s: %s", series.series_uid, exc)
            result = SeriesResult(series, "failed", message=str(exc))
        result = replace(result, seconds=time.monotonic() - series_started)
        _finish(report, result, progress, index, len(series_list))
    report.seconds = time.monotonic() - started
    return report


def existing_results(client: PacsClient, study_uid: str, algorithm: AlgorithmIdentity) -> dict[str, set[str]]:
    """Which series of a study already have a SEG or RTSTRUCT made by ``algorithm`` in the PACS.

    Returns:
        Series Instance UID -> the formats (``seg``, ``rtstruct``) found for it.
    """
    found: dict[str, set[str]] = {}
    for modality, kind in (("SEG", "seg"), ("RTSTRUCT", "rtstruct")):
        for series in client.find_series(SeriesQuery(study_uid=study_uid, modality=modality)):
            for header in client.series_headers(series):
                for uid in result_references(header, algorithm):
                    found.setdefault(uid, set()).add(kind)
    return found


def result_references(header: Dataset, algorithm: AlgorithmIdentity) -> set[str]:
    """The series a SEG or RTSTRUCT refers to, if ``algorithm`` made it (else an empty set).

    A SEG matches when one of its segments names the algorithm (name and version) in its
    Segmentation Algorithm Identification; an RTSTRUCT when one of its ROIs was generated
    by it (ROI Generation Description ``"name version"``).
    """
    modality = str(header.get("Modality", ""))
    if modality == "SEG":
        made_by = any(
            str(item.get("AlgorithmName", "")) == algorithm.name
            and str(item.get("AlgorithmVersion", "")) == algorithm.version
            for segment in header.get("SegmentSequence", None) or []
            for item in segment.get("SegmentationAlgorithmIdentificationSequence", None) or []
        )
        if not made_by:
            return set()
        references = header.get("ReferencedSeriesSequence", None) or []
        return {str(item.SeriesInstanceUID) for item in references if "SeriesInstanceUID" in item}
    if modality == "RTSTRUCT":
        made_by = any(
            str(roi.get("ROIGenerationDescription", "")) == algorithm.description
            for roi in header.get("StructureSetROISequence", None) or []
        )
        if not made_by:
            return set()
        return {
            str(series.SeriesInstanceUID)
            for frame in header.get("ReferencedFrameOfReferenceSequence", None) or []
            for study in frame.get("RTReferencedStudySequence", None) or []
            for series in study.get("RTReferencedSeriesSequence", None) or []
            if "SeriesInstanceUID" in series
        }
    return set()


def _segment_one(
    client: PacsClient,
    series: SeriesInfo,
    work: Path,
    segmenter: Segmenter,
    predict_options,  # medseg.workflows.predict.PredictOptions
    options: SegmentOptions,
    progress: Progress | None,
) -> SeriesResult:

    name = folder_name(series.series_uid)
    images = work / "images" / name
    results = work / "results"
    expected = [results / name / f"{name}.{kind}.dcm" for kind in PUSHED_FORMATS if kind in options.formats]
    if options.force or not all(p.exists() for p in expected):
        _pull(client, series, images)
        report = predict(
            [images],
            results,
            model=segmenter,
            options=predict_options,
            progress=_windows_only(progress),
        )
        mine = [r for r in report.results if r.series_uid == series.series_uid]
        if not mine:
            return SeriesResult(series, "failed", message="no image series found in the pulled files")
        result = mine[0]
        if result.status in ("failed", "skipped"):
            status: Status = "failed" if result.status == "failed" else "skipped"
            return SeriesResult(series, status, message=result.message)
        expected = [Path(p) for p in result.outputs if p.endswith((".seg.dcm", ".rtstruct.dcm"))]
    stored = client.store(expected)
    if not stored.ok:
        reasons = "; ".join(f"{Path(path).name}: {why}" for path, why in stored.failed)
        outputs = tuple(map(str, expected))
        return SeriesResult(series, "failed", outputs, len(stored.stored), message=f"push failed: {reasons}")
    if not options.keep_images and images.exists():
        shutil.rmtree(images, ignore_errors=True)
    log.info("series %s: pushed %d object(s)", series.series_uid, len(stored.stored))
    return SeriesResult(series, "pushed", tuple(map(str, expected)), len(stored.stored))


def _pull(client: PacsClient, series: SeriesInfo, images: Path) -> None:
    """Retrieve the series unless a completed pull is already there."""
    marker = images / _PULLED
    if marker.is_file():
        return
    if images.exists():
        shutil.rmtree(images)
    paths = client.retrieve_series(series, images)
    write_atomically(marker, lambda tmp: tmp.write_text(f"{len(paths)}\n"))


def _windows_only(progress: Progress | None) -> Progress | None:
    """Pass on the sliding-window progress of predict (its scan and case counts are ours to report)."""
    if progress is None:
        return None

    def forward(stage: str, done: int, total: int) -> None:
        if stage == "windows":
            progress(stage, done, total)

    return forward


def _finish(report: SegmentReport, result: SeriesResult, progress: Progress | None, index: int, total: int) -> None:
    report.results.append(result)
    _write_manifest(report.work, report.results)
    if progress is not None:
        progress("series", index, total)


def _write_manifest(work: Path, results: Iterable[SeriesResult]) -> None:
    """Merge this run's rows into ``WORK/manifest.csv`` (rows of other series are kept)."""
    path = work / MANIFEST
    rows: dict[str, dict[str, str]] = {}
    if path.is_file():
        with open(path, newline="") as handle:
            rows = {row["series_uid"]: row for row in csv.DictReader(handle) if row.get("series_uid")}
    for result in results:
        rows[result.series.series_uid] = {
            "series_uid": result.series.series_uid,
            "study_uid": result.series.study_uid,
            "modality": result.series.modality,
            "description": result.series.description,
            "status": result.status,
            "outputs": ";".join(result.outputs),
            "stored": str(result.stored),
            "seconds": f"{result.seconds:.2f}",
            "message": result.message,
        }
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows.values())
    write_atomically(path, lambda tmp: tmp.write_text(text.getvalue()))
