"""A DIMSE peer (C-ECHO, C-FIND, C-GET, C-STORE) through ``pynetdicom``.

Each operation opens its own association and releases it; failures (no connection,
a rejected association, a refused operation) become one-line
:class:`~medseg.errors.PacsError` messages naming the peer (``AET@host:port``).
Instances received by C-GET are written as they arrive, atomically, one file per
SOP Instance UID, without decoding them.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from medseg.errors import InputError, PacsError
from medseg.io.files import atomic_path, safe_name
from medseg.pacs.config import PacsSettings
from medseg.pacs.model import DECODED_TRANSFER_SYNTAXES, SeriesInfo, SeriesQuery, StoreReport, as_int

log = logging.getLogger(__name__)

#: Transfer syntaxes we accept when receiving (medseg decodes all of them).
RECEIVE_TRANSFER_SYNTAXES = DECODED_TRANSFER_SYNTAXES
#: Storage SOP classes asked for first (the rest of pynetdicom's list fills the 128 contexts).
PREFERRED_STORAGE = (
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image
    "1.2.840.10008.5.1.4.1.1.4",  # MR Image
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image
    "1.2.840.10008.5.1.4.1.1.128",  # PET Image
    "1.2.840.10008.5.1.4.1.1.130",  # Enhanced PET Image
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.481.3",  # RT Structure Set
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
)
#: The image storage classes of a modality (received with a context per transfer syntax, see retrieval_contexts).
_MODALITY_CLASSES = {
    "CT": ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1"),
    "MR": ("1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.4.1"),
    "PT": ("1.2.840.10008.5.1.4.1.1.128", "1.2.840.10008.5.1.4.1.1.130"),
}
_SUCCESS, _WARNINGS = 0x0000, (0x0001, 0xB000, 0xB006, 0xB007)
_MOVE_DESTINATION_UNKNOWN = 0xA801
_PENDING = (0xFF00, 0xFF01)
_REJECT_REASONS = {
    (1, 1): "no reason given",
    (1, 2): "application context not supported",
    (1, 3): "our calling AE title is not recognised",
    (1, 7): "the called AE title is not recognised",
    (2, 1): "no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "the peer is congested",
    (3, 2): "the peer has reached its association limit",
}


class DimseClient:
    """Query, retrieve and store through a DIMSE peer.

    Args:
        settings: a ``dimse`` connection (peer AE title, host, port; our AE title; timeout).
    """

    def __init__(self, settings: PacsSettings) -> None:
        if settings.protocol != "dimse":
            raise PacsError(f"{settings.describe()}: not a DIMSE peer")
        self.settings = settings

    def close(self) -> None:
        """Nothing to close: every operation has its own association."""

    def __enter__(self) -> DimseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def echo(self) -> None:
        """C-ECHO the peer.

        Raises:
            PacsError: no connection, rejected, or the peer answered a failure.
        """
        from pynetdicom.sop_class import Verification

        with self._association([_context(Verification)], doing="C-ECHO") as assoc:
            status = assoc.send_c_echo()
            self._check(status, "C-ECHO")

    def find_series(self, query: SeriesQuery) -> list[SeriesInfo]:
        """The series matching ``query``: C-FIND at study level, then at series level per study.

        Raises:
            PacsError: the peer cannot be reached or refuses the search.
        """
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as Find

        study_keys = ("StudyInstanceUID", "PatientID", "StudyDate")
        series_keys = (
            "SeriesInstanceUID",
            "Modality",
            "SeriesNumber",
            "SeriesDescription",
            "NumberOfSeriesRelatedInstances",
        )
        found: list[SeriesInfo] = []
        with self._association([_context(Find)], doing="C-FIND") as assoc:
            studies = self._find(assoc, Find, "STUDY", study_keys, query.study_filters())
            for study in studies:
                uid = str(study.get("StudyInstanceUID", ""))
                if not uid:
                    continue
                filters = {**query.series_filters(), "StudyInstanceUID": uid}
                for answer in self._find(assoc, Find, "SERIES", series_keys, filters):
                    found.append(
                        SeriesInfo(
                            study_uid=uid,
                            series_uid=str(answer.get("SeriesInstanceUID", "")),
                            modality=str(answer.get("Modality", "")),
                            patient_id=str(study.get("PatientID", "")),
                            study_date=str(study.get("StudyDate", "")),
                            series_number=as_int(answer.get("SeriesNumber")),
                            description=str(answer.get("SeriesDescription", "")),
                            instances=as_int(answer.get("NumberOfSeriesRelatedInstances")),
                        )
                    )
        log.info("C-FIND: %d series", len(found))
        return [s for s in found if s.series_uid]

    def retrieve_series(self, series: SeriesInfo, folder: str | os.PathLike[str]) -> list[Path]:
        """C-GET every instance of ``series`` into ``folder``, one file per instance.

        Raises:
            PacsError: the peer cannot be reached, refuses, or some instances failed.
        """
        from pynetdicom import build_role, evt
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as Get

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        if self.settings.move_ae:
            return self._retrieve_by_move(series, out)
        paths: list[Path] = []
        storage = retrieval_contexts(series.modality)
        roles = [build_role(uid, scp_role=True) for uid in dict.fromkeys(cx.abstract_syntax for cx in storage)]
        handlers = [(evt.EVT_C_STORE, _store_handler(out, paths))]
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "SERIES"
        identifier.StudyInstanceUID = series.study_uid
        identifier.SeriesInstanceUID = series.series_uid
        with self._association([_context(Get), *storage], doing="C-GET", ext_neg=roles, handlers=handlers) as assoc:
            final = None
            for status, _ in assoc.send_c_get(identifier, Get):
                final = status
            self._check(final, f"C-GET of series {series.series_uid}")
            failed = as_int(final.get("NumberOfFailedSuboperations")) if final else None
            if failed:
                raise PacsError(
                    f"{self.settings.describe()}: C-GET of series {series.series_uid}: {failed} instance(s) failed"
                )
        log.info("C-GET: %d instances of series %s", len(paths), series.series_uid)
        return paths

    def _retrieve_by_move(self, series: SeriesInfo, out: Path) -> list[Path]:
        """C-MOVE the series to our own Storage SCP, started for the retrieval under ``move_ae`` on ``move_port``."""
        from pynetdicom import AE, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as Move

        settings = self.settings
        doing = f"C-MOVE of series {series.series_uid} to {settings.move_ae}"
        paths: list[Path] = []
        receiver = AE(ae_title=settings.move_ae)
        receiver.maximum_pdu_size = 0
        for context in AllStoragePresentationContexts:
            receiver.add_supported_context(context.abstract_syntax, list(RECEIVE_TRANSFER_SYNTAXES))
        called_back: list[bool] = []

        def on_open(event: Any) -> None:
            called_back.append(True)
            set_no_delay(event.assoc)

        handlers = [(evt.EVT_C_STORE, _store_handler(out, paths)), (evt.EVT_CONN_OPEN, on_open)]
        if settings.tls and not settings.certificate:
            raise PacsError(
                f"{settings.describe()}: {doing} over TLS: the PACS connects back to us, so we need a certificate "
                "and private_key"
            )
        try:
            server = receiver.start_server(
                ("", int(settings.move_port or 0)),
                block=False,
                evt_handlers=handlers,
                ssl_context=tls_context(settings, server=True) if settings.tls else None,
            )
        except OSError as exc:
            raise PacsError(
                f"{settings.describe()}: cannot listen on port {settings.move_port} for {doing} ({exc.strerror or exc})"
            ) from exc
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "SERIES"
        identifier.StudyInstanceUID = series.study_uid
        identifier.SeriesInstanceUID = series.series_uid
        try:
            with self._association([_context(Move)], doing="C-MOVE") as assoc:
                final = None
                for status, _ in assoc.send_c_move(identifier, settings.move_ae, Move):
                    final = status
                code = int(final.get("Status", -1)) if final else -1
                failed_unreached = code not in (-1, _SUCCESS, *_WARNINGS) and not called_back
                if code == _MOVE_DESTINATION_UNKNOWN or failed_unreached:
                    raise PacsError(
                        f"{settings.describe()}: {doing} refused (status 0x{code:04X}) and the PACS never connected "
                        f"back: does it know the AE title {settings.move_ae}, with this machine's address and port "
                        f"{settings.move_port}?"
                    )
                self._check(final, doing)
                failed = as_int(final.get("NumberOfFailedSuboperations")) if final else None
                if failed:
                    raise PacsError(f"{settings.describe()}: {doing}: {failed} instance(s) failed")
        finally:
            server.shutdown()
        log.info("C-MOVE: %d instances of series %s", len(paths), series.series_uid)
        return paths

    def series_headers(self, series: SeriesInfo) -> list[Dataset]:
        """The headers of every instance of ``series`` (retrieved by C-GET, read without pixel data)."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="medseg-headers-") as tmp:
            return [dcmread(p, stop_before_pixels=True) for p in self.retrieve_series(series, tmp)]

    def store(self, paths: Sequence[str | os.PathLike[str]]) -> StoreReport:
        """C-STORE DICOM files to the peer, in one association.

        Returns:
            The SOP Instance UIDs stored, and the files refused with the reason.

        Raises:
            InputError: a file is not DICOM.
            PacsError: the peer cannot be reached or rejects the association.
        """
        report = StoreReport()
        if not paths:
            return report
        headers = [(str(p), _header(p)) for p in paths]
        contexts = _store_contexts(headers)
        with self._association(contexts, doing="C-STORE") as assoc:
            for path, header in headers:
                try:
                    status = assoc.send_c_store(path)
                except (ValueError, RuntimeError) as exc:  # no accepted context for this SOP class / syntax
                    report.failed.append((path, f"not sent: {exc}"))
                    continue
                code = int(status.get("Status", -1)) if status else -1
                if code == _SUCCESS or code in _WARNINGS:
                    report.stored.append(str(header.SOPInstanceUID))
                elif code == -1:
                    self._check(status, "C-STORE")
                else:
                    report.failed.append((path, f"refused by the PACS (status 0x{code:04X})"))
        log.info("C-STORE: %d stored, %d failed", len(report.stored), len(report.failed))
        return report

    # -- associations ---------------------------------------------------------------------

    @contextmanager
    def _association(
        self,
        contexts: Sequence[Any],
        *,
        doing: str,
        ext_neg: Sequence[Any] = (),
        handlers: Sequence[Any] = (),
    ) -> Iterator[Any]:
        from pynetdicom import AE, evt

        settings = self.settings
        ae = AE(ae_title=settings.calling_ae_title)
        ae.requested_contexts = list(contexts)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = settings.timeout
        ae.connection_timeout = settings.timeout
        answer: dict[str, Any] = {}

        def on_pdu(event: Any) -> None:
            # Read off the wire: pynetdicom's ACSE may lose the rejection in a race with the
            # peer closing the connection right after it, and report an abort instead.
            pdu = event.pdu
            if type(pdu).__name__ == "A_ASSOCIATE_RJ":
                answer["result"] = (pdu.result, pdu.source, pdu.reason_diagnostic)

        def on_open(event: Any) -> None:
            answer["connected"] = True
            set_no_delay(event.assoc)

        all_handlers = [*handlers, (evt.EVT_PDU_RECV, on_pdu), (evt.EVT_CONN_OPEN, on_open)]
        assoc = ae.associate(
            settings.host,
            settings.port,
            ae_title=settings.ae_title,
            ext_neg=list(ext_neg) or None,
            evt_handlers=all_handlers,
            tls_args=(tls_context(settings), settings.host) if settings.tls else None,
        )
        if not assoc.is_established:
            raise PacsError(self._failure(assoc, answer, doing))
        try:
            yield assoc
        except PacsError:
            raise
        except (ConnectionError, OSError) as exc:
            raise PacsError(f"{settings.describe()}: connection lost during {doing} ({exc})") from exc
        finally:
            if assoc.is_established:
                assoc.release()
            ae.shutdown()

    def _failure(self, assoc: Any, answer: dict[str, Any], doing: str) -> str:
        where = self.settings.describe()
        if self.settings.tls and not assoc.is_rejected and "result" not in answer:
            problem = tls_problem(self.settings)
            if problem:
                return f"{where}: TLS handshake failed for {doing}: {problem}"
        if assoc.is_rejected or "result" in answer:
            result, source, reason = answer.get("result", (0, 0, 0))
            why = _REJECT_REASONS.get((int(source or 0), int(reason or 0)), f"source {source}, reason {reason}")
            ours = self.settings.calling_ae_title
            return f"{where}: association rejected for {doing} ({why}); our AE title is {ours}"
        if answer.get("connected"):
            return (
                f"{where}: the peer closed the connection without accepting the association for {doing} "
                f"(check the AE titles; ours is {self.settings.calling_ae_title})"
            )
        return (
            f"{where}: cannot connect for {doing} "
            f"(nothing answered within {self.settings.timeout:g} s, or connection refused)"
        )

    def _check(self, status: Dataset | None, doing: str) -> None:
        code = int(status.get("Status", -1)) if status else -1
        if code == -1:
            raise PacsError(
                f"{self.settings.describe()}: {doing}: the peer closed the association without an answer "
                f"(does it accept our AE title {self.settings.calling_ae_title} for this?)"
            )
        if code != _SUCCESS and code not in _WARNINGS:
            raise PacsError(f"{self.settings.describe()}: {doing} refused (status 0x{code:04X})")

    def _find(self, assoc: Any, model: str, level: str, keys: Sequence[str], filters: dict[str, str]) -> list[Dataset]:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = level
        for key in keys:
            setattr(identifier, key, filters.get(key, ""))
        for key, value in filters.items():
            setattr(identifier, key, value)
        answers = []
        final = None
        for status, found in assoc.send_c_find(identifier, model):
            code = int(status.get("Status", -1)) if status else -1
            if code in _PENDING and found is not None:
                answers.append(found)
            else:
                final = status
        self._check(final, f"C-FIND at {level.lower()} level")
        return answers


