"""Label maps from any file: NIfTI/NRRD/MHA, or a DICOM SEG or RT Structure Set on its image's grid.

A DICOM label names its segments (SEG) or ROIs (RTSTRUCT) in words, and the words
differ between institutions: "Liver", "LIVER", "liver_contour", "Leber". A
:class:`LabelTable` says which label each name becomes: per label, names and
shell-style patterns (``*``, ``?``), matched without regard to case, with runs of
spaces, ``_`` and ``-`` counted as one space. ROIs that match no label are left
out and listed; several ROIs may become the same label (their union). Where ROIs
of different labels overlap, the table's ``priority`` decides (the label listed
first wins); without one an overlap is an error naming both ROIs, since a label
map can hold only one of them.

:func:`read_label` reads any of these onto a given grid and says what became of
each ROI (:class:`LabelReading`).
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import RTStructureSetStorage

from medseg.errors import ConfigError, GeometryError, InputError
from medseg.geometry import Geometry
from medseg.io import image_format, read_image
from medseg.io.canvas import Painted
from medseg.io.dicom.discovery import find_files
from medseg.volume import Segment, Volume, VolumeKind

#: SOP Class UIDs of DICOM Segmentation Storage and Label Map Segmentation Storage (a LABELMAP SEG).
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
LABEL_MAP_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"
#: What a DICOM label file may be, by SOP Class UID.
DICOM_LABEL_CLASSES = {
    SEGMENTATION_STORAGE: "SEG",
    LABEL_MAP_SEGMENTATION_STORAGE: "SEG",
    RTStructureSetStorage: "RTSTRUCT",
}

_SEPARATORS = re.compile(r"[\s_\-]+")


def normalise_name(name: str) -> str:
    """``"  Liver_Contour "`` -> ``"liver contour"``: lower case, separators as one space, trimmed."""
    return _SEPARATORS.sub(" ", name.strip().lower()).strip()


@dataclass(frozen=True)
class LabelTable:
    """Which label each ROI / segment name becomes.

    Attributes:
        labels: label number -> name (background left out).
        patterns: label number -> names and patterns that mean it (normalised); a label
            without an entry is matched by its own name.
        priority: label numbers, the one that wins an overlap first; empty: overlaps are errors.
    """

    labels: dict[int, str]
    patterns: dict[int, tuple[str, ...]] = field(default_factory=dict)
    priority: tuple[int, ...] = ()

    @classmethod
    def build(
        cls,
        labels: Mapping[int, str],
        synonyms: Mapping[str, str | Sequence[str]] | None = None,
        priority: Sequence[str | int] | None = None,
        *,
        where: str = "label table",
    ) -> LabelTable:
        """A table from label names, their synonyms by label name, and a priority by label name or number.

        Args:
            labels: label number -> name.
            synonyms: label name -> a name or pattern, or a list of them, e.g.
                ``{"liver": ["liver", "liver*", "leber"]}``; a label's own name always matches.
            priority: label names (or numbers), the first winning overlaps; labels not listed
                come after, in decreasing number.
            where: what to name in messages (the file and key).

        Raises:
            ConfigError: a synonym or priority for a label the table does not have.
        """
        number_of = {normalise_name(name): number for number, name in labels.items()}
        patterns: dict[int, tuple[str, ...]] = {}
        for name, values in (synonyms or {}).items():
            number = number_of.get(normalise_name(str(name)))
            if number is None:
                raise ConfigError(f"{where}: names for {name!r}, which is not a label ({_listing(labels)})")
            values = [values] if isinstance(values, str) else list(values)
            if not values or not all(isinstance(v, str) and v.strip() for v in values):
                raise ConfigError(f"{where}: the names for {name!r} must be a name or a list of names, got {values!r}")
            patterns[number] = tuple(dict.fromkeys([normalise_name(labels[number]), *map(normalise_name, values)]))
        order: list[int] = []
        for entry in priority or ():
            number = entry if isinstance(entry, int) and entry in labels else number_of.get(normalise_name(str(entry)))
            if number is None:
                raise ConfigError(f"{where}: priority names {entry!r}, which is not a label ({_listing(labels)})")
            order.append(number)
        if order:
            order += sorted(set(labels) - set(order), reverse=True)
        return cls(dict(labels), patterns, tuple(order))

    def patterns_of(self, number: int) -> tuple[str, ...]:
        """The normalised names and patterns that mean label ``number``."""
        return self.patterns.get(number) or (normalise_name(self.labels[number]),)

    def match(self, name: str) -> list[int]:
        """The labels whose names or patterns match ``name`` (more than one: ambiguous)."""
        text = normalise_name(name)
        return [n for n in sorted(self.labels) if any(fnmatch.fnmatchcase(text, p) for p in self.patterns_of(n))]

    def paint_order(self, matched: Mapping[int, int]) -> list[tuple[int, int]]:
        """``(source number, label)`` pairs to paint, the winner of an overlap last."""
        rank = {number: i for i, number in enumerate(self.priority)}
        if rank:
            return sorted(matched.items(), key=lambda item: (-rank[item[1]], item[0]))
        return sorted(matched.items(), key=lambda item: (item[1], item[0]))

    def segments(self) -> tuple[Segment, ...]:
        """The table's labels as segments, by number."""
        return tuple(Segment(number, name) for number, name in sorted(self.labels.items()))


