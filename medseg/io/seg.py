"""DICOM Segmentation (SEG) objects: write a label map onto its scan's instances, and read one back.

:func:`write_seg` builds a BINARY segmentation with highdicom from the source
images' headers, so every frame carries the position and orientation of the
stored slice it was derived from and references that instance: a feet-first or
gantry-tilted (sheared) series needs no special case. :func:`read_seg` places
each frame back onto a grid by its position; :func:`check_seg` does that for a
file just written and compares it voxel for voxel.

Segment numbers: BINARY SEG numbers its segments 1, 2, ... (the standard asks
for it). They equal the label values whenever those are 1..N; otherwise labels
are numbered in increasing order (see :func:`medseg.io.dicom_outputs.output_segments`)
and read back under the SEG's numbers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sr.coding import Code as PydicomCode
from pydicom.uid import generate_uid
from pydicom.valuerep import format_number_as_ds

from medseg import __version__
from medseg.errors import GeometryError, InputError, MedsegError
from medseg.geometry import Geometry
from medseg.io.canvas import LabelCanvas, Painted, paint_order
from medseg.io.dicom_outputs import (
    SLICE_TOLERANCE_MM,
    AlgorithmIdentity,
    OutputSegment,
    check_code_string,
    check_long_string,
    output_segments,
    read_source_slices,
    shared_or_frame_item,
)
from medseg.io.files import atomic_path
from medseg.volume import Code, Segment, SourceSeries, Volume, VolumeKind

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegCheck:
    """The result of reading a written SEG back (see :func:`check_seg`).

    Attributes:
        ok: the file reads back as the label map, voxel for voxel, and references
            every source instance.
        message: one line saying what was found, e.g.
            ``"read back: 3 segments, 41 frames, voxel-identical"``.
    """

    ok: bool
    message: str


def write_seg(
    labels: Volume,
    path: str | os.PathLike[str],
    *,
    algorithm: AlgorithmIdentity,
    series_number: int = 9001,
    series_description: str = "medseg segmentation",
    content_label: str = "MEDSEG",
) -> Path:
    """Write a label map as a BINARY DICOM SEG on the instances it was predicted from.

    One segment per entry of ``labels.segments`` and per label present in the array
    (see :func:`~medseg.io.dicom_outputs.output_segments`), algorithm type AUTOMATIC
    with ``algorithm``'s identity. Frames without any voxel are left out; each
    written frame takes its plane position from its source instance and references
    it. The file is written atomically.

    Args:
        labels: a label map on the grid of a DICOM series, with that series as
            ``source`` (e.g. ``image.with_array(...)``). Classic single-frame and
            enhanced multi-frame sources are supported.
        path: the file to write.
        algorithm: the model that made the mask.
        series_number: SeriesNumber of the new series.
        series_description: SeriesDescription of the new series.
        content_label: ContentLabel (a DICOM code string: A-Z, 0-9, space, ``_``).

    Returns:
        ``path``.

    Raises:
        InputError: no DICOM source, a resampled source, a grid that is not the
            source's, or invalid names (see :func:`~medseg.io.dicom_outputs.read_source_slices`).
    """
    check_code_string(content_label, "content label")
    check_long_string(series_description, "series description")
    slices = read_source_slices(labels, what="DICOM SEG")
    segments = output_segments(labels)
    stack = _segment_number_stack(labels, segments)  # (K, rows, columns)
    if slices.is_multiframe:
        # highdicom pairs pixel_array[n] with frame n + 1 of a multi-frame source.
        frames = np.zeros((int(slices.first.NumberOfFrames), *stack.shape[1:]), dtype=stack.dtype)
        frames[np.asarray(slices.frame_numbers) - 1] = stack
        stack = frames
    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm.name, family=PydicomCode(*algorithm.family), version=algorithm.version, source="medseg"
    )
    kind = hd.seg.SegmentAlgorithmTypeValues(algorithm.kind)
    manual = kind == hd.seg.SegmentAlgorithmTypeValues.MANUAL
    descriptions = [_description(segment, kind, None if manual else identification) for segment in segments]
    try:
        seg = hd.seg.Segmentation(
            source_images=list(slices.headers),
            pixel_array=stack,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=generate_uid(),
            series_number=series_number,
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer="medseg",
            manufacturer_model_name=algorithm.name,
            software_versions=f"medseg {__version__}",
            device_serial_number="0",  # software has no serial number; the attribute is required
            content_label=content_label,
            content_description=algorithm.description,
            series_description=series_description,
            omit_empty_frames=bool(stack.any()),  # an all-empty mask keeps its frames: a SEG needs one
        )
    except (ValueError, TypeError, KeyError, AttributeError) as error:  # e.g. KeyError: a SOP class it has no IOD for
        raise InputError(f"{path}: highdicom refused the segmentation: {type(error).__name__}: {error}") from error
    _add_slice_spacing(seg, labels)
    with atomic_path(path) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    log.info(
        "wrote SEG %s: %d segments, %d frames, referencing series %s",
        seg.SOPInstanceUID,
        len(segments),
        int(seg.NumberOfFrames),
        labels.source.series_instance_uid,
    )
    return Path(path)


def read_seg(
    path: str | os.PathLike[str],
    *,
    reference: Geometry | None = None,
    tolerance_mm: float = SLICE_TOLERANCE_MM,
    seg: hd.seg.Segmentation | None = None,
) -> Volume:
    """Read a DICOM SEG as a label map (uint8, or uint16 past 255 segments).

    Each frame is placed by its plane position. Where segments overlap, the higher
    segment number wins. FRACTIONAL segmentations count a voxel in where its value is
    at least half the maximum; LABELMAP segmentations keep their values.

    Args:
        path: the SEG file.
        reference: the grid to place frames on (e.g. the scan's, or another label
            map's). Without it, the grid is the SEG's own: its frames' orientation and
            spacing, from its first to its last frame along the slice normal, stepping
            by SpacingBetweenSlices (or the smallest gap between frames).
        tolerance_mm: how far a frame may lie from a slice of the grid.
        seg: the file as :func:`load_seg` read it, when it is read already.

    Returns:
        A label volume: segments (names, codes, colours) from the SEG's segment table,
        ``source`` naming the study and the referenced series.

    Raises:
        InputError: the file is missing or not a readable SEG.
        GeometryError: a frame does not lie on a slice of ``reference`` (or of the
            SEG's own grid), or the frames of reference differ.
    """
    return _to_volume(seg if seg is not None else _load(path), path, reference, tolerance_mm)


def check_seg(path: str | os.PathLike[str], labels: Volume) -> SegCheck:
    """Read a SEG written from ``labels`` back and compare it voxel for voxel.

    Also checks the segment names and that every source instance is referenced.
    Problems (including an unreadable file) come back as ``ok=False`` with the
    reason, not as exceptions, so the result can go into a manifest.
    """
    try:
        seg = _load(path)
        volume = _to_volume(seg, path, labels.geometry, SLICE_TOLERANCE_MM)
        segments = output_segments(labels)
    except MedsegError as error:
        return SegCheck(False, f"cannot read back: {error}")
    frames = int(seg.NumberOfFrames)
    summary = f"read back: {len(volume.segments)} segments, {frames} frames"
    names = [s.name for s in volume.segments]
    if names != [s.name for s in segments]:
        return SegCheck(False, f"{summary}; segment names {names} differ from {[s.name for s in segments]}")
    expected = _segment_numbers(labels.channel(0), segments)
    written = volume.channel(0)
    differ = expected != written
    if np.any(differ):
        first = tuple(int(v) for v in np.argwhere(differ)[0])
        return SegCheck(
            False,
            f"{summary}; {int(differ.sum())} voxels differ, first at (i, j, k) {first}: "
            f"expected segment {int(expected[first])}, read {int(written[first])}",
        )
    referenced = {uid for _, _, uid in seg.get_source_image_uids()}
    missing = [uid for uid in dict.fromkeys(labels.source.sop_instance_uids) if uid not in referenced]
    if missing:
        return SegCheck(False, f"{summary}; {len(missing)} source instance(s) not referenced, e.g. {missing[0]}")
    return SegCheck(True, f"{summary}, voxel-identical")


# -- writing --------------------------------------------------------------------------------


def _segment_numbers(array: np.ndarray, segments: tuple[OutputSegment, ...]) -> np.ndarray:
    """The label array with each label replaced by its SEG segment number."""
    lookup = np.zeros(max(int(array.max()), max(s.label for s in segments)) + 1, dtype=np.uint16)
    for segment in segments:
        lookup[segment.label] = segment.number
    dtype = np.uint8 if len(segments) < 256 else np.uint16
    return lookup[array].astype(dtype)


def _segment_number_stack(labels: Volume, segments: tuple[OutputSegment, ...]) -> np.ndarray:
    """``(K, rows, columns)`` frames of segment numbers: the ``(I, J, K)`` array's slices, transposed."""
    numbers = _segment_numbers(labels.channel(0), segments)
    return np.ascontiguousarray(numbers.transpose(2, 1, 0))


def _description(
    segment: OutputSegment,
    kind: hd.seg.SegmentAlgorithmTypeValues,
    identification: hd.AlgorithmIdentificationSequence | None,
) -> hd.seg.SegmentDescription:
    color = hd.color.CIELabColor.from_rgb(*segment.color) if segment.color is not None else None
    return hd.seg.SegmentDescription(
        segment_number=segment.number,
        segment_label=segment.name,
        segmented_property_category=PydicomCode(*segment.category),
        segmented_property_type=PydicomCode(*segment.type),
        algorithm_type=kind,
        algorithm_identification=identification,
        display_color=color,
    )


def _add_slice_spacing(seg: hd.seg.Segmentation, labels: Volume) -> None:
    """Record the distance between slice planes, so a reader can rebuild the grid when frames are left out.

    highdicom adds it for stacks along the normal; a gantry-tilted (sheared) stack gets
    it here: the step of ``k`` measured along the slice normal.
    """
    if labels.spatial_shape[2] < 2:
        return
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    if "SpacingBetweenSlices" not in measures:
        affine = labels.geometry.affine[:3, :3]
        normal = np.cross(affine[:, 0], affine[:, 1])
        step = abs(float(affine[:, 2] @ normal / np.linalg.norm(normal)))
        measures.SpacingBetweenSlices = format_number_as_ds(step)


# -- reading --------------------------------------------------------------------------------


def _load(path: str | os.PathLike[str]) -> hd.seg.Segmentation:
    if not Path(path).is_file():
        raise InputError(f"{path}: no such file")
    try:
        return hd.seg.segread(path)
    except (InvalidDicomError, ValueError, AttributeError, KeyError, TypeError) as error:
        raise InputError(f"{path}: not a readable DICOM SEG ({error})") from error


def _to_volume(
    seg: hd.seg.Segmentation, path: str | os.PathLike[str], reference: Geometry | None, tolerance_mm: float
) -> Volume:
    segments = tuple(_segment(item) for item in seg.SegmentSequence if int(item.SegmentNumber) > 0)
    if reference is None:
        reference = seg_grid(seg, path=path, tolerance_mm=tolerance_mm)
    painted = paint_seg(seg, reference=reference, tolerance_mm=tolerance_mm, path=path)
    return Volume(
        painted.array,
        Geometry(reference.shape, reference.affine, seg.get("FrameOfReferenceUID") or reference.frame_of_reference_uid),
        kind=VolumeKind.LABEL,
        source=_source(seg),
        segments=segments,
        path=os.fspath(path),
    )


def seg_grid(
    seg: hd.seg.Segmentation, *, path: str | os.PathLike[str] | None = None, tolerance_mm: float = SLICE_TOLERANCE_MM
) -> Geometry:
    """The SEG's own grid (see :func:`read_seg`), for a SEG read by :func:`load_seg`.

    Raises:
        InputError, GeometryError: no frames, or frames that do not form a regular stack.
    """
    planes = [_frame_plane(seg, f, path) for f in range(int(seg.NumberOfFrames))]
    return _own_grid(seg, planes, path, tolerance_mm)


def paint_seg(
    seg: hd.seg.Segmentation | str | os.PathLike[str],
    *,
    reference: Geometry,
    paint: Sequence[tuple[int, int]] | None = None,
    tolerance_mm: float = SLICE_TOLERANCE_MM,
    path: str | os.PathLike[str] | None = None,
) -> Painted:
    """Place chosen segments of a DICOM SEG on a grid, as chosen labels.

    Args:
        seg: the SEG (a path, or one read by :func:`load_seg`).
        reference: the grid to place frames on.
        paint: ``(segment number, label)`` pairs, painted in this order (later ones on top);
            segments not listed are left out. Default: every segment as its own number, in
            increasing order (a LABELMAP SEG: its pixel values).
        tolerance_mm: how far a frame may lie from a slice of the grid.
        path: the file's name for messages, when ``seg`` is already read.

    Raises:
        InputError, GeometryError: as :func:`read_seg`.
    """
    if not isinstance(seg, hd.seg.Segmentation):
        path, seg = seg, _load(seg)
    count = int(seg.NumberOfFrames)
    kind = str(seg.SegmentationType)
    names = {
        int(item.SegmentNumber): str(item.get("SegmentLabel", f"segment {item.SegmentNumber}"))
        for item in seg.SegmentSequence
        if int(item.SegmentNumber) > 0
    }
    frame_uid = seg.get("FrameOfReferenceUID")
    if reference.frame_of_reference_uid and frame_uid and reference.frame_of_reference_uid != frame_uid:
        raise GeometryError(
            f"{path}: the SEG's frame of reference {frame_uid} is not the grid's {reference.frame_of_reference_uid}"
        )
    planes = [_frame_plane(seg, f, path) for f in range(count)]
    numbers = [_frame_segment(seg, f, kind, path) for f in range(count)]
    pixels = seg.get_stored_frames()
    if kind == "LABELMAP" and paint is None:
        values = sorted(set(names) | set(np.unique(pixels).tolist()) - {0})
        order = [(int(v), int(v)) for v in values]
    else:
        order = paint_order(list(names), paint)
    canvas = LabelCanvas(reference.shape, max([label for _, label in order], default=0))
    empty = []
    for number, label in order:
        frames = [f for f in range(count) if numbers[f] in (number, 0)]
        voxels = 0
        for f in frames:
            frame = pixels[f]
            if kind == "LABELMAP":
                hit = frame == number
            elif kind == "FRACTIONAL":
                hit = frame >= int(seg.MaximumFractionalValue) / 2
            else:
                hit = frame > 0
            voxels += int(np.count_nonzero(hit))
            _place(canvas, np.where(hit, label, 0), planes[f], reference, path, f + 1, tolerance_mm)
        if not voxels:
            empty.append(number)
    return Painted(canvas.array, names, tuple(n for n, _ in order), tuple(empty), dict(canvas.overlaps))


def load_seg(path: str | os.PathLike[str]) -> hd.seg.Segmentation:
    """Read a DICOM SEG (highdicom decodes its frames).

    Raises:
        InputError: the file is missing or not a readable SEG.
    """
    return _load(path)


@dataclass(frozen=True)
class _Plane:
    position: np.ndarray  # centre of the frame's first pixel, LPS mm
    column_step: np.ndarray  # LPS mm from one column to the next (along a row)
    row_step: np.ndarray  # LPS mm from one row to the next (down a column)
    rows: int
    columns: int


def _frame_plane(seg: hd.seg.Segmentation, index: int, path: object) -> _Plane:
    position = shared_or_frame_item(seg, index, "PlanePositionSequence")
    orientation = shared_or_frame_item(seg, index, "PlaneOrientationSequence")
    measures = shared_or_frame_item(seg, index, "PixelMeasuresSequence")
    if position is None or orientation is None or measures is None or "PixelSpacing" not in measures:
        raise InputError(f"{path}: frame {index + 1} has no plane position, orientation or pixel spacing")
    cosines = np.array([float(v) for v in orientation.ImageOrientationPatient])
    spacing_row, spacing_col = (float(v) for v in measures.PixelSpacing)
    return _Plane(
        position=np.array([float(v) for v in position.ImagePositionPatient]),
        column_step=cosines[:3] * spacing_col,
        row_step=cosines[3:] * spacing_row,
        rows=int(seg.Rows),
        columns=int(seg.Columns),
    )


def _frame_segment(seg: hd.seg.Segmentation, index: int, kind: str, path: object) -> int:
    if kind == "LABELMAP":
        return 0
    item = shared_or_frame_item(seg, index, "SegmentIdentificationSequence")
    if item is None:
        raise InputError(f"{path}: frame {index + 1} names no segment")
    return int(item.ReferencedSegmentNumber)


def _own_grid(seg: hd.seg.Segmentation, planes: list[_Plane], path: object, tolerance_mm: float) -> Geometry:
    """The grid the frames span: their axes, from the first to the last plane along the normal."""
    if not planes:
        raise InputError(f"{path}: the SEG has no frames")
    first = planes[0]
    steps = np.array([np.concatenate([p.column_step, p.row_step]) for p in planes])
    if np.max(np.abs(steps - steps[0])) > 1e-4:
        raise GeometryError(f"{path}: frames differ in orientation or pixel spacing; pass a reference grid")
    normal = np.cross(first.column_step, first.row_step)
    normal /= np.linalg.norm(normal)
    positions = np.unique(np.round(np.array([p.position for p in planes]), 6), axis=0)
    distances = positions @ normal
    order = np.argsort(distances)
    positions, distances = positions[order], distances[order]
    measures = shared_or_frame_item(seg, 0, "PixelMeasuresSequence")
    spacing = float(measures.get("SpacingBetweenSlices") or 0.0) if measures is not None else 0.0
    gaps = np.diff(distances)
    if np.any(gaps < 1e-3):
        raise GeometryError(f"{path}: several frame positions share a plane; pass a reference grid")
    if len(positions) == 1:
        thickness = float(measures.get("SliceThickness") or 0.0) if measures is not None else 0.0
        step_vector = normal * (spacing or thickness or 1.0)
        count = 1
    else:
        step = spacing or float(gaps.min())
        count = int(round((distances[-1] - distances[0]) / step)) + 1
        step_vector = (positions[-1] - positions[0]) / (count - 1)
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2], affine[:3, 3] = (
        first.column_step,
        first.row_step,
        step_vector,
        positions[0],
    )
    geometry = Geometry((first.columns, first.rows, count), affine, seg.get("FrameOfReferenceUID"))
    k = np.rint((distances - distances[0]) / (step_vector @ normal))
    grid_points = geometry.index_to_physical(np.column_stack([np.zeros((k.size, 2)), k]))
    off = float(np.max(np.linalg.norm(positions - grid_points, axis=1)))
    if off > tolerance_mm:
        raise GeometryError(
            f"{path}: frame positions are up to {off:.3g} mm off a regular stack (tolerance {tolerance_mm} mm); "
            "pass a reference grid"
        )
    return geometry


def _place(
    out: LabelCanvas,
    values: np.ndarray,
    plane: _Plane,
    grid: Geometry,
    path: object,
    frame_number: int,
    tolerance_mm: float,
) -> None:
    """Write a frame's non-zero pixels into ``out`` at the grid voxels they lie on."""
    inverse = np.linalg.inv(grid.affine[:3, :3])
    origin = inverse @ (plane.position - grid.affine[:3, 3])  # grid index of the frame's first pixel
    along_row, down_column = inverse @ plane.column_step, inverse @ plane.row_step
    snapped = [np.rint(v) for v in (origin, along_row, down_column)]
    axes = grid.affine[:3, :3]
    error_mm = (
        np.linalg.norm(axes @ (origin - snapped[0]))
        + np.linalg.norm(axes @ (along_row - snapped[1])) * (plane.columns - 1)
        + np.linalg.norm(axes @ (down_column - snapped[2])) * (plane.rows - 1)
    )
    unit = [np.sum(np.abs(v)) == 1 and np.max(np.abs(v)) == 1 for v in snapped[1:]]
    if error_mm > tolerance_mm or not all(unit) or np.array_equal(np.abs(snapped[1]), np.abs(snapped[2])):
        raise GeometryError(
            f"{path}: frame {frame_number} at {np.round(plane.position, 3).tolist()} mm is not on a slice of "
            f"{grid!r}: its first pixel falls at index {np.round(origin, 3).tolist()}, {error_mm:.3g} mm off "
            f"(tolerance {tolerance_mm} mm)"
        )
    rows, columns = np.nonzero(values)
    if rows.size == 0:
        return
    index = snapped[0][:, None] + np.outer(snapped[1], columns) + np.outer(snapped[2], rows)
    index = index.astype(np.int64)
    shape = np.array(grid.shape)[:, None]
    if np.any(index < 0) or np.any(index >= shape):
        raise GeometryError(f"{path}: frame {frame_number} has segment voxels outside the grid {grid!r}")
    out.paint(tuple(index), values[rows, columns])


def _segment(item: Dataset) -> Segment:
    color = None
    if "RecommendedDisplayCIELabValue" in item:
        lab = hd.color.CIELabColor.from_dicom_value([int(v) for v in item.RecommendedDisplayCIELabValue])
        color = tuple(int(round(c)) for c in lab.to_rgb(clip=True))
    return Segment(
        number=int(item.SegmentNumber),
        name=str(item.get("SegmentLabel", f"segment {item.SegmentNumber}")),
        color=color,  # type: ignore[arg-type]
        category=_code(item, "SegmentedPropertyCategoryCodeSequence"),
        type=_code(item, "SegmentedPropertyTypeCodeSequence"),
    )


def _code(item: Dataset, keyword: str) -> Code | None:
    sequence = item.get(keyword)
    if not sequence:
        return None
    code = sequence[0]
    return (str(code.CodeValue), str(code.CodingSchemeDesignator), str(code.CodeMeaning))


def _source(seg: hd.seg.Segmentation) -> SourceSeries:
    referenced = seg.get("ReferencedSeriesSequence") or []
    series_uid = str(referenced[0].SeriesInstanceUID) if referenced else None
    instances = referenced[0].get("ReferencedInstanceSequence") if referenced else None
    sop_class = str(instances[0].ReferencedSOPClassUID) if instances else None
    return SourceSeries(
        study_instance_uid=str(seg.StudyInstanceUID),
        series_instance_uid=series_uid,
        sop_class_uid=sop_class,
    )
