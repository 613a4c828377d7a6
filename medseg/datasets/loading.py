"""Reading one case into volumes: its channels stacked on one grid, and its label map.

:func:`inspect_case` reads a case and collects everything wrong with it instead
of stopping at the first problem; :func:`load_case` raises when it found errors,
and :func:`medseg.datasets.check_dataset` reports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg.datasets.model import Case, CaseProblem, Dataset, Severity
from medseg.errors import GeometryError, InputError, MedsegError
from medseg.geometry import Geometry
from medseg.io import image_format, read_image
from medseg.io.labels import read_label
from medseg.io.nifti import label_dtype
from medseg.volume import Segment, Volume, VolumeKind

#: How far (mm) the voxels of two grids may lie apart and still count as one grid.
GRID_TOLERANCE_MM = 0.01
_CHUNK = 1 << 24  # voxels per bincount pass, to bound memory on large label maps


@dataclass
class CaseInspection:
    """What reading one case gave: the volumes where they could be built, and the problems."""

    case: Case
    image: Volume | None = None
    label: Volume | None = None
    label_values: tuple[int, ...] = ()
    _found: list[tuple[CaseProblem, type[MedsegError]]] = field(default_factory=list, repr=False)

    @property
    def problems(self) -> list[CaseProblem]:
        """Everything found wrong, in the order found."""
        return [problem for problem, _ in self._found]

    def add(
        self, path: object, message: str, error: type[MedsegError] = InputError, severity: Severity = "error"
    ) -> None:
        """Record a problem; ``error`` is the exception :func:`load_case` raises for it."""
        self._found.append((CaseProblem(self.case.case_id, str(path), message, severity), error))

    def raise_errors(self) -> None:
        """Raise the first error's exception type, listing every error of the case (one line each)."""
        errors = [(p, error) for p, error in self._found if p.severity == "error"]
        if not errors:
            return
        lines = [f"{p.path}: {p.message}" for p, _ in errors]
        text = lines[0] if len(lines) == 1 else f"{len(lines)} problems:\n  " + "\n  ".join(lines)
        raise errors[0][1](f"case {self.case.case_id!r}: {text}")


def load_case(dataset: Dataset, case: Case, *, tolerance_mm: float = GRID_TOLERANCE_MM) -> tuple[Volume, Volume | None]:
    """Read a case: the image with one channel per dataset channel, and its label map.

    The label map (kind LABEL, the dataset's labels as segments) is put on the
    image's grid, from which it may differ by at most ``tolerance_mm``.

    Raises:
        InputError: a file is missing or unreadable, the channel count is wrong,
            or the label map holds non-integer, negative or undeclared values.
        GeometryError: the channels' grids differ, or the label's differs from them.
        Each message names the case and the file, and lists every error found.
    """
    found = inspect_case(dataset, case, tolerance_mm=tolerance_mm)
    found.raise_errors()
    if found.image is None:  # only when the case names no image at all
        raise InputError(f"case {case.case_id!r}: names no image file")
    return found.image, found.label


def inspect_case(dataset: Dataset, case: Case, *, tolerance_mm: float = GRID_TOLERANCE_MM) -> CaseInspection:
    """Read every file of a case and collect all its problems; never raises for bad data."""
    found = CaseInspection(case)
    reference = _read_channels(dataset, found, tolerance_mm)
    if case.label is not None:
        _read_label(dataset, found, reference, tolerance_mm)
    return found


def _read_channels(dataset: Dataset, found: CaseInspection, tolerance_mm: float) -> Geometry | None:
    """Set ``found.image`` when every channel reads onto one grid; return the first channel's grid."""
    case, channels = found.case, dataset.channels
    per_file = len(case.images) == len(channels)
    volumes: list[Volume] = []
    for index, path in enumerate(case.images):
        what = f"channel {channels[index]}" if per_file else "image"
        volume = _read(found, path, what)
        if volume is None:
            continue
        if volumes:
            first = volumes[0]
            try:
                first.geometry.require_same_grid(
                    volume.geometry,
                    tolerance_mm=tolerance_mm,
                    what=f"grids of channel {channels[0]} ({Path(first.path or '').name}) and {what}",
                )
            except GeometryError as exc:
                found.add(path, str(exc), GeometryError)
                continue
        volumes.append(volume)
    if not volumes:
        return None
    reference = volumes[0].geometry
    if len(volumes) != len(case.images):
        return reference
    count = sum(v.num_channels for v in volumes)
    if count != len(channels):
        culprit = next((v for v in volumes if v.num_channels != 1), volumes[0]) if per_file else volumes[0]
        where = "each file must hold one channel" if per_file else "the file must hold them all"
        found.add(
            culprit.path,
            f"holds {culprit.num_channels} channel(s) but the dataset has {len(channels)} {list(channels)}; {where}",
        )
        return reference
    array = volumes[0].array if len(volumes) == 1 else np.concatenate([v.array for v in volumes], axis=0)
    first = volumes[0]
    found.image = Volume(
        array, reference, kind=VolumeKind.IMAGE, source=first.source, path=first.path if len(volumes) == 1 else None
    )
    return reference


