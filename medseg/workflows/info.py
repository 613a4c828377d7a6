"""The inventory of a path: its DICOM series and image files, described from headers, and what was skipped.

``medseg info`` prints it; a notebook calls :func:`inventory` for the same list::

    from medseg.workflows.info import inventory

    for entry in inventory("/data/study").entries:
        print(entry["folder"], entry["modality"], entry["size"], entry["problems"])
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.errors import InputError
from medseg.io import image_format
from medseg.io.dicom import find_files, scan_files
from medseg.io.header import read_image_header

#: ``(stage, done, total)``; the stage is ``scan`` (DICOM files read).
Progress = Callable[[str, int, int], None]


@dataclass
class Inventory:
    """What a path holds.

    Attributes:
        entries: one dict per DICOM series (``kind: "dicom series"``) and image file (``"image file"``):
            folder (relative to the path), modality, size, spacing, orientation, UIDs, problems, ...
        skipped: ``{"path", "reason"}`` per file that is not an image.
    """

    entries: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


def inventory(path: str | os.PathLike[str], *, progress: Progress | None = None) -> Inventory:
    """The series and image files under ``path`` (a folder, a tree, a DICOM file or an image file).

    Raises:
        FileNotFoundError: nothing at ``path``.
        InputError: a single image file whose header cannot be read.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    root = path if path.is_dir() else path.parent
    if path.is_file() and image_format(path):
        return Inventory([_image_entry(path, root)])
    files = find_files(path)
    found = scan_files(
        [f for f in files if not image_format(f)],
        progress=(lambda done, total: progress("scan", done, total)) if progress else None,
    )
    found_series = [
        {**s.to_dict(), "kind": "dicom series", "folder": _folder(s.frames[0].path, root)} for s in found.series
    ]
    result = Inventory(found_series, [{"path": s.path, "reason": s.reason} for s in found.skipped])
    for image in (f for f in files if image_format(f)):
        try:
            result.entries.append(_image_entry(Path(image), root))
        except InputError as exc:
            result.skipped.append({"path": image, "reason": str(exc).removeprefix(f"{image}: ")})
    return result


def _image_entry(path: Path, root: Path) -> dict[str, Any]:
    """An image file as ``info`` lists it, from its header (the voxels are not read)."""
    header = read_image_header(path)
    return {
        "kind": "image file",
        "path": str(path),
        "folder": _folder(path, root),
        "format": header.format,
        "series_uid": None,
        "modality": header.modality,
        "description": path.name,
        "num_slices": header.geometry.shape[2],
        **header.geometry.to_dict(),
        "channels": header.channels,
        "dtype": header.dtype,
        "is_localizer": False,
        "problems": [] if header.geometry.is_orthogonal else [{"code": "sheared", "message": "sheared grid"}],
    }


def _folder(file: str | os.PathLike[str], root: Path) -> str:
    """The folder holding ``file``, relative to ``root`` (``.`` for root itself)."""
    return Path(os.path.relpath(Path(file).parent, root)).as_posix()
