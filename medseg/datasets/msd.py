"""Medical Segmentation Decathlon datasets: ``dataset.json`` listing ``training`` and ``test`` files.

Multi-channel images are single 4D files whose 4th dimension holds the
channels in the order of ``modality``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medseg.datasets.manifest import dataset_name, parse_channels, parse_labels, require, stem
from medseg.datasets.model import Case, Dataset, DatasetError

#: The keys that mark a ``dataset.json`` as the Decathlon's.
MSD_KEY = "training"


def open_msd(folder: Path, description: Mapping[str, Any], manifest: Path) -> Dataset:
    """A dataset from a Decathlon folder whose parsed ``dataset.json`` is ``description``.

    Test cases are labelled where ``labelsTs/`` holds a file of the image's name.

    Raises:
        DatasetError: a key is missing or malformed, or two cases share an image name.
    """
    channels = parse_channels(require(description, "modality", manifest, 'e.g. {"0": "CT"}'), manifest, "modality")
    labels = parse_labels(require(description, "labels", manifest, 'e.g. {"0": "background", "1": "liver"}'), manifest)
    training = require(description, MSD_KEY, manifest, 'a list of {"image": ..., "label": ...}')
    if not isinstance(training, list):
        raise DatasetError(f'{manifest}: \'training\' must be a list of {{"image": ..., "label": ...}}')
    cases = []
    for index, entry in enumerate(training):
        where = f"{manifest}: training[{index}]"
        if not isinstance(entry, Mapping):
            raise DatasetError(f"{where} must be an object with 'image' and 'label', got {entry!r}")
        image = _path(folder, require(entry, "image", where, "the image file"), f"{where}.image")
        label = _path(folder, require(entry, "label", where, "the label map"), f"{where}.label")
        cases.append(Case(stem(image), (image,), label))
    tests = description.get("test", [])
    if not isinstance(tests, list):
        raise DatasetError(f"{manifest}: 'test' must be a list of image paths, got {tests!r}")
    test_cases = []
    for index, entry in enumerate(tests):
        value = entry.get("image") if isinstance(entry, Mapping) else entry  # MONAI datalists use objects
        image = _path(folder, value, f"{manifest}: test[{index}]")
        ground_truth = folder / "labelsTs" / image.name
        test_cases.append(Case(stem(image), (image,), ground_truth if ground_truth.exists() else None))
    _require_unique(cases + test_cases, manifest)
    return Dataset(
        root=folder,
        name=dataset_name(description, folder.name),
        layout="msd",
        channels=channels,
        labels=labels,
        cases=tuple(cases),
        test_cases=tuple(test_cases),
        manifest=manifest,
    )


def _path(folder: Path, value: Any, where: str) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{where} must be a file path, got {value!r}")
    path = Path(value.strip()).expanduser()
    return path if path.is_absolute() else folder / path


def _require_unique(cases: list[Case], manifest: Path) -> None:
    seen: dict[str, Path] = {}
    for case in cases:
        if case.case_id in seen:
            raise DatasetError(
                f"{manifest}: two cases are named {case.case_id!r} ({seen[case.case_id]} and {case.images[0]}); "
                "image file names must differ"
            )
        seen[case.case_id] = case.images[0]