def _read_label(dataset: Dataset, found: CaseInspection, reference: Geometry | None, tolerance_mm: float) -> None:
    path = found.case.label
    if path is not None and image_format(path) is None and Path(path).exists():
        raw = _read_dicom_label(dataset, found, reference)
    else:
        raw = _read(found, path, "label map")
    if raw is None:
        return
    if raw.num_channels != 1:
        found.add(path, f"a label map must have one channel, this one has {raw.num_channels}")
        return
    array = _to_label_array(found, path, raw.array)
    if array is None:
        return
    values = label_values(array)
    found.label_values = tuple(values)
    declared = dataset.labels
    undeclared = [v for v in values if v != 0 and v not in declared]
    if declared and undeclared:
        listing = ", ".join(f"{n} {name}" for n, name in declared.items())
        found.add(path, f"label value(s) {undeclared} are not declared (the dataset declares 0 background, {listing})")
    if not any(values):
        found.add(path, "label map is empty (background only)", severity="warning")
    geometry = raw.geometry
    if reference is not None:
        try:
            reference.require_same_grid(raw.geometry, tolerance_mm=tolerance_mm, what="image and label grids")
            geometry = reference
        except GeometryError as exc:
            found.add(path, str(exc), GeometryError)
    names = declared or {v: f"label_{v}" for v in values if v}
    segments = tuple(Segment(number, name) for number, name in sorted(names.items()))
    found.label = Volume(array, geometry, kind=VolumeKind.LABEL, source=raw.source, segments=segments, path=raw.path)


def _read_dicom_label(dataset: Dataset, found: CaseInspection, reference: Geometry | None) -> Volume | None:
    """A SEG or RTSTRUCT on the image's grid, its ROIs named by the dataset's label table."""
    path = found.case.label
    if reference is None:  # the image is unreadable: reported already
        return None
    if not dataset.labels:
        found.add(path, "a DICOM label needs the dataset's labels declared (to tell which ROI is which label)")
        return None
    series_uid = found.image.source.series_instance_uid if found.image is not None else None
    try:
        reading = read_label(path, reference=reference, table=dataset.table, series_uid=series_uid)
    except (InputError, GeometryError) as exc:
        found.add(path, _without_path(str(exc), path), type(exc))
        return None
    found.add(reading.path, reading.summary(), severity="note")
    for note in reading.notes:
        found.add(reading.path, note, severity="note")
    if reading.unmatched:
        left = ", ".join(repr(n) for n in reading.unmatched)
        found.add(reading.path, f"ROI(s) {left} match no label and are left out", severity="warning")
    for roi, label in reading.empty:
        found.add(reading.path, f"ROI {roi!r} (label {label}) holds no contour or voxel", severity="warning")
    return reading.volume


def _without_path(message: str, path: object) -> str:
    prefix = f"{path}: "
    return message.removeprefix(prefix)


def _read(found: CaseInspection, path: Path | None, what: str) -> Volume | None:
    if path is None or not Path(path).exists():
        found.add(path, f"missing {what} file")
        return None
    try:
        return read_image(path)
    except (InputError, GeometryError, OSError) as exc:
        message = _without_path(str(exc), path)
        found.add(path, f"unreadable {what}: {message}", type(exc) if isinstance(exc, MedsegError) else InputError)
        return None


def _to_label_array(found: CaseInspection, path: object, array: np.ndarray) -> np.ndarray | None:
    """The label map as non-negative integers of the smallest type, or None after recording why not."""
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        rounded = np.rint(array)
        off = (rounded != array) | ~np.isfinite(array)
        if off.any():
            examples = sorted({float(v) for v in array[off][:1000].tolist()})[:3]
            found.add(
                path,
                f"label map holds non-integer values ({int(off.sum())} voxels, e.g. {examples}); "
                "labels must be whole numbers",
            )
            return None
        array = rounded
    low = array.min() if array.size else 0
    if low < 0:
        found.add(path, f"label map holds negative values (minimum {low}); labels are 0 (background) or more")
        return None
    return array.astype(label_dtype(array), copy=False)


def label_values(array: np.ndarray) -> list[int]:
    """The distinct values of a non-negative integer array, ascending."""
    flat = array.reshape(-1)
    if flat.size == 0:
        return []
    high = int(flat.max())
    if high >= 1 << 20:
        return [int(v) for v in np.unique(flat)]
    counts = np.zeros(high + 1, dtype=np.int64)
    for start in range(0, flat.size, _CHUNK):
        counts += np.bincount(flat[start : start + _CHUNK], minlength=high + 1)
    return np.flatnonzero(counts).tolist()
