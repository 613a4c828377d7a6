"""NRRD, MetaImage and other ITK formats through SimpleITK (which is LPS, as we are)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medseg.errors import GeometryError, InputError
from medseg.geometry import Geometry
from medseg.io.files import write_atomically
from medseg.io.nifti import label_dtype
from medseg.volume import Volume, VolumeKind

ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
#: Header-only formats we read but do not write: the atomic rename would move the
#: header and leave its data file under a temporary name. Maps to the one-file form.
_DETACHED = {".mhd": ".mha", ".nhdr": ".nrrd"}


def read_itk(path: str | os.PathLike[str], *, kind: VolumeKind | str = VolumeKind.IMAGE) -> Volume:
    """Read an NRRD/MHA/MHD file; vector pixels become channels.

    Raises:
        InputError: SimpleITK cannot read it, or it is not 3D.
    """
    try:
        image = sitk.ReadImage(os.fspath(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise InputError(f"{path}: not a readable image ({first})") from exc
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    if image.GetDimension() != 3:
        raise InputError(f"{path}: expected a 3D image, got {image.GetDimension()}D")
    data = sitk.GetArrayViewFromImage(image).copy()  # (k, j, i[, c])
    array = data.transpose(2, 1, 0)[np.newaxis] if data.ndim == 3 else data.transpose(3, 2, 1, 0)
    geometry = Geometry.from_spacing(
        array.shape[1:], image.GetSpacing(), image.GetOrigin(), np.reshape(image.GetDirection(), (3, 3))
    )
    return Volume(array, geometry, kind=kind, path=os.fspath(path))


def write_itk(volume: Volume, path: str | os.PathLike[str]) -> Path:
    """Write a volume with SimpleITK (atomically; compressed where the format allows).

    Raises:
        GeometryError: the grid is sheared, which ITK images cannot represent.
        InputError: the path names a header-only format (.mhd, .nhdr).
    """
    suffix = Path(path).suffix.lower()
    if suffix in _DETACHED:
        raise InputError(
            f"{path}: {suffix} needs a separate data file; write {_DETACHED[suffix]} (one file) instead"
        )
    geometry = volume.geometry
    if not geometry.is_orthogonal:
        raise GeometryError(
            f"{path}: the grid is sheared (e.g. a gantry tilt kept as acquired); NRRD/MHA cannot hold it, "
            "write NIfTI or read the series with tilt resampling"
        )
    array = volume.array
    if volume.kind is VolumeKind.LABEL:
        array = array.astype(label_dtype(array), copy=False)
    if array.shape[0] == 1:
        image = sitk.GetImageFromArray(np.ascontiguousarray(array[0].transpose(2, 1, 0)))
    else:
        image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(3, 2, 1, 0)), isVector=True)
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(tuple(float(v) for v in geometry.direction.flatten()))

    def write(tmp: Path) -> None:
        sitk.WriteImage(image, os.fspath(tmp), useCompression=True)

    return write_atomically(path, write)
