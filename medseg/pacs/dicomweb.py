"""A DICOMweb peer (QIDO-RS, WADO-RS, STOW-RS) through ``dicomweb-client``.

Every network, TLS, authentication and HTTP failure becomes a one-line
:class:`~medseg.errors.PacsError` naming the service URL and what was being done;
credentials never appear in it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from medseg.errors import InputError, PacsError
from medseg.io.files import atomic_path, safe_name
from medseg.pacs.config import PacsSettings
from medseg.pacs.model import DECODED_TRANSFER_SYNTAXES, SeriesInfo, SeriesQuery, StoreReport, as_int

log = logging.getLogger(__name__)

#: Instances sent in one STOW-RS request.
STOW_BATCH = 32
#: What a WADO-RS retrieval asks for, in turn: the syntax each instance is stored in (nothing for the
#: server to transcode: Orthanc without its GDCM plugin cannot turn JPEG 2000 into the default),
#: then any syntax medseg decodes, then the server's default (Explicit VR Little Endian).
RETRIEVE_MEDIA_TYPES: tuple[tuple[tuple[str, str], ...] | None, ...] = (
    (("application/dicom", "*"),),
    tuple(("application/dicom", uid) for uid in DECODED_TRANSFER_SYNTAXES),
    None,
)
#: HTTP answers to a retrieval that may mean "not in that transfer syntax": worth asking again another way.
_REFUSED_SYNTAX = (400, 406, 415, 500, 501)
_MAX_PAGES = 100
_SERIES_FIELDS = (
    "PatientID",
    "StudyDate",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "NumberOfSeriesRelatedInstances",
)
_HTTP_REASONS = {
    401: "authentication failed (HTTP 401): check the user name and password, or the token",
    403: "access denied (HTTP 403): the account may not do this",
    404: "not found (HTTP 404): is the URL the DICOMweb service root?",
}


class _TimeoutSession(requests.Session):
    """A session whose every request has a timeout (dicomweb-client passes none)."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("timeout", self._timeout)
        return super().request(*args, **kwargs)


