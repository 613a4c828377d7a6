"""One interface over DICOMweb and DIMSE peers: :func:`connect` picks the client for the settings."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from pydicom.dataset import Dataset

from medseg.pacs.config import PacsSettings
from medseg.pacs.model import SeriesInfo, SeriesQuery, StoreReport


class PacsClient(Protocol):
    """What medseg does with a PACS, whatever the protocol (see :class:`DicomWebClient`, :class:`DimseClient`)."""

    settings: PacsSettings

    def echo(self) -> None:
        """Check that the peer answers and accepts us; raises :class:`~medseg.errors.PacsError` if not."""

    def find_series(self, query: SeriesQuery) -> list[SeriesInfo]:
        """The series matching ``query``."""

    def retrieve_series(self, series: SeriesInfo, folder: str | os.PathLike[str]) -> list[Path]:
        """Download a series into ``folder`` (one file per instance); returns the files."""

    def series_headers(self, series: SeriesInfo) -> list[Dataset]:
        """The headers (without pixel data) of every instance of a series."""

    def store(self, paths: Sequence[str | os.PathLike[str]]) -> StoreReport:
        """Send DICOM files to the peer."""

    def close(self) -> None:
        """Release what the client holds."""

    def __enter__(self) -> PacsClient: ...

    def __exit__(self, *exc: object) -> None: ...


def connect(settings: PacsSettings) -> PacsClient:
    """A client for ``settings``: :class:`~medseg.pacs.dicomweb.DicomWebClient` or
    :class:`~medseg.pacs.dimse.DimseClient`. Nothing is sent until the first call.

    Use it as a context manager::

        with connect(load_settings("pacs.yaml")) as pacs:
            series = pacs.find_series(SeriesQuery(modality="CT", study_date="20240101-"))
    """
    if settings.protocol == "dicomweb":
        from medseg.pacs.dicomweb import DicomWebClient  # dicomweb-client: loaded for DICOMweb only

        return DicomWebClient(settings)
    from medseg.pacs.dimse import DimseClient  # pynetdicom: loaded for DIMSE only

    return DimseClient(settings)
