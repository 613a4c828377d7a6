"""Reading and writing volumes: DICOM series, NIfTI, NRRD and MetaImage.

:func:`read_image` and :func:`write_image` pick the format from the path;
:mod:`medseg.io.dicom` holds the series discovery behind DICOM folders.
"""

from __future__ import annotations

import os
from pathlib import Path

from medseg.errors import InputError
from medseg.io.dicom import DicomReadOptions, read_dicom, scan
from medseg.io.itk import ITK_SUFFIXES, read_itk, write_itk
from medseg.io.nifti import NIFTI_SUFFIXES, read_nifti, write_nifti
from medseg.volume import Volume, VolumeKind

IMAGE_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES


def image_format(path: str | os.PathLike[str]) -> str | None:
    """``"nifti"``, ``"itk"`` or None, from the file name's ending."""
    name = os.fspath(path).lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(ITK_SUFFIXES):
        return "itk"
    return None


def read_image(
    path: str | os.PathLike[str],
    *,
    kind: VolumeKind | str = VolumeKind.IMAGE,
    dicom_options: DicomReadOptions | None = None,
) -> Volume:
    """Read a NIfTI/NRRD/MHA file, or the single image series in a DICOM file or folder.

    Raises:
        InputError: missing path or unreadable data (DicomError for DICOM problems).
    """
    fmt = image_format(path)
    if fmt == "nifti":
        return read_nifti(path, kind=kind)
    if fmt == "itk":
        return read_itk(path, kind=kind)
    if not Path(path).exists():
        raise InputError(f"{path}: no such file or folder")
    return read_dicom(path, options=dicom_options)


def write_image(volume: Volume, path: str | os.PathLike[str]) -> Path:
    """Write a volume in the format its path names (.nii[.gz], .nrrd, .mha), atomically."""
    fmt = image_format(path)
    if fmt == "nifti":
        return write_nifti(volume, path)
    if fmt == "itk":
        return write_itk(volume, path)
    raise InputError(f"{path}: unknown output format; use one of {', '.join(IMAGE_SUFFIXES)}")


__all__ = [
    "IMAGE_SUFFIXES",
    "DicomReadOptions",
    "image_format",
    "read_dicom",
    "read_image",
    "read_itk",
    "read_nifti",
    "scan",
    "write_image",
    "write_itk",
    "write_nifti",
]
