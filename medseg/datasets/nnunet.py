"""nnU-Net v2 raw datasets: ``dataset.json``, ``imagesTr/<case>_<XXXX><ending>``, ``labelsTr/<case><ending>``.

Cases are found by listing ``imagesTr`` (and ``imagesTs``, where present); a
case that lacks a channel or its label is still listed, with the missing
file's expected path, so that :func:`medseg.datasets.check_dataset` reports it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medseg.datasets.manifest import dataset_name, parse_channels, parse_label_table, parse_labels, require
from medseg.datasets.model import Case, CaseProblem, Dataset, DatasetError
from medseg.io import IMAGE_SUFFIXES

#: The keys that mark a ``dataset.json`` as nnU-Net v2's.
NNUNET_KEY = "channel_names"


def open_nnunet(folder: Path, description: Mapping[str, Any], manifest: Path) -> Dataset:
    """A dataset from an nnU-Net v2 raw folder whose parsed ``dataset.json`` is ``description``.

    Raises:
        DatasetError: a key is missing or malformed, or there is no ``imagesTr/``.
    """
    channels = parse_channels(require(description, NNUNET_KEY, manifest, 'e.g. {"0": "CT"}'), manifest, NNUNET_KEY)
    labels = parse_labels(require(description, "labels", manifest, 'e.g. {"background": 0, "liver": 1}'), manifest)
    ending = require(description, "file_ending", manifest, 'e.g. ".nii.gz"')
    if not isinstance(ending, str) or ending.lower() not in IMAGE_SUFFIXES:
        raise DatasetError(
            f"{manifest}: 'file_ending' must be one of {', '.join(IMAGE_SUFFIXES)} (3D image files); got {ending!r}"
        )
    if not (folder / "imagesTr").is_dir():
        raise DatasetError(f"{folder}: no imagesTr/ folder; an nnU-Net v2 raw dataset keeps its training images there")
    problems: list[CaseProblem] = []
    cases = _list_cases(folder / "imagesTr", folder / "labelsTr", channels, ending, problems, test=False)
    test_cases: list[Case] = []
    if (folder / "imagesTs").is_dir():
        test_cases = _list_cases(folder / "imagesTs", folder / "labelsTs", channels, ending, problems, test=True)
    problems += _stray_labels(folder / "labelsTr", {c.case_id for c in cases}, ending)
    declared = description.get("numTraining")
    if declared is not None and declared != len(cases):
        problems.append(
            CaseProblem(
                "", str(manifest), f"'numTraining' is {declared!r} but imagesTr/ holds {len(cases)} case(s)", "warning"
            )
        )
    return Dataset(
        root=folder,
        name=dataset_name(description, folder.name),
        layout="nnunet",
        channels=channels,
        labels=labels,
        cases=tuple(cases),
        test_cases=tuple(test_cases),
        manifest=manifest,
        problems=tuple(problems),
        label_table=parse_label_table(description, labels, manifest),
    )


def _list_cases(
    images: Path,
    labels: Path,
    channels: tuple[str, ...],
    ending: str,
    problems: list[CaseProblem],
    *,
    test: bool,
) -> list[Case]:
    pattern = re.compile(rf"^(?P<case>.+)_(?P<channel>\d{{4}}){re.escape(ending)}$")
    found: dict[str, set[int]] = {}
    for entry in sorted(images.iterdir()):
        if entry.name.startswith("."):  # ._* files from macOS, editors' temporaries
            continue
        match = pattern.match(entry.name)
        if match is None:
            problems.append(
                CaseProblem(
                    "", str(entry), f"ignored: not named <case>_<XXXX>{ending} (XXXX: channel index)", "warning"
                )
            )
            continue
        case_id, channel = match["case"], int(match["channel"])
        found.setdefault(case_id, set()).add(channel)
        if channel >= len(channels):
            problems.append(
                CaseProblem(
                    case_id,
                    str(entry),
                    f"channel index {channel} but dataset.json names {len(channels)} channel(s) {list(channels)}",
                )
            )
    cases = []
    for case_id in sorted(found):
        files = tuple(images / f"{case_id}_{c:04d}{ending}" for c in range(len(channels)))
        label: Path | None = labels / f"{case_id}{ending}"
        if test and not label.exists():  # type: ignore[union-attr]
            label = None
        cases.append(Case(case_id, files, label))
    return cases


def _stray_labels(labels: Path, case_ids: set[str], ending: str) -> list[CaseProblem]:
    if not labels.is_dir():
        return []
    return [
        CaseProblem(entry.name[: -len(ending)], str(entry), "label map without images in imagesTr/; ignored", "warning")
        for entry in sorted(labels.iterdir())
        if entry.name.endswith(ending) and not entry.name.startswith(".") and entry.name[: -len(ending)] not in case_ids
    ]
