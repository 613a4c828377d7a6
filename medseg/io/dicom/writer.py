"""Write an image volume as a DICOM series of single-frame slices.

Writing is strict: every file carries its file meta information and the
attributes of the CT/MR Image IODs that locate it (position, orientation,
spacing, rescale). Compression goes through pydicom's encoders.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    MRImageStorage,
    RLELossless,
    generate_uid,
)

from medseg import __version__
from medseg.errors import InputError
from medseg.io.files import write_atomically
from medseg.volume import Volume

#: Transfer syntaxes this writer can produce (pydicom's own encoders).
WRITABLE_TRANSFER_SYNTAXES = (
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    RLELossless,
    JPEGLSLossless,
    JPEG2000Lossless,
)
_SOP_CLASSES = {"CT": CTImageStorage, "MR": MRImageStorage}


def write_dicom_series(
    volume: Volume,
    folder: str | os.PathLike[str],
    *,
    transfer_syntax: str = ExplicitVRLittleEndian,
    modality: str = "CT",
    series_description: str = "medseg series",
    series_number: int = 1,
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    file_names: Sequence[str] | None = None,
) -> list[Path]:
    """Write one file per ``k`` slice of a single-channel volume; returns the paths.

    CT values are stored as unsigned 16-bit with RescaleIntercept -1024 when they
    fit (as most scanners do), otherwise signed; integral values stay exact.

    Raises:
        InputError: multi-channel or non-integral data, or an unsupported syntax.
    """
    transfer_syntax = UID(transfer_syntax)
    if transfer_syntax not in WRITABLE_TRANSFER_SYNTAXES:
        names = ", ".join(uid.name for uid in WRITABLE_TRANSFER_SYNTAXES)
        raise InputError(f"cannot write transfer syntax {transfer_syntax.name}; use one of: {names}")
    if volume.num_channels != 1:
        raise InputError(f"a DICOM series holds one channel, the volume has {volume.num_channels}")
    values = volume.channel(0)
    intercept, signed = _encoding(values, modality)
    stored_dtype = np.int16 if signed else np.uint16

    geometry = volume.geometry
    affine = geometry.affine
    row_dir, col_dir = geometry.direction[:, 0], geometry.direction[:, 1]
    spacing_i, spacing_j, _ = geometry.spacing
    study_uid = study_instance_uid or generate_uid()
    series_uid = series_instance_uid or generate_uid()
    frame_uid = geometry.frame_of_reference_uid or generate_uid()
    now = datetime.datetime.now()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    count = geometry.shape[2]
    names = list(file_names) if file_names is not None else [f"{k + 1:04d}.dcm" for k in range(count)]
    if len(names) != count:
        raise InputError(f"{len(names)} file names given for {count} slices")

    paths = []
    for k in range(count):
        sop_uid = generate_uid()
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = _SOP_CLASSES.get(modality, CTImageStorage)
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.8.498.1")
        ds.file_meta.ImplementationVersionName = f"medseg {__version__}"[:16]
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality = modality
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PatientName = "Phantom^Medseg"
        ds.PatientID = "MEDSEG-PHANTOM"
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
        ds.StudyID = "1"
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.Manufacturer = "medseg"
        ds.SeriesNumber = series_number
        ds.SeriesDescription = series_description
        ds.InstanceNumber = k + 1
        ds.PositionReferenceIndicator = ""
        ds.PatientPosition = "HFS"
        position = affine[:3, :3] @ np.array([0.0, 0.0, float(k)]) + affine[:3, 3]
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.ImageOrientationPatient = [_ds(v) for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [_ds(spacing_j), _ds(spacing_i)]
        ds.SliceThickness = _ds(geometry.spacing[2])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = geometry.shape[1], geometry.shape[0]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = int(signed)
        if modality == "CT":
            ds.KVP = "120"
            ds.RescaleIntercept = intercept
            ds.RescaleSlope = 1
            ds.RescaleType = "HU"
        pixels = (values[:, :, k].T.astype(np.int64) - intercept).astype(stored_dtype)
        ds.PixelData = pixels.tobytes()
        if transfer_syntax.is_compressed:
            ds.compress(transfer_syntax, pixels)
        else:
            ds.file_meta.TransferSyntaxUID = transfer_syntax
        path = folder / names[k]
        paths.append(write_atomically(path, lambda tmp, ds=ds: ds.save_as(tmp, enforce_file_format=True)))
    return paths


def _encoding(values: np.ndarray, modality: str) -> tuple[int, bool]:
    """The rescale intercept and signedness that store ``values`` exactly in 16 bits.

    Raises:
        InputError: non-integral values, or values no 16-bit encoding holds.
    """
    if not np.issubdtype(values.dtype, np.integer) and not np.array_equal(values, np.round(values)):
        raise InputError("this writer stores integral values only (e.g. HU); round the volume first")
    lo, hi = int(values.min()), int(values.max())
    intercept = -1024 if modality == "CT" and lo >= -1024 and hi - (-1024) <= 65535 else 0
    signed = lo - intercept < 0
    if signed and not (-32768 <= lo and hi <= 32767) or not signed and hi - intercept > 65535:
        raise InputError(f"values {lo}..{hi} do not fit 16-bit DICOM pixel data")
    return intercept, signed


def _ds(value: float) -> str:
    """A DS string (at most 16 characters) as exact as the format allows."""
    for digits in range(12, 3, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    return f"{value:.4g}"
