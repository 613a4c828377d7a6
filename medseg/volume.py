"""The one volume type that carries voxels, geometry and provenance everywhere.

A :class:`Volume` is immutable: its array is a read-only, channels-first
``(C, I, J, K)`` array whose spatial axes follow :mod:`medseg.geometry`'s
convention. Derived volumes (a prediction, a resampled image) are made with
:meth:`Volume.with_array` / :meth:`Volume.replace`, so they keep the geometry
and the DICOM source they came from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from medseg.errors import GeometryError, InputError
from medseg.geometry import Geometry


class VolumeKind(str, Enum):
    """What the voxels mean; decides interpolation and output types."""

    IMAGE = "image"
    LABEL = "label"
    PROBABILITIES = "probabilities"


@dataclass(frozen=True)
class SourceSeries:
    """Where a volume came from: enough to reference it from a DICOM SEG.

    ``sop_instance_uids`` (and ``files``) follow the volume's ``k`` axis. For an
    enhanced multi-frame source, every slice names the same instance and
    ``frame_numbers`` (1-based, as DICOM counts) says which frame. A volume
    ``resampled`` off the acquired slices (gaps filled, gantry tilt undone) has
    no per-slice references: its slices are not the stored instances. A UID is
    None where an anonymiser blanked it.
    """

    modality: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    series_number: int | None = None
    series_description: str | None = None
    sop_class_uid: str | None = None
    sop_instance_uids: tuple[str | None, ...] = ()
    frame_numbers: tuple[int, ...] | None = None
    files: tuple[str, ...] = ()
    units: str | None = None
    resampled: bool = False


#: A coded concept as DICOM writes it: (code value, coding scheme designator, code meaning).
Code = tuple[str, str, str]


@dataclass(frozen=True)
class Segment:
    """One label of a label map: its number, name, display colour and, for DICOM SEG, its codes.

    ``category`` and ``type`` are (value, scheme, meaning) triplets, e.g.
    ``("91723000", "SCT", "Anatomical Structure")`` and ``("10200004", "SCT", "Liver")``;
    None where the model gives none (writers then use a generic code).
    """

    number: int
    name: str
    color: tuple[int, int, int] | None = None
    category: Code | None = None
    type: Code | None = None


@dataclass(frozen=True, eq=False)
class Volume:
    """Voxels with their grid and provenance.

    Args:
        array: ``(C, I, J, K)`` or ``(I, J, K)`` (a channel axis is added).
        geometry: the grid; its shape must equal the array's spatial shape.
        kind: image, label map or class probabilities.
        source: the DICOM series (or file) it was read from, when known.
        segments: for label maps, the meaning of each label number.
        path: the file or folder it was read from, when any.

    Raises:
        GeometryError: the array's spatial shape does not match the geometry.
        InputError: a label map that is not a single channel of integers.
    """

    array: np.ndarray
    geometry: Geometry
    kind: VolumeKind = VolumeKind.IMAGE
    source: SourceSeries = field(default_factory=SourceSeries)
    segments: tuple[Segment, ...] = ()
    path: str | None = None

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        if array.ndim == 3:
            array = array[np.newaxis]
        if array.ndim != 4:
            raise GeometryError(f"a volume's array must be (C, I, J, K) or (I, J, K), got shape {array.shape}")
        if tuple(array.shape[1:]) != self.geometry.shape:
            raise GeometryError(
                f"array's spatial shape {list(array.shape[1:])} does not match the geometry's {list(self.geometry.shape)}"
            )
        kind = VolumeKind(self.kind)
        if kind is VolumeKind.LABEL and (array.shape[0] != 1 or not np.issubdtype(array.dtype, np.integer)):
            raise InputError(
                f"a label map must be one channel of integers, got {array.shape[0]} channel(s) of {array.dtype}"
            )
        if array.flags.writeable:
            array = array.view()
            array.flags.writeable = False
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "segments", tuple(self.segments))

    # -- views ------------------------------------------------------------------------

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """Voxels along ``i, j, k``."""
        return self.geometry.shape

    @property
    def num_channels(self) -> int:
        """Size of the channel axis."""
        return int(self.array.shape[0])

    @property
    def dtype(self) -> np.dtype:
        """The array's data type."""
        return self.array.dtype

    def channel(self, index: int = 0) -> np.ndarray:
        """One channel as a read-only ``(I, J, K)`` array."""
        return self.array[index]

    # -- derivation -------------------------------------------------------------------

    def with_array(
        self,
        array: Any,
        *,
        kind: VolumeKind | str | None = None,
        segments: Sequence[Segment] | None = None,
    ) -> Volume:
        """A volume on the same grid and from the same source, with other voxels."""
        return dataclasses.replace(
            self,
            array=array,
            kind=VolumeKind(kind) if kind is not None else self.kind,
            segments=tuple(segments) if segments is not None else self.segments,
        )

    def replace(self, **changes: Any) -> Volume:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        name = self.source.series_description or self.path or ""
        return (
            f"Volume({self.kind.value}, channels={self.num_channels}, dtype={self.dtype}, "
            f"{self.geometry!r}{', ' + repr(name) if name else ''})"
        )
