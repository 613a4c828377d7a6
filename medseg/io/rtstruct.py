"""RT Structure Sets: a label map as planar contours on its scan's slices, and back.

Contours follow voxel **edges**: each connected region of a slice becomes a closed
polygon through the corners of its boundary pixels, and each hole a polygon of its
own. Filling the polygons of one ROI on one slice with the even-odd rule (a pixel is
inside when a ray from its centre crosses the polygons an odd number of times; holes
are cut out, as 3D Slicer and most planning systems read them) gives back exactly the
pixels of the mask, because no pixel centre lies on a polygon. Pixels that touch only
at a corner go into separate polygons that share that corner. Points on straight runs
are merged, so a polygon has a vertex only where the boundary turns.

:func:`write_rtstruct` writes one ROI per label, numbered by its label value.
:func:`read_rtstruct` fills each ROI's contours on a reference grid.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.charset import default_encoding
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag
from pydicom.uid import UID, ExplicitVRLittleEndian, RTStructureSetStorage, generate_uid
from scipy import ndimage

from medseg import __version__
from medseg.errors import GeometryError, InputError
from medseg.geometry import Geometry
from medseg.io.canvas import LabelCanvas, Painted, paint_order
from medseg.io.dicom_outputs import (
    SLICE_TOLERANCE_MM,
    AlgorithmIdentity,
    SourceSlices,
    check_long_string,
    output_segments,
    read_source_slices,
)
from medseg.io.files import atomic_path
from medseg.volume import Code, Segment, SourceSeries, Volume, VolumeKind

log = logging.getLogger(__name__)

#: What an RTSTRUCT's Referenced Study names its study by (the retired Detached Study Management SOP Class,
#: as the standard still asks).
_STUDY_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"
#: Patient and study attributes copied from the source; type 2 ones are written empty when missing.
_COPIED = {
    "SpecificCharacterSet": False,
    "PatientName": True,
    "PatientID": True,
    "IssuerOfPatientID": False,
    "PatientBirthDate": True,
    "PatientSex": True,
    "PatientAge": False,
    "StudyInstanceUID": True,
    "StudyDate": True,
    "StudyTime": True,
    "ReferringPhysicianName": True,
    "StudyID": True,
    "AccessionNumber": True,
    "StudyDescription": False,
}
_CONTOUR_DATA = Tag(0x3006, 0x0050)
_STEPS = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]])  # edge directions: +i, +j, -i, -j
ON_CONTOUR_PX = 1e-3  # a pixel centre this close to a contour (in pixels) lies on it, and is inside


def write_rtstruct(
    labels: Volume,
    path: str | os.PathLike[str],
    *,
    algorithm: AlgorithmIdentity,
    series_number: int = 9002,
    series_description: str = "medseg structures",
    structure_set_label: str = "MEDSEG",
) -> Path:
    """Write a label map as an RT Structure Set on the instances it was predicted from.

    One ROI per entry of ``labels.segments`` and per label present in the array
    (ROI Number = label value; ROI Name = segment name or ``"label N"``), generated
    AUTOMATIC by ``algorithm``, interpreted type ORGAN, with the segment's colour and
    its type code (RT ROI Identification Code Sequence). Each slice's contours are
    CLOSED_PLANAR polygons in patient mm on the plane of its source instance, which
    they reference. The file is written atomically.

    Args:
        labels: a label map on the grid of a DICOM series, with that series as
            ``source`` (e.g. ``image.with_array(...)``).
        path: the file to write.
        algorithm: the model that made the mask.
        series_number: SeriesNumber of the new series.
        series_description: SeriesDescription of the new series.
        structure_set_label: StructureSetLabel (at most 16 characters).

    Returns:
        ``path``.

    Raises:
        InputError: no DICOM source, a resampled source, a grid that is not the
            source's, or invalid names (see :func:`~medseg.io.dicom_outputs.read_source_slices`).
    """
    check_long_string(series_description, "series description")
    check_long_string(structure_set_label, "structure set label")
    if len(structure_set_label) > 16:
        raise InputError(f"structure set label {structure_set_label!r} is longer than 16 characters")
    slices = read_source_slices(labels, what="RTSTRUCT")
    segments = output_segments(labels)
    source = slices.first
    now = datetime.datetime.now()
    ds = Dataset()
    for keyword, required in _COPIED.items():
        if keyword in source:
            setattr(ds, keyword, source[keyword].value)
        elif required:
            setattr(ds, keyword, "")
    sop_uid = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = RTStructureSetStorage, sop_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = generate_uid(), series_number, series_description
    ds.SeriesDate, ds.SeriesTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.OperatorsName = ""
    ds.Manufacturer, ds.ManufacturerModelName = "medseg", algorithm.name
    ds.SoftwareVersions = f"medseg {__version__}"
    ds.InstanceNumber = 1
    ds.StructureSetLabel, ds.StructureSetName = structure_set_label, algorithm.name
    ds.StructureSetDate, ds.StructureSetTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    frame_uid = str(source.FrameOfReferenceUID)
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = source.get("PositionReferenceIndicator", "")
    ds.ReferencedFrameOfReferenceSequence = [_referenced_frame_of_reference(slices, frame_uid)]

    array = labels.channel(0)
    boxes = ndimage.find_objects(array)  # each label's bounding box: trace there only
    structures, contours, observations = [], [], []
    total = 0
    for index, segment in enumerate(segments, start=1):
        roi = Dataset()
        roi.ROINumber, roi.ReferencedFrameOfReferenceUID, roi.ROIName = segment.label, frame_uid, segment.name
        roi.ROIGenerationAlgorithm, roi.ROIGenerationDescription = algorithm.kind, algorithm.description
        structures.append(roi)
        item = Dataset()
        item.ReferencedROINumber = segment.label
        if segment.color is not None:
            item.ROIDisplayColor = list(segment.color)
        box = boxes[segment.label - 1] if segment.label <= len(boxes) else None
        planes = _contours(array, segment.label, box, labels.geometry, slices) if box else []
        total += len(planes)
        if planes:
            item.ContourSequence = planes
        contours.append(item)
        observation = Dataset()
        observation.ObservationNumber, observation.ReferencedROINumber = index, segment.label
        observation.RTROIIdentificationCodeSequence = [_code_item(segment.type)]
        observation.RTROIInterpretedType, observation.ROIInterpreter = "ORGAN", ""
        observations.append(observation)
    ds.StructureSetROISequence = structures
    ds.ROIContourSequence = contours
    ds.RTROIObservationsSequence = observations

    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = RTStructureSetStorage, sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.8.498.1")
    ds.file_meta.ImplementationVersionName = f"medseg {__version__}"[:16]
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    log.info(
        "wrote RTSTRUCT %s: %d ROIs, %d contours, referencing series %s",
        sop_uid,
        len(segments),
        total,
        labels.source.series_instance_uid,
    )
    return Path(path)


def read_rtstruct(
    path: str | os.PathLike[str],
    *,
    reference: Geometry,
    tolerance_mm: float = SLICE_TOLERANCE_MM,
    dataset: Dataset | None = None,
) -> Volume:
    """Fill an RT Structure Set's contours on a grid: a label map.

    Each CLOSED_PLANAR contour must lie on a ``k`` slice of ``reference``; the
    contours of one ROI on one slice are filled together with the even-odd rule
    (pixel centres; holes cut out). Labels are the ROI Numbers when all of them lie
    in 1..255, otherwise 1, 2, ... in the order of the Structure Set ROI Sequence.
    Where ROIs overlap, the higher label wins. Point and open contours are ignored.

    Args:
        path: the RTSTRUCT file.
        reference: the grid to fill, e.g. the scan's geometry.
        tolerance_mm: how far a contour may lie from a slice of the grid.
        dataset: the file as :func:`load_rtstruct` read it, when it is read already.

    Returns:
        A uint8 (uint16 past 255 ROIs) label volume; segments named after the ROIs,
        with their display colours and type codes; ``source`` naming the study and the
        referenced series.

    Raises:
        InputError: the file is missing or not an RT Structure Set.
        GeometryError: a contour does not lie on a slice of ``reference`` or reaches
            outside it, or the frames of reference differ.
    """
    ds = dataset if dataset is not None else _load(path)
    rois = list(ds.get("StructureSetROISequence") or [])
    numbers = [int(roi.ROINumber) for roi in rois]
    keep = all(1 <= n <= 255 for n in numbers) and len(set(numbers)) == len(numbers)
    label_of = {n: (n if keep else i) for i, n in enumerate(numbers, start=1)}
    painted = paint_rtstruct(
        ds, reference=reference, tolerance_mm=tolerance_mm, paint=[(n, label_of[n]) for n in numbers], path=path
    )
    colors = {
        int(item.ReferencedROINumber): tuple(int(v) for v in item.ROIDisplayColor)
        for item in ds.get("ROIContourSequence") or []
        if "ROIDisplayColor" in item
    }
    types = {int(o.ReferencedROINumber): _read_code(o) for o in ds.get("RTROIObservationsSequence") or []}
    segments = tuple(
        Segment(label_of[n], painted.names[n], colors.get(n), None, types.get(n))  # type: ignore[arg-type]
        for n in numbers
    )
    return Volume(
        painted.array,
        Geometry(reference.shape, reference.affine, _frame_uid(ds) or reference.frame_of_reference_uid),
        kind=VolumeKind.LABEL,
        source=_source(ds),
        segments=tuple(sorted(segments, key=lambda s: s.number)),
        path=os.fspath(path),
    )


def paint_rtstruct(
    ds: Dataset | str | os.PathLike[str],
    *,
    reference: Geometry,
    paint: Sequence[tuple[int, int]] | None = None,
    tolerance_mm: float = SLICE_TOLERANCE_MM,
    path: str | os.PathLike[str] | None = None,
) -> Painted:
    """Fill chosen ROIs of an RT Structure Set on a grid, as chosen labels.

    Args:
        ds: the RTSTRUCT (a path, or a dataset read by :func:`load_rtstruct`).
        reference: the grid to fill.
        paint: ``(ROI number, label)`` pairs, painted in this order (later ones on top);
            ROIs not listed are left out. Default: every ROI as its own number, in increasing order.
        tolerance_mm: how far a contour may lie from a slice of the grid.
        path: the file's name for messages, when ``ds`` is a dataset.

    Raises:
        InputError: not an RT Structure Set, or a contour for an ROI it does not declare.
        GeometryError: as :func:`read_rtstruct`.
    """
    if not isinstance(ds, Dataset):
        path, ds = ds, _load(ds)
    rois = list(ds.get("StructureSetROISequence") or [])
    names = {int(roi.ROINumber): str(roi.get("ROIName") or f"ROI {roi.ROINumber}") for roi in rois}
    frame_uids = {str(roi.get("ReferencedFrameOfReferenceUID", "")) for roi in rois} - {""}
    if reference.frame_of_reference_uid and frame_uids and frame_uids != {reference.frame_of_reference_uid}:
        raise GeometryError(
            f"{path}: contours are in frame of reference {sorted(frame_uids)}, the grid in "
            f"{reference.frame_of_reference_uid}"
        )
    order = paint_order(list(names), paint)
    wanted = {n for n, _ in order}
    polygons: dict[int, dict[int, list[np.ndarray]]] = {}  # ROI number -> k -> polygons
    notes: list[str] = []
    for item in ds.get("ROIContourSequence") or []:
        number = int(item.ReferencedROINumber)
        if number not in names:
            raise InputError(f"{path}: ROI contour for ROI {number}, which the Structure Set ROI Sequence lacks")
        if number not in wanted:
            continue
        contours = list(item.get("ContourSequence") or [])
        skipped = Counter(str(c.get("ContourGeometricType", "")) for c in contours) - Counter({"CLOSED_PLANAR": 10**9})
        if skipped:
            kinds = ", ".join(f"{count} {kind or 'untyped'}" for kind, count in sorted(skipped.items()))
            notes.append(f"ROI {names[number]!r}: skipped {kinds} contour(s) (only CLOSED_PLANAR ones enclose voxels)")
        polygons[number] = _slice_polygons(contours, reference, path, names[number], tolerance_mm)
    canvas = LabelCanvas(reference.shape, max([label for _, label in order], default=0))
    empty = []
    for number, label in order:
        if not polygons.get(number):
            empty.append(number)
            continue
        for k, shapes in polygons[number].items():
            mask = fill_polygons(shapes, reference.shape[:2])
            canvas.paint((*np.nonzero(mask), k), label)
    return Painted(canvas.array, names, tuple(n for n, _ in order), tuple(empty), dict(canvas.overlaps), tuple(notes))


def load_rtstruct(path: str | os.PathLike[str]) -> Dataset:
    """Read an RT Structure Set's dataset.

    Raises:
        InputError: the file is missing, unreadable or not an RT Structure Set.
    """
    return _load(path)


# -- contours: tracing and filling -------------------------------------------------------------


def trace_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """Closed polygons along the pixel edges of a 2-D mask.

    Args:
        mask: ``(I, J)`` booleans.

    Returns:
        One ``(n, 2)`` array of vertices per polygon, in continuous index coordinates
        ``(i, j)``: pixel ``(i, j)`` covers ``[i - 0.5, i + 0.5] x [j - 0.5, j + 0.5]``.
        Outer boundaries run counter-clockwise (``i`` right, ``j`` up), holes
        clockwise; vertices only where the boundary turns. Filling them with the
        even-odd rule at pixel centres (:func:`fill_polygons`) gives ``mask`` back.
    """
    mask = np.asarray(mask, dtype=bool)
    along_i, along_j = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if along_i.size == 0:
        return []
    corner = np.array([along_i[0], along_j[0]]) - 0.5  # trace the bounding box only
    mask = mask[along_i[0] : along_i[-1] + 1, along_j[0] : along_j[-1] + 1]
    size_i, size_j = mask.shape
    padded = np.pad(mask, 1)
    inside = padded[1:-1, 1:-1]
    # A pixel side is an edge where the neighbour across it is outside; directed so the pixel is on its left.
    # Corner (a, b) is the point (a - 0.5, b - 0.5).
    sides = (
        (inside & ~padded[1:-1, :-2], (0, 0)),  # towards j - 1: from corner (i, j), along +i
        (inside & ~padded[2:, 1:-1], (1, 0)),  # towards i + 1: from (i + 1, j), along +j
        (inside & ~padded[1:-1, 2:], (1, 1)),  # towards j + 1: from (i + 1, j + 1), along -i
        (inside & ~padded[:-2, 1:-1], (0, 1)),  # towards i - 1: from (i, j + 1), along -j
    )
    starts, directions = [], []
    for direction, (where, offset) in enumerate(sides):
        i, j = np.nonzero(where)
        starts.append(np.column_stack([i + offset[0], j + offset[1]]))
        directions.append(np.full(i.size, direction))
    start = np.concatenate(starts)
    direction = np.concatenate(directions)
    end = start + _STEPS[direction]
    width = size_j + 1
    start_id = start[:, 0] * width + start[:, 1]
    end_id = end[:, 0] * width + end[:, 1]
    outgoing = np.full(((size_i + 1) * width, 4), -1, dtype=np.int64)
    outgoing[start_id, direction] = np.arange(start_id.size)
    count = np.sum(outgoing >= 0, axis=1)
    # One way on from most corners; where two regions touch diagonally, turn left: stay on the same pixel.
    following = np.where(
        count[end_id] == 1, outgoing[end_id].max(axis=1), outgoing[end_id, (direction + 1) % 4]
    )
    polygons = []
    seen = np.zeros(start_id.size, dtype=bool)
    for first in range(start_id.size):
        if seen[first]:
            continue
        loop = []
        edge = first
        while not seen[edge]:
            seen[edge] = True
            loop.append(edge)
            edge = following[edge]
        loop = np.asarray(loop)
        turns = direction[loop] != direction[np.roll(loop, 1)]
        polygons.append(start[loop[turns]] + corner)
    return polygons


def fill_polygons(polygons: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Pixels of an ``(I, J)`` grid whose centres lie inside the polygons, by the even-odd rule.

    A centre that lies on a contour (within :data:`ON_CONTOUR_PX`) is inside, whichever polygon
    the contour belongs to. Writers that draw contours through the centres of a mask's boundary
    pixels (rt-utils, OpenCV's ``findContours``) are then read back to the mask they were given;
    medseg's own contours run along pixel edges and pass through no centre.

    Args:
        polygons: ``(n, 2)`` vertex arrays in continuous index coordinates ``(i, j)``.
        shape: ``(I, J)``.

    Returns:
        ``(I, J)`` booleans: inside an odd number of polygons (so nested ones cut holes), or on a contour.
    """
    size_i, size_j = shape
    crossings = np.zeros((size_j, size_i + 1), dtype=np.int64)
    if not polygons:
        return np.zeros(shape, dtype=bool)
    # Every polygon's edges at once: from each vertex to the next one of the same polygon.
    x0, y0 = (np.concatenate([p[:, axis] for p in polygons]) for axis in (0, 1))
    x1, y1 = (np.concatenate([np.roll(p[:, axis], -1) for p in polygons]) for axis in (0, 1))
    low, high = np.minimum(y0, y1), np.maximum(y0, y1)
    first = np.maximum(np.ceil(low), 0).astype(np.int64)  # rows j with low <= j < high
    last = np.minimum(np.ceil(high), size_j).astype(np.int64)
    rows = np.maximum(last - first, 0)
    edge = np.repeat(np.arange(x0.size), rows)
    j = first[edge] + np.arange(edge.size) - np.repeat(np.cumsum(rows) - rows, rows)
    x = x0[edge] + (j - y0[edge]) * (x1[edge] - x0[edge]) / (y1[edge] - y0[edge])
    # A crossing at x toggles every pixel centre i < x (the ray from it towards +i crosses).
    np.add.at(crossings, (j, np.clip(np.ceil(x), 0, size_i).astype(np.int64)), 1)
    parity = np.cumsum(crossings[:, ::-1], axis=1)[:, ::-1][:, 1:] % 2  # pixel i: crossings at columns > i
    inside = parity.T.astype(bool)
    inside[_centres_on_edges((x0, y0), (x1, y1), shape)] = True
    return inside


