"""Reading the files that describe a dataset: ``dataset.json`` and list files.

Every error names the file and the key, shows the bad value and says what was
expected.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medseg.datasets.model import DatasetError
from medseg.errors import ConfigError
from medseg.io import IMAGE_SUFFIXES
from medseg.io.labels import LabelTable


def read_json(path: Path) -> Any:
    """Parse a JSON file.

    Raises:
        DatasetError: missing, unreadable or not valid JSON (with line and column).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})") from exc


def require(data: Mapping[str, Any], key: str, where: str | os.PathLike[str], expected: str) -> Any:
    """``data[key]``, or a :class:`DatasetError` naming where the key is missing and what it should hold."""
    if key not in data:
        raise DatasetError(f"{os.fspath(where)}: missing key {key!r} ({expected})")
    return data[key]


def parse_channels(value: Any, path: Path, key: str) -> tuple[str, ...]:
    """Channel names from ``{"0": "CT", "1": "PET"}`` (index -> name) or a list of names.

    Raises:
        DatasetError: not that shape, or the indices are not 0, 1, 2, ...
    """
    example = '{"0": "CT"} or ["T2", "ADC"]'
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    if not isinstance(value, Mapping) or not value:
        raise DatasetError(f"{path}: {key!r} must name the channels, like {example}; got {value!r}")
    try:
        indexed = {int(k): v for k, v in value.items()}
    except ValueError:
        raise DatasetError(f"{path}: {key!r} keys must be channel indices 0, 1, ...; got {list(value)}") from None
    if sorted(indexed) != list(range(len(indexed))):
        raise DatasetError(f"{path}: {key!r} must number channels 0, 1, ... without gaps; got {list(value)}")
    names = [indexed[i] for i in range(len(indexed))]
    if not all(isinstance(n, str) and n for n in names):
        raise DatasetError(f"{path}: {key!r} values must be channel names, like {example}; got {value!r}")
    return tuple(names)


def parse_labels(value: Any, path: Path, key: str = "labels") -> dict[int, str]:
    """Label number -> name, background (0) left out.

    Accepts nnU-Net's ``{"background": 0, "liver": 1}`` and the Decathlon's
    ``{"0": "background", "1": "liver"}``.

    Raises:
        DatasetError: another shape, region-based labels (lists of numbers),
            negative or repeated numbers.
    """
    example = '{"background": 0, "liver": 1} or {"0": "background", "1": "liver"}'
    if not isinstance(value, Mapping):
        raise DatasetError(f"{path}: {key!r} must map names to numbers, like {example}; got {value!r}")
    regions = {k: v for k, v in value.items() if isinstance(v, (list, tuple))}
    if regions:
        name, numbers = next(iter(regions.items()))
        raise DatasetError(
            f"{path}: {key!r} holds region-based labels ({name!r}: {numbers}), which medseg does not train; "
            'give each label its own number, e.g. {"background": 0, "edema": 1, "tumour": 2}'
        )
    if all(_is_int(v) for v in value.values()):
        pairs = [(int(v), str(k)) for k, v in value.items()]
    elif all(isinstance(v, str) for v in value.values()) and all(_is_int_text(k) for k in value):
        pairs = [(int(k), v) for k, v in value.items()]
    else:
        raise DatasetError(f"{path}: {key!r} must map names to numbers, like {example}; got {dict(value)!r}")
    numbers = [n for n, _ in pairs]
    if any(n < 0 for n in numbers):
        raise DatasetError(f"{path}: {key!r} numbers must be 0 or more; got {sorted(numbers)}")
    repeated = sorted({n for n in numbers if numbers.count(n) > 1})
    if repeated:
        raise DatasetError(f"{path}: {key!r} gives label number(s) {repeated} more than one name")
    return {n: name for n, name in sorted(pairs) if n != 0}


def dataset_name(description: Mapping[str, Any], fallback: str) -> str:
    """The description's ``name`` when it is a non-empty string, else ``fallback``."""
    name = description.get("name")
    return name if isinstance(name, str) and name else fallback


def image_suffix(name: str) -> str:
    """The image-format ending of a file name (``".nii.gz"``, ``".nrrd"``, ...), else ``""``."""
    lower = name.lower()
    return next((s for s in sorted(IMAGE_SUFFIXES, key=len, reverse=True) if lower.endswith(s)), "")


def stem(path: str | os.PathLike[str]) -> str:
    """A file or folder name without its image-format ending."""
    name = Path(path).name
    return name[: len(name) - len(image_suffix(name))] or name


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_int_text(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lstrip("-").isdigit()


#: Keys of a dataset description that say how DICOM labels' ROI / segment names become labels.
LABEL_TABLE_KEYS = ("label_names", "label_priority")


def parse_label_table(description: Mapping[str, Any], labels: dict[int, str], path: Path) -> LabelTable | None:
    """The label table of ``label_names`` (label name -> names or patterns) and ``label_priority`` (names).

    Raises:
        DatasetError: malformed entries, or names of labels the description does not declare.
    """
    names, priority = description.get("label_names"), description.get("label_priority")
    if names is None and priority is None:
        return None
    if names is not None and not isinstance(names, Mapping):
        raise DatasetError(f'{path}: \'label_names\' must map label names to names, like {{"liver": ["liver*", "leber"]}}')
    if priority is not None and not (isinstance(priority, list) and all(isinstance(p, str) for p in priority)):
        raise DatasetError(f"{path}: 'label_priority' must list label names, the one that wins an overlap first")
    try:
        return LabelTable.build(labels, names, priority, where=str(path))
    except ConfigError as exc:
        raise DatasetError(str(exc)) from exc