def tls_context(settings: PacsSettings, *, server: bool = False) -> ssl.SSLContext:
    """The TLS context of a DIMSE association: the peer checked against ``verify``, ours from ``certificate``.

    Raises:
        PacsError: the certificate, key or CA bundle cannot be loaded.
    """
    purpose = ssl.Purpose.CLIENT_AUTH if server else ssl.Purpose.SERVER_AUTH
    cafile = settings.verify if isinstance(settings.verify, str) else None
    try:
        context = ssl.create_default_context(purpose, cafile=cafile)
        if settings.verify is False:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif server:
            context.verify_mode = ssl.CERT_REQUIRED  # the PACS that connects back must prove who it is
        if settings.certificate:
            context.load_cert_chain(settings.certificate, settings.private_key)
    except (ssl.SSLError, OSError) as exc:
        raise PacsError(f"{settings.describe()}: cannot load the TLS certificate, key or CA bundle ({exc})") from exc
    return context


def tls_problem(settings: PacsSettings) -> str | None:
    """Why a TLS handshake with the peer fails (e.g. ``certificate verify failed: ...``), or None if it succeeds."""
    try:
        with socket.create_connection((str(settings.host), int(settings.port or 0)), timeout=settings.timeout) as raw:
            with tls_context(settings).wrap_socket(raw, server_hostname=settings.host) as tls:
                # TLS 1.3: the server judges our certificate after the handshake, and says so in an alert
                tls.settimeout(min(settings.timeout, 2.0))
                tls.recv(1)
                return None
    except ssl.SSLCertVerificationError as exc:
        return f"the PACS's certificate was not accepted ({exc.verify_message}); check verify: CA_FILE"
    except ssl.SSLError as exc:
        reason = str(exc.reason or exc).replace("_", " ").lower()
        if settings.certificate is None:
            return f"{reason}: the PACS wants a certificate of ours (give certificate and private_key)"
        return f"{reason} (does the PACS accept our certificate, and speak TLS on this port?)"
    except OSError:
        return None  # not a TLS problem (or a timeout waiting for an alert): the plain failure message says more


