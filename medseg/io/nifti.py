"""NIfTI-1 reading and writing with nibabel: the one place where RAS meets LPS."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from medseg.errors import InputError
from medseg.geometry import Geometry
from medseg.io.files import write_atomically
from medseg.volume import Volume, VolumeKind

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def read_nifti(path: str | os.PathLike[str], *, kind: VolumeKind | str = VolumeKind.IMAGE) -> Volume:
    """Read a NIfTI file; a 4th dimension becomes channels.

    The data keep their stored type when the header has no scaling.

    Raises:
        InputError: not a readable NIfTI image, or not 3D/4D.
    """
    try:
        image = nib.load(os.fspath(path))
        data = np.asanyarray(image.dataobj)
    except Exception as exc:  # nibabel raises several types for damaged files
        raise InputError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {exc})") from exc
    if data.ndim == 5 and data.shape[3] == 1:  # (x, y, z, t=1, c): vector images
        data = data[:, :, :, 0, :]
    if data.ndim == 2:
        data = data[:, :, np.newaxis]
    if data.ndim == 3:
        array = data[np.newaxis]
    elif data.ndim == 4:
        array = np.moveaxis(data, 3, 0)
    else:
        raise InputError(f"{path}: expected a 3D or 4D image, got shape {data.shape}")
    if VolumeKind(kind) is VolumeKind.LABEL:
        array = _as_labels(array, path)
    geometry = Geometry.from_ras_affine(array.shape[1:], image.affine)
    return Volume(array, geometry, kind=kind, path=os.fspath(path))


def write_nifti(volume: Volume, path: str | os.PathLike[str]) -> Path:
    """Write a volume as NIfTI-1 with consistent qform and sform (atomically).

    Label maps are written in the smallest unsigned integer type that holds
    their labels; images keep their type (float64 becomes float32). A sheared
    grid (e.g. a gantry tilt kept as acquired) lives in the sform only, with the
    qform code set to 0, since a qform cannot hold shear.
    """
    array = volume.array
    if volume.kind is VolumeKind.LABEL:
        array = array.astype(label_dtype(array), copy=False)
    elif array.dtype == np.float64:
        array = array.astype(np.float32)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8)
    data = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, 3)
    affine = volume.geometry.affine_ras
    image = nib.Nifti1Image(data, affine)
    header = image.header
    header.set_xyzt_units(xyz="mm")
    code = "scanner" if volume.geometry.frame_of_reference_uid else "aligned"
    image.set_sform(affine, code=code)
    if volume.geometry.is_orthogonal:
        image.set_qform(affine, code=code)
    else:
        image.set_qform(affine, code="unknown")
    if volume.kind is VolumeKind.LABEL:
        header.set_intent("label")
    return write_atomically(path, lambda tmp: nib.save(image, tmp))


def label_dtype(array: np.ndarray) -> np.dtype:
    """The smallest unsigned integer type holding every label in ``array``."""
    if array.size == 0:
        return np.dtype(np.uint8)
    low, high = int(array.min()), int(array.max())
    if low < 0:
        raise InputError(f"label maps hold non-negative integers, found {low}")
    for dtype in (np.uint8, np.uint16, np.uint32):
        if high <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def _as_labels(array: np.ndarray, path: object) -> np.ndarray:
    if np.issubdtype(array.dtype, np.integer):
        return array
    rounded = np.rint(array)
    if not np.array_equal(rounded, array):
        raise InputError(f"{path}: a label map must hold whole numbers, found e.g. {array[rounded != array].flat[0]}")
    return rounded.astype(label_dtype(rounded))
