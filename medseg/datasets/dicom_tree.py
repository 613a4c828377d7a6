"""A DICOM study tree as a dataset: image series, each with the RTSTRUCT or SEG that references it.

The layout of a PACS or treatment-planning export: a folder tree of DICOM files and a
``dataset.json`` at its root that declares ``labels`` (and ``label_names`` /
``label_priority``, see :mod:`medseg.io.labels`) but none of nnU-Net's or the Decathlon's
keys. Opening it reads every file's header (not the pixels):

- each RTSTRUCT or SEG is a training case: the series it references is the image (read
  from the folder that holds that series' files), the file is the label;
- each other image series (localizers left out) is a test case;
- a label whose series is not in the tree, or a second label for one series, is a
  warning, and that label is left out.

Case ids are the series folders' paths relative to the root, joined by ``_``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medseg.datasets.manifest import dataset_name, parse_channels, parse_label_table, parse_labels
from medseg.datasets.model import Case, CaseProblem, Dataset, DatasetError
from medseg.io.dicom import DicomSeries, scan
from medseg.io.files import safe_name
from medseg.io.labels import dicom_label_kind, referenced_series

#: The keys that mark a ``dataset.json`` as a DICOM tree's: labels, without any image list.
DICOM_TREE_KEY = "labels"


def holds_dicom(folder: Path) -> bool:
    """True when ``folder`` may be a DICOM tree: no ``imagesTr/`` (nnU-Net's, Decathlon's) and a DICOM file."""
    if (folder / "imagesTr").is_dir():
        return False
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and _is_dicom(Path(root) / name):
                return True
    return False


def _is_dicom(path: Path) -> bool:
    try:
        with path.open("rb") as stream:
            return stream.read(132)[128:] == b"DICM"
    except OSError:
        return False


def open_dicom_tree(folder: Path, description: Mapping[str, Any], manifest: Path) -> Dataset:
    """A dataset from a DICOM tree whose ``dataset.json`` (parsed: ``description``) declares its labels.

    Raises:
        DatasetError: malformed labels or label table, or a tree without any labelled series.
    """
    labels = parse_labels(description[DICOM_TREE_KEY], manifest)
    found = scan(folder)
    series = [s for s in found.volumes() if s.series_uid]
    by_uid = {s.series_uid: s for s in series}
    problems: list[CaseProblem] = []
    labelled: dict[str, Path] = {}
    for skipped in found.skipped:
        path = Path(skipped.path)
        if dicom_label_kind(path) is None:
            continue
        uids = referenced_series(path)
        uid = next((u for u in uids if u in by_uid), None)
        if uid is None:
            shown = ", ".join(uids) or "(none)"
            problems.append(CaseProblem("", str(path), f"references series {shown}, not in the tree", "warning"))
        elif uid in labelled:
            second = f"a second label for series {uid} (also {labelled[uid]}); left out"
            problems.append(CaseProblem("", str(path), second, "warning"))
        else:
            labelled[uid] = path
    if not labelled:
        raise DatasetError(f"{folder}: no RTSTRUCT or SEG that references an image series in the tree")
    ids = _case_ids(folder, series)
    cases, tests = [], []
    for s in series:
        case = Case(ids[s.series_uid], (_series_folder(s),), labelled.get(s.series_uid))  # type: ignore[arg-type]
        (cases if case.label is not None else tests).append(case)
    first = by_uid[next(iter(labelled))]
    if "channels" in description:
        channels = parse_channels(description["channels"], manifest, "channels")
    else:
        channels = (first.header.modality or "0",)
    return Dataset(
        root=folder,
        name=dataset_name(description, folder.name),
        layout="dicom",
        channels=channels,
        labels=labels,
        cases=tuple(cases),
        test_cases=tuple(tests),
        manifest=manifest,
        problems=tuple(problems),
        label_table=parse_label_table(description, labels, manifest),
    )


def _series_folder(series: DicomSeries) -> Path:
    """The deepest folder that holds every file of the series."""
    return Path(os.path.commonpath([os.path.dirname(f.path) for f in series.frames]))


def _case_ids(root: Path, series: list[DicomSeries]) -> dict[str | None, str]:
    ids: dict[str | None, str] = {}
    taken: set[str] = set()
    for s in series:
        folder = _series_folder(s)
        relative = folder.relative_to(root) if folder != root else Path(root.name)
        name = safe_name(*relative.parts)
        if name in taken:
            name = safe_name(name, s.header.series_number, s.series_uid[-8:] if s.series_uid else None)
        taken.add(name)
        ids[s.series_uid] = name
    return ids