def _centres_on_edges(
    start: tuple[np.ndarray, np.ndarray], end: tuple[np.ndarray, np.ndarray], shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(i, j)`` of the pixel centres lying on the edges from ``start`` to ``end`` (within the grid).

    Each edge is walked along its longer axis, one integer step at a time, so every lattice point on it is met.
    """
    found_i, found_j = [], []
    delta = (end[0] - start[0], end[1] - start[1])
    along_i = np.abs(delta[0]) >= np.abs(delta[1])
    for axis, edges in ((0, along_i & (delta[0] != 0)), (1, ~along_i)):
        a0, b0 = start[axis][edges], start[1 - axis][edges]
        slope = delta[1 - axis][edges] / delta[axis][edges]
        low = np.ceil(np.minimum(a0, end[axis][edges]) - ON_CONTOUR_PX).astype(np.int64)
        high = np.floor(np.maximum(a0, end[axis][edges]) + ON_CONTOUR_PX).astype(np.int64)
        steps = np.maximum(high - low + 1, 0)
        edge = np.repeat(np.arange(a0.size), steps)
        a = low[edge] + np.arange(edge.size) - np.repeat(np.cumsum(steps) - steps, steps)
        b = b0[edge] + (a - a0[edge]) * slope[edge]
        on = np.abs(b - np.rint(b)) <= ON_CONTOUR_PX
        point = (a[on], np.rint(b[on]).astype(np.int64))
        found_i.append(point[axis])
        found_j.append(point[1 - axis])
    i, j = np.concatenate(found_i), np.concatenate(found_j)
    keep = (i >= 0) & (i < shape[0]) & (j >= 0) & (j < shape[1])
    return i[keep], j[keep]


def _contours(
    array: np.ndarray, label: int, box: tuple[slice, ...], geometry: Geometry, slices: SourceSlices
) -> list[Dataset]:
    """Contour Sequence items for one label within its bounding box: its polygons per slice, in patient mm."""
    axes = geometry.affine[:3, :2]
    offset = np.array([box[0].start, box[1].start])
    mask = np.moveaxis(array[box] == label, 2, 0)  # (k, i, j): one contiguous plane per slice
    items = []
    for index, plane in enumerate(mask):
        k = box[2].start + index
        for polygon in trace_polygons(plane):
            points = slices.positions[k] + (polygon + offset) @ axes.T
            contour = Dataset()
            contour.ContourImageSequence = [_contour_image(slices, k)]
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(points)
            contour.ContourNumber = len(items) + 1
            contour[_CONTOUR_DATA] = _raw_ds(points.reshape(-1))
            # Explicit VR little endian ASCII, as the file will be: pydicom then writes the bytes as they are.
            contour.set_original_encoding(False, True, default_encoding)
            items.append(contour)
    return items


def _slice_polygons(
    contours: Sequence[Dataset], reference: Geometry, path: object, name: str, tolerance_mm: float
) -> dict[int, list[np.ndarray]]:
    """One ROI's closed contours in ``reference``'s index coordinates ``(i, j)``, by the slice ``k`` they lie on."""
    per_slice: dict[int, list[np.ndarray]] = {}
    for contour in contours:
        if contour.get("ContourGeometricType", "CLOSED_PLANAR") != "CLOSED_PLANAR":
            continue
        points = _contour_points(contour)
        index = reference.physical_to_index(points)
        k = np.rint(index[:, 2])
        off = np.abs(index[:, 2] - k) * np.linalg.norm(reference.affine[:3, 2])
        if np.any(k != k[0]) or np.max(off) > tolerance_mm:
            raise GeometryError(
                f"{path}: a contour of ROI {name!r} (first point {np.round(points[0], 3).tolist()} mm) is not on a "
                f"slice of {reference!r}: up to {np.max(off):.3g} mm off (tolerance {tolerance_mm} mm)"
            )
        # Edge-traced polygons reach half a voxel beyond the centres of the border voxels.
        margin = 0.5 + tolerance_mm / np.array(reference.spacing)
        low, high = index.min(axis=0), index.max(axis=0)
        if np.any(low < -margin) or np.any(high > np.array(reference.shape) - 1 + margin):
            raise GeometryError(
                f"{path}: a contour of ROI {name!r} (first point {np.round(points[0], 3).tolist()} mm) reaches "
                f"outside {reference!r}"
            )
        per_slice.setdefault(int(k[0]), []).append(index[:, :2])
    return per_slice


# -- datasets ------------------------------------------------------------------------------------


def _contour_image(slices: SourceSlices, k: int) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = slices.sop_class_uid
    item.ReferencedSOPInstanceUID = slices.sop_instance_uids[k]
    if slices.frame_numbers is not None:
        item.ReferencedFrameNumber = slices.frame_numbers[k]
    return item


def _referenced_frame_of_reference(slices: SourceSlices, frame_uid: str) -> Dataset:
    series = Dataset()
    series.SeriesInstanceUID = slices.first.SeriesInstanceUID
    series.ContourImageSequence = [_contour_image(slices, k) for k in range(len(slices.sop_instance_uids))]
    study = Dataset()
    study.ReferencedSOPClassUID = _STUDY_SOP_CLASS
    study.ReferencedSOPInstanceUID = slices.first.StudyInstanceUID
    study.RTReferencedSeriesSequence = [series]
    frame = Dataset()
    frame.FrameOfReferenceUID = frame_uid
    frame.RTReferencedStudySequence = [study]
    return frame


def _code_item(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
    return item


def _read_code(observation: Dataset) -> Code | None:
    sequence = observation.get("RTROIIdentificationCodeSequence")
    if not sequence:
        return None
    code = sequence[0]
    return (str(code.CodeValue), str(code.CodingSchemeDesignator), str(code.CodeMeaning))


def _load(path: str | os.PathLike[str]) -> Dataset:
    if not Path(path).is_file():
        raise InputError(f"{path}: no such file")
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable DICOM file ({error})") from error
    if ds.get("SOPClassUID") != RTStructureSetStorage:
        raise InputError(f"{path}: not an RT Structure Set (SOP Class {ds.get('SOPClassUID')})")
    return ds


def _frame_uid(ds: Dataset) -> str | None:
    rois = ds.get("StructureSetROISequence") or []
    return next(iter(sorted({str(roi.get("ReferencedFrameOfReferenceUID", "")) for roi in rois} - {""})), None)


def _source(ds: Dataset) -> SourceSeries:
    series_uid = sop_class = None
    for frame in ds.get("ReferencedFrameOfReferenceSequence") or []:
        for study in frame.get("RTReferencedStudySequence") or []:
            for series in study.get("RTReferencedSeriesSequence") or []:
                series_uid = series_uid or str(series.SeriesInstanceUID)
                images = series.get("ContourImageSequence") or []
                sop_class = sop_class or (str(images[0].ReferencedSOPClassUID) if images else None)
    return SourceSeries(
        study_instance_uid=str(ds.StudyInstanceUID), series_instance_uid=series_uid, sop_class_uid=sop_class
    )


def _raw_ds(values: np.ndarray) -> RawDataElement:
    """ContourData as the bytes a file holds (to 0.1 µm): pydicom would otherwise check every number on the way."""
    texts = (f"{v:.4f}".rstrip("0").rstrip(".") for v in values)
    data = "\\".join("0" if t in ("", "-0") else t for t in texts).encode("ascii")
    if len(data) % 2:
        data += b" "
    return RawDataElement(_CONTOUR_DATA, "DS", len(data), data, 0, False, True)


def _contour_points(contour: Dataset) -> np.ndarray:
    """ContourData as ``(n, 3)`` floats, parsed from the raw bytes when pydicom has not converted them yet."""
    value = contour.get_item(_CONTOUR_DATA).value
    if isinstance(value, bytes):
        numbers = np.array(value.decode("ascii").strip(" \x00").split("\\"), dtype=np.float64)
    else:
        numbers = np.asarray(value, dtype=np.float64)
    return numbers.reshape(-1, 3)