@dataclass(frozen=True)
class LabelReading:
    """A label map read from a file, and what became of the file's ROIs / segments.

    Attributes:
        volume: the label map on the grid it was read onto.
        kind: ``"SEG"``, ``"RTSTRUCT"`` or ``"image"`` (NIfTI, NRRD, MHA).
        path: the file read.
        matched: ``(ROI / segment name, label name)`` for each one that became a label.
        unmatched: names of the ROIs / segments left out.
        empty: ``(ROI / segment name, label name)`` for each matched one without any contour or voxel
            (an organ not found in this case, or an ROI nobody drew).
        notes: what else was left out or resolved, one line each.
    """

    volume: Volume
    kind: str
    path: Path
    matched: tuple[tuple[str, str], ...] = ()
    unmatched: tuple[str, ...] = ()
    empty: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()

    def summary(self) -> str:
        """One line: ``"RTSTRUCT: 'Liver' -> liver, 'KIDNEY_L' -> kidney; left out: 'Body'"``."""
        if self.kind == "image":
            return "label map"
        parts = ", ".join(f"{source!r} -> {label}" for source, label in self.matched) or "no ROI matched a label"
        left = f"; left out: {', '.join(repr(n) for n in self.unmatched)}" if self.unmatched else ""
        return f"{self.kind}: {parts}{left}"


