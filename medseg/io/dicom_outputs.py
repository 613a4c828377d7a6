"""What the DICOM SEG and RTSTRUCT writers share: the algorithm, the segments, the source slices.

Both writers put a label map back onto the instances of the scan it was predicted
from. This module checks that this is possible (a DICOM source, slices that are the
stored instances, a grid that still is theirs), reads the source headers without
their pixel data, and decides which segments are written, with which codes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from medseg.errors import InputError
from medseg.volume import Code, Segment, Volume, VolumeKind

#: CID 7162 "Surface Processing Algorithm Families": the family of a trained network.
ARTIFICIAL_INTELLIGENCE: Code = ("123110", "DCM", "Artificial Intelligence")
#: CID 7150 category and CID 7151 type of a label the model gives no codes for
#: (3D Slicer's default for a new segment too).
TISSUE: Code = ("85756007", "SCT", "Tissue")
#: CID 7150 category of a label that has a type code but no category.
ANATOMICAL_STRUCTURE: Code = ("91723000", "SCT", "Anatomical Structure")

#: How segments may have been made (SEG Segment Algorithm Type, RTSTRUCT ROI Generation Algorithm).
ALGORITHM_KINDS = ("AUTOMATIC", "SEMIAUTOMATIC", "MANUAL")

#: How far (mm) a stored plane (a source slice, a SEG frame, a contour) may lie from the grid slice it is taken for.
SLICE_TOLERANCE_MM = 0.1

_LO_LENGTH = 64  # DICOM Long String


@dataclass(frozen=True)
class AlgorithmIdentity:
    """The model that made a mask, as SEG and RTSTRUCT record it.

    Attributes:
        name: the algorithm's name, e.g. the pipeline's name (at most 64 characters).
        version: its version, e.g. medseg's version and a short hash of the weights,
            ``"0.1.0+sha256:1a2b3c4d"`` (at most 64 characters).
        family: CID 7162 code of the algorithm family; Artificial Intelligence
            (DCM 123110) by default.
        kind: how the segments were made, as SEG's Segment Algorithm Type and RTSTRUCT's ROI
            Generation Algorithm record it: ``"AUTOMATIC"`` (a model's output, the default),
            ``"SEMIAUTOMATIC"`` or ``"MANUAL"`` (labels drawn by hand and converted: a SEG then
            names no algorithm for its segments).

    Raises:
        InputError: an empty or too long name or version, or an unknown kind.
    """

    name: str
    version: str
    family: Code = ARTIFICIAL_INTELLIGENCE
    kind: str = "AUTOMATIC"

    def __post_init__(self) -> None:
        for field, value in (("name", self.name), ("version", self.version)):
            check_long_string(value, f"algorithm {field}")
        if self.kind not in ALGORITHM_KINDS:
            raise InputError(f"algorithm kind must be one of {', '.join(ALGORITHM_KINDS)}, got {self.kind!r}")

    @property
    def description(self) -> str:
        """``"name version"``, cut to the 64 characters a DICOM description holds."""
        return f"{self.name} {self.version}"[:_LO_LENGTH]


@dataclass(frozen=True)
class OutputSegment:
    """One segment as the writers put it into a file.

    Attributes:
        label: the value of its voxels in the label map.
        number: its SEG segment number (1, 2, ... in order of ``label``).
        name: its name; ``"label N"`` for a label the segment table does not know.
        color: display colour (RGB 0-255), when known.
        category: CID 7150 segmentation property category.
        type: CID 7151 segmentation property type.
    """

    label: int
    number: int
    name: str
    color: tuple[int, int, int] | None
    category: Code
    type: Code


@dataclass(frozen=True)
class SourceSlices:
    """The stored instances a label map's ``k`` slices are.

    Attributes:
        headers: the source files' headers in ``k`` order (without pixel data); for an
            enhanced multi-frame source, its one header.
        positions: ``(K, 3)`` ImagePositionPatient of each slice, as stored.
        sop_class_uid: the source instances' SOP Class UID.
        sop_instance_uids: each slice's instance.
        frame_numbers: each slice's frame (1-based) in a multi-frame source, else None.
    """

    headers: tuple[Dataset, ...]
    positions: np.ndarray
    sop_class_uid: str
    sop_instance_uids: tuple[str, ...]
    frame_numbers: tuple[int, ...] | None

    @property
    def first(self) -> Dataset:
        """The first source header (patient, study, frame of reference)."""
        return self.headers[0]

    @property
    def is_multiframe(self) -> bool:
        """True for an enhanced multi-frame source."""
        return self.frame_numbers is not None


def check_long_string(value: str, what: str) -> None:
    """Raise :class:`InputError` unless ``value`` is a valid, non-empty DICOM LO (64 characters, no ``\\``)."""
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > _LO_LENGTH or "\\" in value or any(ord(c) < 32 for c in value):
        raise InputError(f"{what} {value!r} is not a DICOM LO: at most 64 characters, no backslash or control codes")


def check_code_string(value: str, what: str) -> None:
    """Raise :class:`InputError` unless ``value`` is a DICOM CS (16 upper-case letters, digits, space, ``_``)."""
    if not re.fullmatch(r"[A-Z0-9 _]{1,16}", value or ""):
        raise InputError(f"{what} {value!r} is not a DICOM code string: 1-16 of A-Z, 0-9, space, underscore")


def output_segments(labels: Volume) -> tuple[OutputSegment, ...]:
    """The segments a writer puts into a file, in order of label value.

    Every entry of ``labels.segments`` is written, present in the array or not (an
    organ the model did not find is information too), and every label present in the
    array but missing from the table, as ``"label N"``. SEG numbers them 1, 2, ...
    as the standard asks: they equal the label values when those are 1..N.

    Codes default to Tissue/Tissue (SCT 85756007) where a segment has none, and the
    category to Anatomical Structure (SCT 91723000) where it has only a type.

    Raises:
        InputError: negative labels, no segment at all, or a name that is not a DICOM LO.
    """
    array = labels.channel(0)
    lowest = int(array.min())
    if lowest < 0:
        raise InputError(f"{_name(labels)}: label values must be >= 0, found {lowest}")
    table = {segment.number: segment for segment in labels.segments}
    present = {int(v) for v in np.flatnonzero(np.bincount(array.reshape(-1))) if v > 0}
    numbers = sorted(set(table) | present)
    if not numbers:
        raise InputError(f"{_name(labels)}: nothing to write: no segment in the table and no label in the array")
    out = []
    for index, label in enumerate(numbers, start=1):
        if label < 1:
            raise InputError(f"{_name(labels)}: segment number {label} in the segment table; numbers start at 1")
        segment = table.get(label, Segment(label, f"label {label}"))
        check_long_string(segment.name, f"segment {label} name")
        kind = tuple(segment.type) if segment.type else TISSUE
        if segment.category:
            category = tuple(segment.category)
        else:
            category = ANATOMICAL_STRUCTURE if segment.type else TISSUE
        out.append(OutputSegment(label, index, segment.name, segment.color, category, kind))  # type: ignore[arg-type]
    return tuple(out)


def read_source_slices(labels: Volume, *, what: str = "output") -> SourceSlices:
    """Read the headers of the instances ``labels`` was predicted on and check they are its slices.

    Args:
        labels: a label map derived from a DICOM image volume.
        what: the kind of file being written, for messages (e.g. ``"DICOM SEG"``).

    Raises:
        InputError: not a label map; no DICOM source (e.g. read from NIfTI); a source
            resampled off its stored slices; a source file missing or changed since it
            was read; or a grid that is no longer the source's (the label map was
            resampled after reading).
    """
    name = _name(labels)
    if labels.kind is not VolumeKind.LABEL:
        raise InputError(f"{name}: a {what} is written from a label map, got a {labels.kind.value} volume")
    source = labels.source
    count = labels.spatial_shape[2]
    if source.resampled:
        raise InputError(
            f"{name}: its source series {source.series_instance_uid} was resampled when read (gaps filled or "
            f"tilt undone), so its slices are not stored instances; a {what} cannot reference them "
            "(read a tilted scan with --tilt keep; otherwise write NIfTI)"
        )
    if not source.files:
        raise InputError(f"{name}: no DICOM source (read from a non-DICOM file?); a {what} must reference the scan")
    if len(source.files) != count or len(source.sop_instance_uids) != count:
        raise InputError(
            f"{name}: {count} slices but {len(source.files)} source files and {len(source.sop_instance_uids)} "
            "instance UIDs; the source does not describe this grid"
        )
    multiframe = source.frame_numbers is not None
    paths = [source.files[0]] if multiframe else list(source.files)
    headers = [_read_header(path, what) for path in paths]
    for k, uid in enumerate(source.sop_instance_uids):
        header = headers[0] if multiframe else headers[k]
        stored = header.get("SOPInstanceUID")
        if not uid:
            raise InputError(f"{source.files[k]}: slice {k} has no SOP Instance UID (anonymised?); a {what} needs it")
        if stored != uid:
            raise InputError(
                f"{source.files[k]}: slice {k} should be instance {uid}, the file holds {stored}; "
                "the source changed since it was read"
            )
    if multiframe:
        frame_numbers = tuple(int(n) for n in source.frame_numbers)  # type: ignore[union-attr]
        positions = np.array([_frame_position(headers[0], n, paths[0]) for n in frame_numbers])
    else:
        frame_numbers = None
        positions = np.array([_position(header, path) for header, path in zip(headers, paths)])
    _check_on_grid(labels, positions, headers[0], paths[0], frame_numbers)
    uids = tuple(str(uid) for uid in source.sop_instance_uids)
    return SourceSlices(tuple(headers), positions, str(headers[0].SOPClassUID), uids, frame_numbers)


def shared_or_frame_item(dataset: Dataset, frame_index: int, sequence: str) -> Dataset | None:
    """The first item of functional group ``sequence`` for frame ``frame_index`` (0-based): per-frame, else shared."""
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    if per_frame and frame_index < len(per_frame):
        items = per_frame[frame_index].get(sequence)
        if items:
            return items[0]
    shared = dataset.get("SharedFunctionalGroupsSequence")
    if shared:
        items = shared[0].get(sequence)
        if items:
            return items[0]
    return None


def _read_header(path: str, what: str) -> Dataset:
    """The header of a source file, its SOP Class and Instance UIDs taken from the file meta where an
    export blanked them (as the reader takes them), so outputs reference the instances the reader saw."""
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except FileNotFoundError:
        raise InputError(f"{path}: source file is gone; a {what} must reference it") from None
    except (InvalidDicomError, OSError, ValueError) as error:
        raise InputError(f"{path}: cannot read the source header: {error}") from error
    for keyword, meta in (("SOPClassUID", "MediaStorageSOPClassUID"), ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
        if not str(header.get(keyword) or "").strip() and header.file_meta.get(meta):
            setattr(header, keyword, header.file_meta[meta].value)
    return header


def _position(header: Dataset, path: str) -> list[float]:
    if "ImagePositionPatient" not in header:
        raise InputError(f"{path}: source image has no ImagePositionPatient")
    return [float(v) for v in header.ImagePositionPatient]


def _frame_position(header: Dataset, frame_number: int, path: str) -> list[float]:
    item = shared_or_frame_item(header, frame_number - 1, "PlanePositionSequence")
    if item is None or "ImagePositionPatient" not in item:
        raise InputError(f"{path}: frame {frame_number} has no plane position")
    return [float(v) for v in item.ImagePositionPatient]


def _orientation_and_spacing(header: Dataset, frame_number: int | None) -> tuple[list[float], list[float]] | None:
    if frame_number is None:
        orientation, spacing = header.get("ImageOrientationPatient"), header.get("PixelSpacing")
    else:
        plane = shared_or_frame_item(header, frame_number - 1, "PlaneOrientationSequence")
        measures = shared_or_frame_item(header, frame_number - 1, "PixelMeasuresSequence")
        orientation = plane.get("ImageOrientationPatient") if plane else None
        spacing = measures.get("PixelSpacing") if measures else None
    if orientation is None or spacing is None:
        return None
    return [float(v) for v in orientation], [float(v) for v in spacing]


def _check_on_grid(
    labels: Volume, positions: np.ndarray, header: Dataset, path: str, frame_numbers: Sequence[int] | None
) -> None:
    """Each stored slice must sit where the label map's grid puts slice ``k``, with its rows and columns."""
    geometry = labels.geometry
    columns, rows = geometry.shape[0], geometry.shape[1]
    if (int(header.get("Rows", 0)), int(header.get("Columns", 0))) != (rows, columns):
        raise InputError(
            f"{path}: source images are {header.get('Rows')}x{header.get('Columns')} (rows x columns), the label "
            f"map is {rows}x{columns}; it is not on its source's grid (resampled after reading?)"
        )
    found = _orientation_and_spacing(header, frame_numbers[0] if frame_numbers else None)
    if found is None:
        raise InputError(f"{path}: source image has no orientation or pixel spacing")
    orientation, (spacing_row, spacing_col) = found
    expected = np.concatenate([geometry.affine[:3, 0], geometry.affine[:3, 1]])
    stored = np.concatenate([np.asarray(orientation[:3]) * spacing_col, np.asarray(orientation[3:]) * spacing_row])
    grid = geometry.index_to_physical(np.column_stack([np.zeros((len(positions), 2)), np.arange(len(positions))]))
    off = float(np.max(np.linalg.norm(grid - positions, axis=1)))
    axes_off = float(np.max(np.abs(stored - expected))) * max(columns, rows)
    if off > SLICE_TOLERANCE_MM or axes_off > SLICE_TOLERANCE_MM:
        raise InputError(
            f"{path}: the label map's grid is {max(off, axes_off):.3g} mm away from its source slices "
            f"(tolerance {SLICE_TOLERANCE_MM} mm); it is not on its source's grid (resampled after reading?)"
        )


def _name(labels: Volume) -> str:
    source = labels.source
    return labels.path or source.series_description or source.series_instance_uid or "label map"