def storage_contexts(limit: int = 127) -> list[Any]:
    """Storage presentation contexts (preferred SOP classes first), each with every syntax we decode."""
    from pynetdicom import StoragePresentationContexts

    uids = list(PREFERRED_STORAGE)
    uids += [cx.abstract_syntax for cx in StoragePresentationContexts if cx.abstract_syntax not in uids]
    return [_context(uid, RECEIVE_TRANSFER_SYNTAXES) for uid in uids[:limit]]


def retrieval_contexts(modality: str | None, limit: int = 127) -> list[Any]:
    """Storage contexts for receiving a series by C-GET.

    A peer accepts one transfer syntax per presentation context, and must send each instance in
    it: offered one context with every syntax, Orthanc takes Explicit VR Little Endian and then
    has to transcode a JPEG 2000 instance, which it cannot do without its GDCM plugin (the C-GET
    fails). So the series' own image classes (by ``modality``; CT and MR when unknown) get one
    context per syntax medseg decodes, and every other class one context with all of them.
    """
    from pynetdicom import StoragePresentationContexts

    own = _MODALITY_CLASSES.get((modality or "").upper(), _MODALITY_CLASSES["CT"] + _MODALITY_CLASSES["MR"])
    contexts = [_context(uid, [syntax]) for uid in own for syntax in DECODED_TRANSFER_SYNTAXES]
    others = [uid for uid in PREFERRED_STORAGE if uid not in own]
    others += [cx.abstract_syntax for cx in StoragePresentationContexts if cx.abstract_syntax not in (*own, *others)]
    contexts += [_context(uid, RECEIVE_TRANSFER_SYNTAXES) for uid in others]
    return contexts[:limit]


