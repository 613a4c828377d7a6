"""Open a dataset where it lies, recognising its layout."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from medseg.datasets.dicom_tree import DICOM_TREE_KEY, holds_dicom, open_dicom_tree
from medseg.datasets.lists import open_list
from medseg.datasets.manifest import read_json
from medseg.datasets.model import Dataset, DatasetError
from medseg.datasets.msd import MSD_KEY, open_msd
from medseg.datasets.nnunet import NNUNET_KEY, open_nnunet

log = logging.getLogger(__name__)

_LAYOUTS = (
    "nnU-Net v2 raw (dataset.json with 'channel_names', imagesTr/, labelsTr/), "
    "Medical Segmentation Decathlon (dataset.json with 'modality' and 'training'), "
    "a DICOM study tree (DICOM files with RTSTRUCT/SEG labels, and a dataset.json with 'labels'), "
    "a list file (.csv or .json)"
)


def open_dataset(path: str | os.PathLike[str]) -> Dataset:
    """Describe the dataset at ``path``: a dataset folder, its ``dataset.json``, or a list file.

    Only names files; nothing is read until :func:`load_case` or :func:`check_dataset`.

    Raises:
        DatasetError: (an :class:`~medseg.errors.InputError`) ``path`` does not exist or
            matches no layout (the message says which were looked for and what was
            missing), or its description is malformed (the message names the key).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if path.is_dir():
        manifest = path / "dataset.json"
        if not manifest.is_file():
            raise DatasetError(f"{path}: not a dataset: {_missing(path)}. Looked for {_LAYOUTS}")
    elif path.suffix.lower() == ".csv":
        return _opened(open_list(path))
    elif path.suffix.lower() == ".json":
        manifest = path
    else:
        raise DatasetError(f"{path}: not a dataset folder or list file. Looked for {_LAYOUTS}")
    description = read_json(manifest)
    if isinstance(description, Mapping) and NNUNET_KEY in description:
        return _opened(open_nnunet(manifest.parent, description, manifest))
    if isinstance(description, Mapping) and MSD_KEY in description:
        return _opened(open_msd(manifest.parent, description, manifest))
    if manifest.name == "dataset.json" and isinstance(description, Mapping) and DICOM_TREE_KEY in description:
        if holds_dicom(manifest.parent):
            return _opened(open_dicom_tree(manifest.parent, description, manifest))
    if manifest.name == "dataset.json":
        raise DatasetError(
            f"{manifest}: neither nnU-Net v2's (no key {NNUNET_KEY!r}) nor the Decathlon's (no key {MSD_KEY!r})"
        )
    return _opened(open_list(manifest))


def _missing(folder: Path) -> str:
    """What the folder lacks, with a hint where it holds something close."""
    notes = ["it holds no dataset.json"]
    if (folder / "imagesTr").is_dir():
        notes.append("imagesTr/ is there: add an nnU-Net v2 dataset.json (channel_names, labels, file_ending)")
    lists = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in (".csv", ".json") and p.is_file())
    if lists:
        notes.append(f"to use a list, open the file itself ({', '.join(lists[:3])})")
    return "; ".join(notes)


def _opened(dataset: Dataset) -> Dataset:
    log.info(
        "opened %s dataset %r: %d training and %d test case(s), channels %s, %d label(s)",
        dataset.layout,
        dataset.name,
        len(dataset.cases),
        len(dataset.test_cases),
        list(dataset.channels),
        len(dataset.labels),
    )
    return dataset
