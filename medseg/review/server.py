"""The review server: a small local web server for looking through a batch case by case.

:func:`make_server` serves one output folder to a browser: the review page
(``static/review.html`` with NiiVue, bundled, never fetched), the cases as JSON, each
case's scan and mask as NIfTI, and takes each case's decision into ``review.csv``.
Only the files of the folder's cases are served, looked up by case name (never by a path
from the request). A scan that is not a ``.nii.gz`` file (a DICOM series, NRRD, MHA,
``.nii``) is read with medseg's readers and written once to a temporary cache outside
the output folder, deleted when the server closes.

Routes::

    GET  /                              the review page
    GET  /static/<file>                 the page's script, style and NiiVue (a fixed list)
    GET  /api/cases                     the cases, flags, volumes and decisions (JSON)
    GET  /api/cases/<case>/scan.nii.gz  the scan
    GET  /api/cases/<case>/mask.nii.gz  the mask
    POST /api/cases/<case>/review       {"decision": "accepted|rejected|needs-edit", "note": "..."}
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import threading
from dataclasses import asdict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from medseg.errors import InputError, MedsegError
from medseg.io import image_format, read_image
from medseg.io.dicom import DicomReadOptions, read_dicom
from medseg.io.nifti import write_nifti
from medseg.review.batch import Batch, BatchCase
from medseg.review.decisions import REVIEW_CSV, DecisionBook

logger = logging.getLogger(__name__)

#: What ``/static/`` serves, with its content type; nothing else is.
STATIC_FILES = {
    "niivue.umd.js": "text/javascript; charset=utf-8",
    "review.js": "text/javascript; charset=utf-8",
    "review.css": "text/css; charset=utf-8",
    "NIIVUE-LICENSE.txt": "text/plain; charset=utf-8",
}
#: Largest request body accepted (a decision and its note), in bytes.
MAX_BODY = 64 * 1024


class NotFound(InputError):
    """A request for a case or file this server does not have (answered 404)."""


class ReviewApp:
    """What the server knows: the batch, the decisions, and the cache of converted scans."""

    def __init__(self, batch: Batch, *, cache: Path) -> None:
        self.batch = batch
        self.cache = cache
        self.decisions = DecisionBook(batch.folder / REVIEW_CSV)
        self._cases = {case.name: case for case in batch.cases}
        self._lock = threading.Lock()
        self._case_locks: dict[str, threading.Lock] = {}
        self._converted: dict[str, Path] = {}

    def case(self, name: str) -> BatchCase:
        """The case called ``name``; :class:`NotFound` when the folder has none."""
        try:
            return self._cases[name]
        except KeyError:
            raise NotFound(f"no case {name!r} in {self.batch.folder}") from None

    def cases(self) -> dict[str, Any]:
        """Everything the page lists: per case its status, flags, volumes, confidence and decision."""
        decisions = self.decisions.all()
        return {
            "folder": str(self.batch.folder),
            "labels": self.batch.labels,
            "cases": [
                {
                    "case": c.name,
                    "status": c.status,
                    "flagged": c.flagged,
                    "flags": list(c.flags),
                    "batchFlags": list(c.batch_flags),
                    "confidence": c.confidence,
                    "volumes": c.volumes_ml,
                    "warnings": list(c.warnings),
                    "message": c.message,
                    "hasMask": c.mask is not None,
                    "review": asdict(decisions[c.name]) if c.name in decisions else None,
                }
                for c in self.batch.cases
            ],
        }

    def mask(self, name: str) -> Path:
        """The case's NIfTI mask."""
        case = self.case(name)
        if case.mask is None or not case.mask.is_file():
            raise NotFound(f"case {name!r} has no mask (status {case.status or 'unknown'})")
        return case.mask

    def scan(self, name: str) -> Path:
        """The case's scan as a ``.nii.gz`` file: the input itself, or its conversion in the cache (made once)."""
        case = self.case(name)
        source = Path(case.input)
        if not case.input or not source.exists():
            raise NotFound(f"case {name!r}: its scan {case.input or '(none recorded)'} is missing")
        if source.is_file() and source.name.lower().endswith(".nii.gz"):
            return source
        with self._lock:
            lock = self._case_locks.setdefault(name, threading.Lock())
        with lock:  # one conversion per case, however many requests ask for it
            if name not in self._converted:
                target = self.cache / f"{hashlib.sha256(name.encode()).hexdigest()[:16]}.nii.gz"
                self._convert(case, source, target)
                self._converted[name] = target
            return self._converted[name]

    def _convert(self, case: BatchCase, source: Path, target: Path) -> None:

        settings = self.batch.run.get("settings") if isinstance(self.batch.run.get("settings"), dict) else {}
        if image_format(source) is not None:
            volume = read_image(source)
        else:  # a DICOM series, read as predict read it, so that the mask lies on it
            options = DicomReadOptions(
                irregular=settings.get("irregular") or "refuse", tilt=settings.get("tilt") or "keep"
            )
            volume = read_dicom(source, series_uid=case.series_uid or None, options=options)
        write_nifti(volume, target)
        logger.info("case %s: scan converted to NIfTI for viewing", case.name)