class DicomWebClient:
    """Query, retrieve and store through a DICOMweb service.

    Args:
        settings: a ``dicomweb`` connection (URL, auth, TLS verification, timeout).
    """

    def __init__(self, settings: PacsSettings) -> None:
        from dicomweb_client.api import DICOMwebClient

        if settings.protocol != "dicomweb":
            raise PacsError(f"{settings.describe()}: not a DICOMweb peer")
        self.settings = settings
        session = _TimeoutSession(settings.timeout)
        session.verify = settings.verify
        if settings.username and settings.password is not None:
            session.auth = (settings.username, settings.password.reveal())
        elif settings.token is not None:
            session.headers["Authorization"] = f"Bearer {settings.token.reveal()}"
        self._session = session
        self._client = DICOMwebClient(url=str(settings.url), session=session)
        # Its retries (exponential waits, on every exception) turn "connection refused" into half a minute.
        self._client.set_http_retry_params(retry=False)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> DicomWebClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def echo(self) -> None:
        """Check that the service answers and accepts our credentials (a QIDO-RS study search, limit 1).

        Raises:
            PacsError: unreachable, TLS, authentication or HTTP error.
        """
        with self._errors("checking the connection"):
            self._client.search_for_studies(limit=1)

    def find_series(self, query: SeriesQuery) -> list[SeriesInfo]:
        """The series matching ``query`` (QIDO-RS), in the PACS's order.

        Raises:
            PacsError: the search failed.
        """
        with self._errors("searching series"):
            answers = self._search("series", query.filters(), _SERIES_FIELDS)
        found = [_series_info(Dataset.from_json(answer)) for answer in answers]
        log.info("QIDO-RS: %d series", len(found))
        return [s for s in found if s.series_uid]

    def retrieve_series(self, series: SeriesInfo, folder: str | os.PathLike[str]) -> list[Path]:
        """Download every instance of ``series`` (WADO-RS) into ``folder``, one file per instance.

        Files are named after their SOP Instance UID and written atomically, so a repeated
        or interrupted retrieval leaves whole files only.

        Raises:
            PacsError: the retrieval failed.
        """
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        for media_types in RETRIEVE_MEDIA_TYPES[:-1]:
            try:
                return self._retrieve(series, out, media_types)
            except PacsError as exc:
                status = getattr(getattr(exc.__cause__, "response", None), "status_code", None)
                if status not in _REFUSED_SYNTAX:
                    raise
                log.info(
                    "WADO-RS: %s refused %s (HTTP %s); asking again",
                    self.settings.describe(),
                    _describe_media_types(media_types),
                    status,
                )
        return self._retrieve(series, out, RETRIEVE_MEDIA_TYPES[-1])

    def _retrieve(
        self, series: SeriesInfo, out: Path, media_types: tuple[tuple[str, str], ...] | None
    ) -> list[Path]:
        paths = []
        with self._errors(f"retrieving series {series.series_uid}"):
            for dataset in self._client.iter_series(series.study_uid, series.series_uid, media_types=media_types):
                paths.append(_save(dataset, out))
        log.info(
            "WADO-RS: %d instances of series %s (%s)", len(paths), series.series_uid, _describe_media_types(media_types)
        )
        return paths

    def series_headers(self, series: SeriesInfo) -> list[Dataset]:
        """The headers (no bulk data) of every instance of ``series`` (WADO-RS metadata).

        Raises:
            PacsError: the retrieval failed.
        """
        with self._errors(f"reading the metadata of series {series.series_uid}"):
            items = self._client.retrieve_series_metadata(series.study_uid, series.series_uid)
        return [Dataset.from_json(item, bulk_data_uri_handler=lambda *_: None) for item in items]

    def store(self, paths: Sequence[str | os.PathLike[str]]) -> StoreReport:
        """Send DICOM files (STOW-RS), in batches of :data:`STOW_BATCH`.

        Returns:
            The SOP Instance UIDs stored, and the files refused with the reason.

        Raises:
            InputError: a file is not DICOM.
            PacsError: the service cannot be reached, refuses us, or fails a whole request.
        """
        report = StoreReport()
        for start in range(0, len(paths), STOW_BATCH):
            batch = [_read_for_store(p) for p in paths[start : start + STOW_BATCH]]
            with self._errors("storing instances"):
                answer = self._client.store_instances([ds for _, ds in batch])
            failed = {
                str(item.get("ReferencedSOPInstanceUID", "")): _failure_reason(item)
                for item in getattr(answer, "FailedSOPSequence", None) or []
            }
            for path, dataset in batch:
                uid = str(dataset.SOPInstanceUID)
                if uid in failed:
                    report.failed.append((str(path), failed[uid]))
                else:
                    report.stored.append(uid)
        log.info("STOW-RS: %d stored, %d failed", len(report.stored), len(report.failed))
        return report

    def _search(self, resource: str, filters: dict[str, str], fields: Sequence[str]) -> list[dict]:
        """A QIDO-RS search, following the server's pages (it says "more results" in a Warning header).

        The query string is built here rather than by dicomweb-client: wildcards (``*``, ``?``)
        go unescaped and a space becomes a ``?`` wildcard, because Orthanc's plugin (1.7)
        matches the raw, still percent-encoded text of a parameter.
        """
        parts = [f"{key}={_qido_value(value)}" for key, value in filters.items()]
        parts += [f"includefield={name}" for name in fields]
        answers: list[dict] = []
        for _ in range(_MAX_PAGES):
            query = "&".join([*parts, f"offset={len(answers)}"] if answers else parts)
            response = self._session.get(
                f"{self.settings.url}/{resource}?{query}", headers={"Accept": "application/dicom+json"}
            )
            response.raise_for_status()
            page = response.json() if response.status_code != 204 and response.content else []
            answers.extend(page)
            if not page or "more" not in response.headers.get("Warning", "").lower():
                break
        return answers

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        where = self.settings.describe()
        try:
            yield
        except requests.exceptions.SSLError:
            raise PacsError(
                f"{where}: TLS verification failed while {doing}; give the server's CA bundle as verify: PATH"
            ) from None
        except requests.exceptions.Timeout:
            raise PacsError(f"{where}: no answer within {self.settings.timeout:g} s while {doing}") from None
        except requests.exceptions.ConnectionError:
            raise PacsError(
                f"{where}: cannot connect while {doing} (is the server running and the URL right?)"
            ) from None
        except requests.exceptions.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            reason = _HTTP_REASONS.get(status, f"the server answered HTTP {status}")
            raise PacsError(f"{where}: {reason} while {doing}") from exc
        except requests.exceptions.RequestException as exc:
            raise PacsError(f"{where}: request failed while {doing} ({type(exc).__name__})") from exc
        except (ValueError, KeyError) as exc:  # malformed multipart or JSON answers
            raise PacsError(f"{where}: unexpected answer while {doing} ({exc})") from exc


def _describe_media_types(media_types: tuple[tuple[str, str], ...] | None) -> str:
    if media_types is None:
        return "the default transfer syntax"
    syntaxes = [syntax for _, syntax in media_types]
    return "the stored transfer syntax" if syntaxes == ["*"] else f"{len(syntaxes)} transfer syntaxes medseg decodes"


def _qido_value(value: str) -> str:
    return quote(value.replace(" ", "?"), safe="*?-,.:^_")


def _series_info(ds: Dataset) -> SeriesInfo:
    return SeriesInfo(
        study_uid=str(ds.get("StudyInstanceUID", "")),
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        modality=str(ds.get("Modality", "")),
        patient_id=str(ds.get("PatientID", "")),
        study_date=str(ds.get("StudyDate", "")),
        series_number=as_int(ds.get("SeriesNumber")),
        description=str(ds.get("SeriesDescription", "")),
        instances=as_int(ds.get("NumberOfSeriesRelatedInstances")),
    )


def _save(dataset: Dataset, folder: Path) -> Path:
    """Write one retrieved instance as ``<SOP Instance UID>.dcm``, atomically."""
    path = folder / f"{safe_name(dataset.SOPInstanceUID, max_length=120)}.dcm"
    with atomic_path(path) as tmp:
        dataset.save_as(tmp, enforce_file_format=True)
    return path


def _read_for_store(path: str | os.PathLike[str]) -> tuple[str, Dataset]:
    try:
        return str(path), dcmread(path)
    except (InvalidDicomError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable DICOM file ({exc})") from exc


def _failure_reason(item: Dataset) -> str:
    reason = item.get("FailureReason")
    return f"refused by the PACS (failure reason 0x{int(reason):04X})" if reason is not None else "refused by the PACS"
