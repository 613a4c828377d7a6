"""Read what one DICOM file says about its images, without decoding pixels.

Every 2D image becomes a :class:`Frame`: a single-frame file gives one, an
enhanced multi-frame file gives one per frame (from its functional groups).
Files that hold no usable image become a :class:`SkippedFile` with the reason.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

_LOCALIZER_WORDS = re.compile(
    r"\b(locali[sz]er|scout|survey|topogram|scanogram|surview|tri-?pilot|3-?plane loc)",
    re.IGNORECASE,
)
_RAW_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_NON_IMAGE_MODALITIES = {"SEG", "RTSTRUCT", "RTPLAN", "RTRECORD", "SR", "PR", "KO", "REG", "FID", "DOC"}


@dataclass(frozen=True)
class SeriesHeader:
    """Attributes that every image of a series shares."""

    series_instance_uid: str | None
    group_key: str  # the UID, or for anonymised files without one a stand-in derived from other attributes
    study_instance_uid: str | None
    frame_of_reference_uid: str | None
    modality: str | None
    series_number: int | None
    series_description: str | None
    sop_class_uid: str
    transfer_syntax_uid: str
    image_type: tuple[str, ...]
    photometric_interpretation: str
    samples_per_pixel: int
    units: str | None
    is_localizer: bool


@dataclass(frozen=True)
class PixelEncoding:
    """How a file stores its pixels.

    ``raw_offset`` is the byte offset of uncompressed little-endian pixel data
    in the file (None when it must go through a decoder): such data can be read
    straight into place without parsing the file again.
    """

    bits_allocated: int
    bits_stored: int
    signed: bool
    raw_offset: int | None = None

    @property
    def dtype(self) -> np.dtype:
        """The type pydicom decodes these pixels to (native byte order)."""
        return np.dtype(f"{'i' if self.signed else 'u'}{max(1, self.bits_allocated // 8)}")


@dataclass(frozen=True)
class Frame:
    """One 2D image: a single-frame file, or one frame of a multi-frame file."""

    path: str
    frame_index: int | None  # 0-based index into a multi-frame file; None for single-frame
    sop_instance_uid: str | None
    header: SeriesHeader
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float, float, float]
    pixel_spacing: tuple[float, float]  # DICOM order: (between rows, between columns)
    rows: int
    columns: int
    slope: float
    intercept: float
    slice_thickness: float | None = None
    instance_number: int | None = None
    acquisition_number: int | None = None
    echo: float | None = None
    temporal_index: int | None = None
    stack_id: str | None = None
    encoding: PixelEncoding = PixelEncoding(16, 16, False)


@dataclass(frozen=True)
class SkippedFile:
    """A file that yields no image, and why."""

    path: str
    reason: str


def read_frames(path: str) -> list[Frame] | SkippedFile:
    """The image frames of one file, or why it has none."""
    try:
        ds = pydicom.dcmread(path, defer_size=1024)
    except InvalidDicomError:
        return SkippedFile(path, "not a DICOM file")
    except Exception as exc:  # pydicom raises many types on damaged files
        return SkippedFile(path, f"unreadable DICOM ({type(exc).__name__}: {exc})")
    try:
        return _frames_of(path, ds)
    except _Skip as skip:
        return SkippedFile(path, str(skip))
    except (ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        return SkippedFile(path, f"invalid or incomplete image attributes ({type(exc).__name__}: {exc})")


class _Skip(Exception):
    pass


def _frames_of(path: str, ds: Dataset) -> list[Frame]:
    _check_complete(path, ds)  # first: reading an element's value loses where it lay in the file
    sop_class = UID(str(ds.get("SOPClassUID", "") or getattr(ds.file_meta, "MediaStorageSOPClassUID", "")))
    modality = _str(ds.get("Modality"))
    kind = sop_class.name if sop_class else "unknown SOP class"
    if sop_class == "1.2.840.10008.1.3.10":
        raise _Skip("DICOMDIR (a media index, no images)")
    if "PixelData" not in ds and modality not in _NON_IMAGE_MODALITIES and kind.endswith("Image Storage"):
        # An image object without pixel data: cut short where an element ends (or in an element's header).
        raise _Skip(f"truncated or incomplete: a {kind} object without pixel data")
    if modality in _NON_IMAGE_MODALITIES or "PixelData" not in ds:
        raise _Skip(f"not an image ({kind}, modality {modality or 'unknown'})")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise _Skip(f"colour image ({ds.get('PhotometricInterpretation')}), not a scan slice")

    image_type = tuple(str(v).upper() for v in _as_list(ds.get("ImageType", ds.get("FrameType", ()))))
    description = _str(ds.get("SeriesDescription"))
    series_uid = _str(ds.get("SeriesInstanceUID"))
    header = SeriesHeader(
        series_instance_uid=series_uid,
        group_key=series_uid or _stand_in_key(path, ds),
        study_instance_uid=_str(ds.get("StudyInstanceUID")),
        frame_of_reference_uid=_str(ds.get("FrameOfReferenceUID")),
        modality=modality,
        series_number=_int(ds.get("SeriesNumber")),
        series_description=description,
        sop_class_uid=str(sop_class),
        transfer_syntax_uid=str(ds.file_meta.get("TransferSyntaxUID", "")),
        image_type=image_type,
        photometric_interpretation=_str(ds.get("PhotometricInterpretation")) or "MONOCHROME2",
        samples_per_pixel=1,
        units=_units(ds, modality),
        is_localizer="LOCALIZER" in image_type
        or "SCOUT" in image_type
        or bool(description and _LOCALIZER_WORDS.search(description)),
    )
    sop_uid = _str(ds.get("SOPInstanceUID")) or _str(ds.file_meta.get("MediaStorageSOPInstanceUID"))
    rows, columns = int(ds.Rows), int(ds.Columns)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds:
        encoding = _encoding(ds, rows * columns * n_frames)
        return [_enhanced_frame(path, ds, i, header, sop_uid, rows, columns, encoding) for i in range(n_frames)]
    if n_frames != 1:
        raise _Skip(f"multi-frame image without functional groups ({kind}), no per-frame geometry")
    if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
        raise _Skip(f"no ImagePositionPatient/ImageOrientationPatient ({kind}), not a slice of a volume")
    return [
        Frame(
            path=path,
            frame_index=None,
            sop_instance_uid=sop_uid,
            header=header,
            position=_floats(ds.ImagePositionPatient, 3, "ImagePositionPatient"),
            orientation=_floats(ds.ImageOrientationPatient, 6, "ImageOrientationPatient"),
            pixel_spacing=_pixel_spacing(ds),
            rows=rows,
            columns=columns,
            slope=float(ds.get("RescaleSlope", 1) or 1),
            intercept=float(ds.get("RescaleIntercept", 0) or 0),
            slice_thickness=_float(ds.get("SliceThickness")),
            instance_number=_int(ds.get("InstanceNumber")),
            acquisition_number=_int(ds.get("AcquisitionNumber")),
            echo=_float(_first(ds.get("EchoNumbers"))),
            temporal_index=_int(ds.get("TemporalPositionIdentifier")),
            encoding=_encoding(ds, rows * columns),
        )
    ]


def _enhanced_frame(
    path: str,
    ds: Dataset,
    index: int,
    header: SeriesHeader,
    sop_uid: str | None,
    rows: int,
    columns: int,
    encoding: PixelEncoding,
) -> Frame:
    def group(name: str) -> Dataset | None:
        for container in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
            items = ds.get(container)
            if not items:
                continue
            item = items[index] if container.startswith("Per") else items[0]
            if name in item and len(item[name].value):
                return item[name].value[0]
        return None

    position, orientation = group("PlanePositionSequence"), group("PlaneOrientationSequence")
    measures = group("PixelMeasuresSequence")
    if position is None or orientation is None or measures is None:
        raise _Skip(f"frame {index + 1} has no plane position/orientation/pixel measures")
    rescale = group("PixelValueTransformationSequence")
    content = group("FrameContentSequence")
    echo = group("MREchoSequence")
    slope = rescale.get("RescaleSlope", 1) if rescale is not None else ds.get("RescaleSlope", 1)
    intercept = rescale.get("RescaleIntercept", 0) if rescale is not None else ds.get("RescaleIntercept", 0)
    return Frame(
        path=path,
        frame_index=index,
        sop_instance_uid=sop_uid,
        header=header,
        position=_floats(position.ImagePositionPatient, 3, "ImagePositionPatient"),
        orientation=_floats(orientation.ImageOrientationPatient, 6, "ImageOrientationPatient"),
        pixel_spacing=_pixel_spacing(measures),
        rows=rows,
        columns=columns,
        slope=float(slope if slope not in (None, "") else 1),
        intercept=float(intercept if intercept not in (None, "") else 0),
        slice_thickness=_float(measures.get("SliceThickness")),
        instance_number=_int(ds.get("InstanceNumber")),
        acquisition_number=_int(ds.get("AcquisitionNumber")),
        echo=_float(echo.get("EffectiveEchoTime")) if echo is not None else None,
        temporal_index=_int(content.get("TemporalPositionIndex")) if content is not None else None,
        stack_id=_str(content.get("StackID")) if content is not None else None,
        encoding=encoding,
    )


def _stand_in_key(path: str, ds: Dataset) -> str:
    """Group files without a SeriesInstanceUID (anonymisers blank it) by folder and series attributes."""
    parts = [os.path.dirname(path)] + [
        str(ds.get(k, "")) for k in ("FrameOfReferenceUID", "SeriesNumber", "SeriesDescription", "Modality")
    ]
    return "no-uid:" + hashlib.sha1("\x00".join(parts).encode()).hexdigest()[:16]


def _check_complete(path: str, ds: Dataset) -> None:
    """Refuse a file cut short: its last element would run past the end of the file.

    pydicom stops quietly at the end of a short file, so a file cut in its header
    would otherwise pass for a non-image object. That last element is the pixel
    data unless the cut came earlier.
    """
    if not len(ds) or ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        return  # a deflated data set is read from memory: its offsets are not file offsets
    tag = max(ds.keys())
    raw = ds.get_item(tag, keep_deferred=True)  # a deferred read would load (and hide) the value
    tell = getattr(raw, "value_tell", None)
    length = getattr(raw, "length", None)
    if tell is None or length in (None, 0xFFFFFFFF):
        return
    size = os.path.getsize(path)
    if tell + length > size:
        what = "pixel data" if tag == 0x7FE00010 else f"element {tag} ({keyword_for_tag(tag) or 'private'})"
        raise _Skip(f"truncated: {what} needs {length} bytes but the file ends after {size - tell}")


def _encoding(ds: Dataset, pixels: int) -> PixelEncoding:
    """Bits and signedness, and where raw little-endian pixel data start in the file."""
    allocated = int(ds.get("BitsAllocated", 16) or 16)
    stored = int(ds.get("BitsStored", allocated) or allocated)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    offset = None
    if ds.file_meta.get("TransferSyntaxUID") in _RAW_SYNTAXES and allocated in (8, 16, 32):
        raw = ds.get_item(0x7FE00010, keep_deferred=True)
        tell, length = getattr(raw, "value_tell", None), getattr(raw, "length", None)
        expected = pixels * allocated // 8
        if tell is not None and length in (expected, expected + 1):  # + 1: padding to even length
            offset = int(tell)
    return PixelEncoding(allocated, stored, signed, offset)


def _units(ds: Dataset, modality: str | None) -> str | None:
    rescale_type = _str(ds.get("RescaleType"))
    if rescale_type:
        return rescale_type
    if modality == "CT" and "RescaleIntercept" in ds:
        return "HU"
    return _str(ds.get("Units"))


def _pixel_spacing(ds: Dataset) -> tuple[float, float]:
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    if spacing is None:
        raise _Skip("no PixelSpacing")
    row, col = _floats(spacing, 2, "PixelSpacing")
    if row <= 0 or col <= 0:
        raise _Skip(f"PixelSpacing must be positive, got {[row, col]}")
    return row, col


def _floats(value: Any, count: int, name: str) -> tuple[float, ...]:
    values = [float(v) for v in _as_list(value)]
    if len(values) != count:
        raise _Skip(f"{name} must have {count} values, got {values}")
    return tuple(values)


def _as_list(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return [value]
    return list(value)


def _first(value: Any) -> Any:
    values = _as_list(value)
    return values[0] if values else None


def _str(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