class ReviewServer(ThreadingHTTPServer):
    """A threading HTTP server for one :class:`ReviewApp`; closing it deletes the scan cache."""

    daemon_threads = True

    def __init__(self, app: ReviewApp, address: tuple[str, int]) -> None:
        self.app = app
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        """Where the page is, e.g. ``http://127.0.0.1:8765/``."""
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/"

    def server_close(self) -> None:
        super().server_close()
        shutil.rmtree(self.app.cache, ignore_errors=True)


def make_server(batch: Batch, *, host: str = "127.0.0.1", port: int = 0) -> ReviewServer:
    """A review server for ``batch``, bound and ready for ``serve_forever()``.

    Args:
        batch: the output folder's cases.
        host: the address to listen on (default loopback only).
        port: the port; 0 picks a free one (see :attr:`ReviewServer.url`).

    Raises:
        InputError: ``review.csv`` exists but cannot be read.
        OSError: the address cannot be bound (port taken, host unknown).
    """
    cache = Path(tempfile.mkdtemp(prefix="medseg-review-"))
    try:
        return ReviewServer(ReviewApp(batch, cache=cache), (host, port))
    except BaseException:
        shutil.rmtree(cache, ignore_errors=True)
        raise


class _Handler(BaseHTTPRequestHandler):
    server: ReviewServer
    server_version = "medseg-review"

    def do_GET(self) -> None:
        self._answer(self._get)

    def do_POST(self) -> None:
        self._answer(self._post)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def _answer(self, route) -> None:
        try:
            parts = [unquote(p) for p in urlsplit(self.path).path.split("/")[1:]]
            route(parts)
        except NotFound as exc:
            self._send(HTTPStatus.NOT_FOUND, f"not found: {exc}\n".encode(), "text/plain; charset=utf-8")
        except InputError as exc:
            self._send(HTTPStatus.BAD_REQUEST, f"bad request: {exc}\n".encode(), "text/plain; charset=utf-8")
        except (MedsegError, OSError) as exc:
            logger.warning("%s: %s", self.path, exc)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, f"error: {exc}\n".encode(), "text/plain; charset=utf-8")

    def _get(self, parts: list[str]) -> None:
        app = self.server.app
        if parts in ([""], ["index.html"]):
            self._send(HTTPStatus.OK, _static("review.html"), "text/html; charset=utf-8")
        elif len(parts) == 2 and parts[0] == "static" and parts[1] in STATIC_FILES:
            self._send(HTTPStatus.OK, _static(parts[1]), STATIC_FILES[parts[1]], cache=True)
        elif parts == ["api", "cases"]:
            self._json(app.cases())
        elif len(parts) == 4 and parts[:2] == ["api", "cases"] and parts[3] in ("scan.nii.gz", "mask.nii.gz"):
            path = app.scan(parts[2]) if parts[3] == "scan.nii.gz" else app.mask(parts[2])
            self._send_file(path)
        else:
            raise NotFound(f"no such page: {self.path}")

    def _post(self, parts: list[str]) -> None:
        if not (len(parts) == 4 and parts[:2] == ["api", "cases"] and parts[3] == "review"):
            raise NotFound(f"no such page: {self.path}")
        case = self.server.app.case(parts[2])
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY:
            raise InputError(f"expected a JSON body of at most {MAX_BODY} bytes, got {length}")
        try:
            body = json.loads(self.rfile.read(length))
        except ValueError:
            raise InputError("the body is not JSON") from None
        if not isinstance(body, dict):
            raise InputError('expected {"decision": ..., "note": ...}')
        decision = self.server.app.decisions.record(
            case.name, str(body.get("decision", "")), str(body.get("note") or "")
        )
        logger.info("case %s: %s", case.name, decision.decision)
        self._json(asdict(decision))

    def _json(self, value: Any) -> None:
        self._send(HTTPStatus.OK, json.dumps(value, allow_nan=False).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, *, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_file(self, path: Path) -> None:
        with open(path, "rb") as handle:
            size = path.stat().st_size
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            shutil.copyfileobj(handle, self.wfile)


def _static(name: str) -> bytes:
    return resources.files("medseg.review").joinpath("static", name).read_bytes()
