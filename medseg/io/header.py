"""What an image file holds, from its header alone: fast enough to list a large tree of scans."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from medseg.errors import InputError
from medseg.geometry import Geometry
from medseg.io.itk import ITK_SUFFIXES
from medseg.io.nifti import NIFTI_SUFFIXES


@dataclass(frozen=True)
class ImageHeader:
    """An image file's grid and voxel type, as :func:`medseg.io.read_image` would give them.

    Attributes:
        path: the file.
        format: ``"nifti"`` or ``"itk"`` (NRRD, MHA, MHD).
        geometry: the grid, in LPS.
        channels: values per voxel.
        dtype: the voxel type the data read as.
        modality: from a JSON sidecar beside the file (``medseg convert`` writes one), else None.
    """

    path: str
    format: str
    geometry: Geometry
    channels: int
    dtype: str
    modality: str | None = None


def read_image_header(path: str | os.PathLike[str]) -> ImageHeader:
    """Read a NIfTI/NRRD/MHA file's header (its voxels are not loaded).

    Raises:
        InputError: not a readable image of a known format, or not 3D/4D.
    """
    name = os.fspath(path).lower()
    if name.endswith(NIFTI_SUFFIXES):
        fmt, (geometry, channels, dtype) = "nifti", _nifti(path)
    elif name.endswith(ITK_SUFFIXES):
        fmt, (geometry, channels, dtype) = "itk", _itk(path)
    else:
        raise InputError(f"{path}: not a NIfTI, NRRD or MHA file")
    return ImageHeader(os.fspath(path), fmt, geometry, channels, dtype, _sidecar_modality(Path(path)))


def _nifti(path: str | os.PathLike[str]) -> tuple[Geometry, int, str]:
    try:
        image = nib.load(os.fspath(path))
        shape = image.shape
        corner = np.asanyarray(image.dataobj[(slice(0, 1),) * len(shape)])  # the type read_nifti gives, one voxel read
    except Exception as exc:  # nibabel raises several types for damaged files
        raise InputError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    if len(shape) == 5 and shape[3] == 1:  # (x, y, z, t=1, c): vector images
        shape = (*shape[:3], shape[4])
    if len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) not in (3, 4):
        raise InputError(f"{path}: expected a 3D or 4D image, got shape {shape}")
    channels = shape[3] if len(shape) == 4 else 1
    return Geometry.from_ras_affine(shape[:3], image.affine), channels, str(corner.dtype)


def _itk(path: str | os.PathLike[str]) -> tuple[Geometry, int, str]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(os.fspath(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise InputError(f"{path}: not a readable image ({first})") from exc
    size, spacing, origin = list(reader.GetSize()), list(reader.GetSpacing()), list(reader.GetOrigin())
    direction = np.reshape(reader.GetDirection(), (reader.GetDimension(),) * 2)
    if reader.GetDimension() == 2:  # read_itk stacks it into one slice
        size, spacing, origin = [*size, 1], [*spacing, 1.0], [*origin, 0.0]
        direction = np.pad(direction, ((0, 1), (0, 1)))
        direction[2, 2] = 1.0
    elif reader.GetDimension() != 3:
        raise InputError(f"{path}: expected a 3D image, got {reader.GetDimension()}D")
    channels = reader.GetNumberOfComponents()
    voxel = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID(), channels)  # its numpy type, as read_itk's
    dtype = sitk.GetArrayViewFromImage(voxel).dtype
    return Geometry.from_spacing(size, spacing, origin, direction), channels, str(dtype)


def _sidecar_modality(path: Path) -> str | None:
    """The ``modality`` of ``<stem>.json`` beside the file, if there is one that says."""
    stem = next((path.name[: -len(s)] for s in NIFTI_SUFFIXES + ITK_SUFFIXES if path.name.lower().endswith(s)), "")
    try:
        modality = json.loads(path.with_name(stem + ".json").read_text()).get("modality")
    except (OSError, ValueError, AttributeError):
        return None
    return modality if isinstance(modality, str) and modality else None