def dicom_label_kind(path: str | os.PathLike[str]) -> str | None:
    """``"SEG"`` or ``"RTSTRUCT"`` for a DICOM file of that kind, else None (reads the header only)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError):
        return None
    return DICOM_LABEL_CLASSES.get(str(ds.get("SOPClassUID", "")))


def referenced_series(path: str | os.PathLike[str]) -> list[str]:
    """The Series Instance UIDs a SEG or RTSTRUCT references (reads the header only).

    Raises:
        InputError: not a readable DICOM file.
    """
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable DICOM file ({exc})") from exc
    if str(ds.get("SOPClassUID", "")) == RTStructureSetStorage:
        return _rtstruct_series(ds)
    return [str(s.SeriesInstanceUID) for s in ds.get("ReferencedSeriesSequence") or []]


def find_dicom_labels(folder: str | os.PathLike[str]) -> list[Path]:
    """The SEG and RTSTRUCT files under ``folder`` (or ``folder`` itself, a file), sorted."""

    return [Path(p) for p in find_files(folder) if dicom_label_kind(p) is not None]


def read_label(
    path: str | os.PathLike[str],
    *,
    reference: Geometry | None = None,
    table: LabelTable | None = None,
    series_uid: str | None = None,
) -> LabelReading:
    """Read a label map: a NIfTI/NRRD/MHA file, or a DICOM SEG / RTSTRUCT (or a folder holding one).

    Args:
        path: the file, or for DICOM a folder holding exactly one SEG or RTSTRUCT.
        reference: the grid of the image the labels belong to; needed for an RTSTRUCT (its
            contours are filled on it), and a SEG's frames are placed on it.
        table: which ROI / segment becomes which label; without one, a DICOM label keeps
            its own numbers and names (as :func:`~medseg.io.seg.read_seg` and
            :func:`~medseg.io.rtstruct.read_rtstruct` read them).
        series_uid: the image series the labels must reference, when known.

    Raises:
        InputError: missing or unreadable file; a folder with no or several DICOM labels; a
            DICOM label that references another series; an ROI that matches several labels.
        GeometryError: contours or frames off the grid, another frame of reference, or
            overlapping ROIs of different labels without a priority.
    """

    path = Path(path)
    if image_format(path) is not None:
        return LabelReading(read_image(path, kind=VolumeKind.LABEL), "image", path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        found = find_dicom_labels(path)
        if len(found) != 1:
            what = "no DICOM SEG or RTSTRUCT" if not found else f"{len(found)} DICOM labels ({found[0].name}, ...)"
            raise InputError(f"{path}: holds {what}; name the file")
        path = found[0]
    kind = dicom_label_kind(path)
    if kind is None:
        raise InputError(f"{path}: not a label map (NIfTI, NRRD, MHA) or a DICOM SEG / RTSTRUCT")
    if kind == "RTSTRUCT":
        return _read_rtstruct(path, reference, table, series_uid)
    return _read_seg(path, reference, table, series_uid)


def _read_rtstruct(
    path: Path, reference: Geometry | None, table: LabelTable | None, series_uid: str | None
) -> LabelReading:
    from medseg.io.rtstruct import load_rtstruct, paint_rtstruct, read_rtstruct  # highdicom: loaded for RTSTRUCT only

    if reference is None:
        raise InputError(f"{path}: an RTSTRUCT holds contours, not voxels; give the image series it was drawn on")
    ds = load_rtstruct(path)
    _check_series(path, _rtstruct_series(ds), series_uid)
    if table is None:
        volume = read_rtstruct(path, reference=reference, dataset=ds)
        return LabelReading(volume, "RTSTRUCT", path, tuple((s.name, s.name) for s in volume.segments))
    rois = ds.get("StructureSetROISequence") or []
    names = {int(roi.ROINumber): str(roi.get("ROIName") or f"ROI {roi.ROINumber}") for roi in rois}
    matched, unmatched = _match(path, names, table)
    painted = paint_rtstruct(ds, reference=reference, paint=table.paint_order(matched), path=path)
    return _reading(path, "RTSTRUCT", painted, matched, unmatched, table, reference)


def _read_seg(path: Path, reference: Geometry | None, table: LabelTable | None, series_uid: str | None) -> LabelReading:
    from medseg.io.seg import load_seg, paint_seg, read_seg, seg_grid  # highdicom: loaded for SEG only

    seg = load_seg(path)
    referenced = [str(s.SeriesInstanceUID) for s in seg.get("ReferencedSeriesSequence") or []]
    _check_series(path, referenced, series_uid)
    if table is None:
        volume = read_seg(path, reference=reference, seg=seg)
        return LabelReading(volume, "SEG", path, tuple((s.name, s.name) for s in volume.segments))
    if reference is None:
        reference = seg_grid(seg, path=path)
    names = {int(item.SegmentNumber): str(item.get("SegmentLabel", "")) for item in seg.SegmentSequence}
    names.pop(0, None)  # a LABELMAP SEG may describe its background as segment 0
    matched, unmatched = _match(path, names, table)
    painted = paint_seg(seg, reference=reference, paint=table.paint_order(matched), path=path)
    return _reading(path, "SEG", painted, matched, unmatched, table, reference)


def _match(path: Path, names: Mapping[int, str], table: LabelTable) -> tuple[dict[int, int], list[str]]:
    """Source number -> label for the names that match one label; the names that match none."""
    matched: dict[int, int] = {}
    unmatched = []
    for number, name in names.items():
        labels = table.match(name)
        if len(labels) > 1:
            choices = " and ".join(table.labels[n] for n in labels)
            raise InputError(f"{path}: ROI {name!r} matches the labels {choices}; make their names tell them apart")
        if labels:
            matched[number] = labels[0]
        else:
            unmatched.append(name)
    return matched, unmatched


def _reading(
    path: Path,
    kind: str,
    painted: Painted,
    matched: Mapping[int, int],
    unmatched: list[str],
    table: LabelTable,
    reference: Geometry,
) -> LabelReading:
    notes = list(painted.notes)
    roi_of = {label: [painted.names[n] for n in matched if matched[n] == label] for label in set(matched.values())}

    def rois(label: int) -> str:
        return f"{'/'.join(map(repr, roi_of[label]))} ({table.labels[label]})"

    for (low, high), voxels in sorted(painted.overlaps.items()):
        pair = f"{rois(low)} and {rois(high)}"
        if not table.priority:
            raise GeometryError(
                f"{path}: ROIs {pair} overlap in {voxels} voxel(s); declare a label priority to say which one wins"
            )
        notes.append(f"ROIs {pair} overlap in {voxels} voxel(s): {table.labels[high]} wins (label priority)")
    for label, rois in sorted(roi_of.items()):
        if len(rois) > 1:
            notes.append(f"ROIs {', '.join(map(repr, rois))} all became {table.labels[label]} (their union)")
    volume = Volume(
        painted.array,
        reference,
        kind=VolumeKind.LABEL,
        segments=table.segments(),
        path=os.fspath(path),
    )
    pairs = tuple((painted.names[n], table.labels[matched[n]]) for n in painted.painted)
    empty = tuple((painted.names[n], table.labels[matched[n]]) for n in painted.empty)
    return LabelReading(volume, kind, path, pairs, tuple(unmatched), empty, tuple(notes))


def _rtstruct_series(ds: pydicom.Dataset) -> list[str]:
    return [
        str(series.SeriesInstanceUID)
        for frame in ds.get("ReferencedFrameOfReferenceSequence") or []
        for study in frame.get("RTReferencedStudySequence") or []
        for series in study.get("RTReferencedSeriesSequence") or []
    ]


def _check_series(path: Path, referenced: Iterable[str], series_uid: str | None) -> None:
    referenced = list(referenced)
    if series_uid and referenced and series_uid not in referenced:
        raise InputError(f"{path}: references series {', '.join(referenced)}, not the image's series {series_uid}")


def _listing(labels: Mapping[int, str]) -> str:
    return ", ".join(f"{n}: {name}" for n, name in sorted(labels.items())) or "none declared"