def write_received(event: Any, folder: Path) -> Path:
    """Write the instance of a C-STORE request event as ``folder/<SOP Instance UID>.dcm``, atomically."""
    uid = str(event.request.AffectedSOPInstanceUID)
    path = folder / f"{safe_name(uid, max_length=120)}.dcm"
    data = event.encoded_dataset(include_meta=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def set_no_delay(assoc: Any) -> None:
    """Turn Nagle's algorithm off on an association's socket (each DIMSE message otherwise waits ~40 ms)."""
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not a TCP socket (or already closed): nothing to tune


def _store_handler(folder: Path, paths: list[Path]) -> Callable[[Any], int]:
    def handle(event: Any) -> int:
        try:
            paths.append(write_received(event, folder))
        except OSError as exc:
            log.error("cannot write a received instance into %s: %s", folder, exc)
            return 0xA700  # out of resources
        return _SUCCESS

    return handle


def _context(uid: str, syntaxes: Sequence[str] | None = None) -> Any:
    from pynetdicom import build_context

    return build_context(uid, list(syntaxes) if syntaxes else [ExplicitVRLittleEndian, ImplicitVRLittleEndian])


def _header(path: str | os.PathLike[str]) -> Dataset:
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"])
    except (InvalidDicomError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable DICOM file ({exc})") from exc
    if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds:
        raise InputError(f"{path}: not a DICOM instance (no SOP Class/Instance UID)")
    return ds


def _store_contexts(headers: Sequence[tuple[str, Dataset]]) -> list[Any]:
    syntaxes: dict[str, list[str]] = {}
    """One context per SOP class and compressed syntax; uncompressed files share one per SOP class."""
    wanted: dict[tuple[str, str], list[str]] = {}
    for _, ds in headers:
        found = UID(str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None) or ImplicitVRLittleEndian))
        if found.is_compressed:
            wanted.setdefault((str(ds.SOPClassUID), str(found)), [str(found)])
        else:
            syntaxes = wanted.setdefault((str(ds.SOPClassUID), ""), [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
            if found not in syntaxes:
                syntaxes.append(str(found))
    if len(wanted) > 128:
        raise InputError(
            f"{len(wanted)} kinds of instance in one push; an association takes at most 128: push fewer files at once"
        )
    return [_context(uid, syntaxes) for (uid, _), syntaxes in wanted.items()]
