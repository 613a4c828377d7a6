"""What travels between medseg and a PACS, whatever the protocol: queries, series, store results."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from medseg.errors import ConfigError
from medseg.io.files import safe_name

_DATE_RANGE = re.compile(r"^(?P<start>\d{8})?(?P<dash>-)?(?P<end>\d{8})?$")

#: Transfer syntaxes medseg decodes (pydicom with the pylibjpeg and pyjpegls plugins it installs): asked for
#: when retrieving, accepted when receiving. Lossless ones first: a server picks from the front.
DECODED_TRANSFER_SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGLosslessSV1,
    JPEGLossless,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEG2000,
    JPEGLSNearLossless,
)

#: Modalities that hold no image to segment (they are left out of ``pacs segment``'s work).
NON_IMAGE_MODALITIES = frozenset(
    {"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "RTIMAGE", "SR", "PR", "KO", "REG", "DOC", "FID", "RWV", "PLAN"}
)


@dataclass(frozen=True)
class SeriesQuery:
    """Filters of a series search; unset filters match everything.

    Attributes:
        patient_id: PatientID (``*`` and ``?`` wildcards allowed).
        study_date: a DICOM date range: ``YYYYMMDD``, ``FROM-TO``, ``FROM-`` or ``-TO``.
        modality: e.g. ``CT``.
        study_uid: StudyInstanceUID.
        series_uid: SeriesInstanceUID.
        description: SeriesDescription (wildcards allowed, e.g. ``*arterial*``).
    """

    patient_id: str | None = None
    study_date: str | None = None
    modality: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    description: str | None = None

    def __post_init__(self) -> None:
        if self.study_date is not None:
            match = _DATE_RANGE.fullmatch(self.study_date.strip())
            both = match is not None and match["start"] and match["end"]
            if match is None or not (match["start"] or match["end"]) or (both and not match["dash"]):
                raise ConfigError(
                    f"study date {self.study_date!r}: expected YYYYMMDD, FROM-TO, FROM- or -TO (e.g. 20240101-20240131)"
                )
            if match["start"] and match["end"] and match["start"] > match["end"]:
                raise ConfigError(f"study date {self.study_date!r}: the range ends before it starts")

    def study_filters(self) -> dict[str, str]:
        """The study-level filters, by DICOM keyword."""
        pairs = (("PatientID", self.patient_id), ("StudyDate", self.study_date), ("StudyInstanceUID", self.study_uid))
        return {key: value.strip() for key, value in pairs if value}

    def series_filters(self) -> dict[str, str]:
        """The series-level filters, by DICOM keyword."""
        pairs = (
            ("Modality", self.modality),
            ("SeriesInstanceUID", self.series_uid),
            ("SeriesDescription", self.description),
        )
        return {key: value.strip() for key, value in pairs if value}

    def filters(self) -> dict[str, str]:
        """Every filter, by DICOM keyword."""
        return {**self.study_filters(), **self.series_filters()}


@dataclass(frozen=True)
class SeriesInfo:
    """One series as a PACS describes it in a query answer."""

    study_uid: str
    series_uid: str
    modality: str = ""
    patient_id: str = ""
    study_date: str = ""
    series_number: int | None = None
    description: str = ""
    instances: int | None = None

    @property
    def is_image(self) -> bool:
        """Whether the series may hold images to segment (not SEG, RTSTRUCT, SR, ...)."""
        return self.modality.upper() not in NON_IMAGE_MODALITIES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StoreReport:
    """What a push did: the SOP Instance UIDs stored, and the files that failed, with why."""

    stored: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)

    @property
    def ok(self) -> bool:
        return not self.failed

    def extend(self, other: StoreReport) -> None:
        self.stored.extend(other.stored)
        self.failed.extend(other.failed)


def folder_name(uid: str) -> str:
    """A UID as a file-system name: ``1.2.840.1`` -> ``1_2_840_1``.

    Dots become underscores, so that a name never looks like a stem with many extensions.
    """
    return safe_name(uid, max_length=120).replace(".", "_")


def as_int(value: object) -> int | None:
    """A DICOM IS/US value as int, None when empty or unparsable."""
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None
