"""Datasets given as a list of files: a CSV table or a JSON list.

CSV columns: ``image`` (one channel) or ``image_<channel>`` (one per channel,
in column order, e.g. ``image_T2,image_ADC``), ``label`` (empty for a test
case) and optionally ``case_id``; other columns are ignored with a warning.

JSON: a list of ``{"image": path or [paths], "label": path or null, "case_id": ...}``,
or an object ``{"name": ..., "channels": [...], "labels": {...}, "cases": [...]}``.

Channel names and labels of a CSV (or a bare JSON list) may come from a
sidecar ``<list name>.dataset.json`` holding ``{"name", "channels", "labels"}``.
Relative paths are relative to the list file; an image may be a DICOM series folder,
a label a DICOM SEG or RT Structure Set (or a folder holding one), whose ROI names
become labels by ``label_names`` and ``label_priority`` (:mod:`medseg.io.labels`).
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.datasets.manifest import (
    LABEL_TABLE_KEYS,
    dataset_name,
    parse_channels,
    parse_label_table,
    parse_labels,
    read_json,
    stem,
)
from medseg.datasets.model import Case, CaseProblem, Dataset, DatasetError

#: ``cases.csv`` -> ``cases.dataset.json``
SIDECAR_SUFFIX = ".dataset.json"
_OBJECT_KEYS = ("name", "channels", "labels", *LABEL_TABLE_KEYS, "cases")
_ENTRY_KEYS = ("case_id", "image", "label")


@dataclass(frozen=True)
class _Row:
    where: str  # "list.csv:7" or "list.json: cases[3]", for messages
    images: tuple[str, ...]
    label: str | None
    case_id: str | None


def open_list(path: Path) -> Dataset:
    """A dataset from a ``.csv`` or ``.json`` list of files.

    Raises:
        DatasetError: the list is malformed (the message names the line or entry).
    """
    problems: list[CaseProblem] = []
    column_channels: tuple[str, ...] | None = None
    if path.suffix.lower() == ".csv":
        rows, column_channels = _read_csv(path, problems)
        meta, meta_path = _sidecar(path)
    else:
        data = read_json(path)
        if isinstance(data, list):
            rows, (meta, meta_path) = _json_rows(data, path, "", problems), _sidecar(path)
        elif isinstance(data, Mapping):
            unknown = [k for k in data if k not in _OBJECT_KEYS]
            if unknown:
                raise DatasetError(f"{path}: unknown key(s) {unknown}; a list object holds {list(_OBJECT_KEYS)}")
            if not isinstance(data.get("cases"), list):
                raise DatasetError(f'{path}: missing key \'cases\' (a list of {{"image": ..., "label": ...}})')
            rows, meta, meta_path = _json_rows(data["cases"], path, "cases", problems), data, path
        else:
            raise DatasetError(
                f"{path}: expected a JSON list of cases or an object with 'cases', got {type(data).__name__}"
            )
    if not rows:
        raise DatasetError(f"{path}: lists no cases")
    channels = _channels(rows, meta, meta_path, column_channels)
    labels = parse_labels(meta["labels"], meta_path) if "labels" in meta else {}
    folder = path.parent
    ids = _case_ids(rows, folder)
    cases, test_cases = [], []
    for row, case_id in zip(rows, ids):
        images = tuple(_resolve(folder, p) for p in row.images)
        if row.label:
            cases.append(Case(case_id, images, _resolve(folder, row.label)))
        else:
            test_cases.append(Case(case_id, images, None))
    if not cases:
        problems.append(CaseProblem("", str(path), "no case has a label, so there is nothing to train on", "warning"))
    return Dataset(
        root=folder,
        name=dataset_name(meta, path.stem),
        layout="list",
        channels=channels,
        labels=labels,
        cases=tuple(cases),
        test_cases=tuple(test_cases),
        manifest=path,
        problems=tuple(problems),
        label_table=parse_label_table(meta, labels, meta_path),
    )


def _read_csv(path: Path, problems: list[CaseProblem]) -> tuple[list[_Row], tuple[str, ...] | None]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as stream:
            reader = csv.reader(stream)
            table = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: not a readable CSV file ({exc})") from exc
    table = [(line, [cell.strip() for cell in row]) for line, row in table if any(cell.strip() for cell in row)]
    if not table:
        raise DatasetError(f"{path}: empty; expected a header such as 'case_id,image,label'")
    header = table[0][1]
    repeated = [c for c, n in Counter(header).items() if n > 1]
    if repeated:
        raise DatasetError(f"{path}: column(s) {repeated} appear more than once in the header")
    image_columns = [c for c in header if c == "image" or c.startswith("image_")]
    if not image_columns:
        raise DatasetError(f"{path}: no 'image' column (or 'image_<channel>' columns) in the header {header}")
    if "image" in image_columns and len(image_columns) > 1:
        raise DatasetError(f"{path}: use either one 'image' column or 'image_<channel>' columns, not both: {header}")
    ignored = [c for c in header if c not in ("case_id", "label") and c not in image_columns]
    if ignored:
        problems.append(
            CaseProblem(
                "",
                str(path),
                f"column(s) {ignored} ignored (known: case_id, image or image_<channel>, label)",
                "warning",
            )
        )
    rows = []
    for line, cells in table[1:]:
        values = dict(zip(header, cells + [""] * (len(header) - len(cells))))
        where = f"{path}:{line}"
        images = tuple(values[c] for c in image_columns)
        empty = [c for c, v in zip(image_columns, images) if not v]
        if empty:
            raise DatasetError(f"{where}: no file in column(s) {empty}")
        rows.append(_Row(where, images, values.get("label") or None, values.get("case_id") or None))
    names = None if image_columns == ["image"] else tuple(c[len("image_") :] for c in image_columns)
    if names is not None and not all(names):
        raise DatasetError(f"{path}: a column named 'image_' needs a channel name after the underscore")
    return rows, names


def _json_rows(entries: list[Any], path: Path, key: str, problems: list[CaseProblem]) -> list[_Row]:
    rows = []
    ignored: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"{path}: {key or ''}[{index}]"
        if not isinstance(entry, Mapping):
            raise DatasetError(f'{where} must be an object like {{"image": ..., "label": ...}}, got {entry!r}')
        ignored.update(k for k in entry if k not in _ENTRY_KEYS)
        image = entry.get("image")
        images = (image,) if isinstance(image, str) else tuple(image) if isinstance(image, list) else ()
        if not images or not all(isinstance(p, str) and p.strip() for p in images):
            raise DatasetError(f"{where}: 'image' must be a path or a list of paths (one per channel), got {image!r}")
        label, case_id = entry.get("label"), entry.get("case_id")
        if label is not None and not isinstance(label, str):
            raise DatasetError(f"{where}: 'label' must be a path or null, got {label!r}")
        if case_id is not None and (not isinstance(case_id, (str, int)) or isinstance(case_id, bool)):
            raise DatasetError(f"{where}: 'case_id' must be text, got {case_id!r}")
        rows.append(
            _Row(
                where,
                tuple(p.strip() for p in images),
                label.strip() if label else None,
                str(case_id) if case_id is not None else None,
            )
        )
    if ignored:
        problems.append(
            CaseProblem("", str(path), f"key(s) {sorted(ignored)} ignored (known: {', '.join(_ENTRY_KEYS)})", "warning")
        )
    return rows


def _sidecar(path: Path) -> tuple[Mapping[str, Any], Path]:
    sidecar = path.with_name(path.stem + SIDECAR_SUFFIX)
    if not sidecar.is_file():
        return {}, sidecar
    meta = read_json(sidecar)
    if not isinstance(meta, Mapping):
        raise DatasetError(f"{sidecar}: expected an object with 'channels' and/or 'labels'")
    known = ("name", "channels", "labels", *LABEL_TABLE_KEYS)
    unknown = [k for k in meta if k not in known]
    if unknown:
        raise DatasetError(f"{sidecar}: unknown key(s) {unknown}; it may hold {', '.join(map(repr, known))}")
    return meta, sidecar


def _channels(
    rows: list[_Row], meta: Mapping[str, Any], meta_path: Path, column_channels: tuple[str, ...] | None
) -> tuple[str, ...]:
    if "channels" in meta:
        channels = parse_channels(meta["channels"], meta_path, "channels")
        if column_channels is not None and len(column_channels) != len(channels):
            raise DatasetError(
                f"{meta_path}: names {len(channels)} channel(s) {list(channels)} but the list has "
                f"{len(column_channels)} image column(s)"
            )
    elif column_channels is not None:
        channels = column_channels
    else:
        channels = tuple(str(i) for i in range(len(rows[0].images)))
    for row in rows:
        if len(row.images) not in (1, len(channels)):
            raise DatasetError(
                f"{row.where}: {len(row.images)} image file(s) for {len(channels)} channel(s) {list(channels)}; "
                "give one file per channel, or one file holding them all"
            )
    return channels


def _case_ids(rows: list[_Row], folder: Path) -> list[str]:
    """``case_id`` where given, else the first image's name, else (where names repeat) its relative path."""
    names = [row.case_id or stem(row.images[0]) for row in rows]
    repeats = Counter(n for n, row in zip(names, rows) if not row.case_id)
    ids = []
    for name, row in zip(names, rows):
        if not row.case_id and repeats[name] > 1:
            relative = Path(row.images[0])
            if relative.is_absolute():
                try:
                    relative = relative.relative_to(folder)
                except ValueError:
                    pass
            name = "_".join([*relative.parent.parts, stem(relative)]).strip("/_")
        ids.append(name)
    seen: dict[str, str] = {}
    for name, row in zip(ids, rows):
        if name in seen:
            raise DatasetError(
                f"{row.where}: case {name!r} is listed twice (also at {seen[name]}); give each row its own case_id"
            )
        seen[name] = row.where
    return ids


def _resolve(folder: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else folder / path
