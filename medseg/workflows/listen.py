"""``medseg listen``: a DICOM Storage SCP that segments every series it receives.

Workflow, for a storage folder ``STORAGE``:

1. every instance received (C-STORE, from any number of concurrent associations) is
   written to ``STORAGE/incoming/<series>/<SOP Instance UID>.dcm`` atomically and
   synced to disk *before* the sender gets its success status, so an acknowledged
   instance is never lost;
2. a series counts as complete once no instance of it has arrived for ``quiet_time``
   seconds; it then waits in a bounded queue for one of ``workers`` workers, which segments
   it with :func:`medseg.workflows.predict.predict` into ``STORAGE/results``. Given a model
   folder, the workers are processes (each loads the model once), so receiving never waits
   behind inference; given a loaded :class:`~medseg.inference.engine.Segmenter`, threads;
3. the SEG (and RTSTRUCT) are sent by C-STORE to the forward peer, or back to the
   sender: its calling AE title at its address, on ``return_port``.

Each series has a state file ``STORAGE/state/<series>.json`` (``received``,
``segmented``, ``sent`` or ``failed``). A restarted listener picks up where the last
one stopped: received series are segmented after a new quiet time, segmented ones are
sent. Instances arriving for a series already segmented make it ``received`` again,
and it is segmented anew with all its instances. A failed send is retried every
``retry_interval`` seconds.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from medseg.errors import ConfigError, MedsegError, PacsError
from medseg.inference.engine import InferenceSettings, Segmenter
from medseg.io.files import write_atomically
from medseg.model_formats import ModelOptions, check_models, is_loaded, load_segmenter
from medseg.models.devices import resolve_device
from medseg.pacs.config import PacsSettings, check_ae_title, load_settings, parse_peer
from medseg.pacs.model import folder_name
from medseg.workflows.predict import PredictOptions, predict

log = logging.getLogger(__name__)

RECEIVED, SEGMENTED, SENT, FAILED = "received", "segmented", "sent", "failed"
#: ``(event, series UID, message)``: events ``received``, ``segmented``, ``sent``, ``failed``, ``resumed``.
EventCallback = Callable[[str, str, str], None]
_SUCCESS, _OUT_OF_RESOURCES, _CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000


@dataclass(frozen=True)
class ListenerOptions:
    """Settings of :class:`Listener`.

    Attributes:
        storage: the folder for received instances, results and state files.
        ae_title: our AE title (the called AE title senders use).
        port: the port to listen on (0: any free port, see :attr:`Listener.port`).
        host: the address to bind (default: every interface).
        quiet_time: seconds without a new instance after which a series counts as complete.
        allow: calling AE titles accepted (empty: any).
        forward: where results go (a DIMSE peer); None: back to the sender.
        return_port: the sender's DICOM port, when results go back to it.
        formats: ``seg`` and/or ``rtstruct`` (sent), ``nifti`` (kept in ``STORAGE/results``).
        queue_size: complete series waiting for a worker, at most.
        workers: series segmented at once (see :func:`default_workers`).
        max_associations: concurrent associations, at most.
        retry_interval: seconds between attempts to send results a peer did not take.
        device: ``auto``, ``cpu`` or ``cuda``.
        inference: sliding-window settings (None: the model's defaults).
        model_options: nnU-Net folds, checkpoint and orientation (:class:`~medseg.model_formats.ModelOptions`).
    """

    storage: Path
    ae_title: str = "MEDSEG"
    port: int = 11112
    host: str = "0.0.0.0"
    quiet_time: float = 10.0
    allow: tuple[str, ...] = ()
    forward: PacsSettings | None = None
    return_port: int = 104
    formats: tuple[str, ...] = ("seg",)
    queue_size: int = 16
    workers: int = 1
    max_associations: int = 10
    retry_interval: float = 30.0
    device: str = "auto"
    inference: InferenceSettings = field(default_factory=InferenceSettings)
    model_options: ModelOptions = field(default_factory=ModelOptions)

    def __post_init__(self) -> None:
        check_ae_title(self.ae_title, "--ae-title")
        for title in self.allow:
            check_ae_title(title, "--allow")
        if self.quiet_time < 0:
            raise ConfigError(f"--quiet-time must be at least 0 seconds, got {self.quiet_time}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port must be a port number (0-65535), got {self.port}")
        if self.queue_size < 1:
            raise ConfigError(f"the queue holds at least one series, got {self.queue_size}")
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}")
        if self.forward is not None and self.forward.protocol != "dimse":
            raise ConfigError(f"--forward: {self.forward.describe()} is not a DIMSE peer (AET@HOST:PORT)")
        if not any(f in ("seg", "rtstruct") for f in self.formats):
            raise ConfigError("--format: the listener sends seg and/or rtstruct; give at least one of them")


@dataclass
class _Series:
    """What the listener knows of one series (mirrored in its state file)."""

    uid: str
    name: str
    status: str = RECEIVED
    study_uid: str = ""
    sender_ae: str = ""
    sender_host: str = ""
    instances: int = 0
    outputs: list[str] = field(default_factory=list)
    message: str = ""
    last_seen: float = 0.0  # monotonic time of the last instance, or of the last try to send
    queued: bool = False
    changed: bool = False  # instances arrived while the worker had it

    def state(self) -> dict[str, Any]:
        return {
            "series_uid": self.uid,
            "study_uid": self.study_uid,
            "status": self.status,
            "instances": self.instances,
            "sender": {"ae_title": self.sender_ae, "host": self.sender_host},
            "outputs": self.outputs,
            "message": self.message,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }


class Listener:
    """A Storage SCP that segments each complete series and sends the result on.

    Args:
        options: where to listen and store, the quiet time, the peers.
        model: a model folder or a loaded :class:`Segmenter`.
        on_event: called as ``(event, series UID, message)`` for every change of a series' state.

    Use :meth:`start` and :meth:`stop` (or the instance as a context manager), or
    :meth:`serve` to block until a stop event is set.
    """

    def __init__(
        self,
        options: ListenerOptions,
        *,
        model: str | os.PathLike[str] | Segmenter,
        on_event: EventCallback | None = None,
    ) -> None:
        self.options = options
        self._model = model
        self._on_event = on_event or (lambda *_: None)
        self._lock = threading.Lock()
        self._series: dict[str, _Series] = {}
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=options.queue_size)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: Any = None
        self._ae: Any = None
        self._segmenter: Segmenter | None = None
        self._pool: ProcessPoolExecutor | None = None
        storage = Path(options.storage)
        self._incoming, self._results, self._state = storage / "incoming", storage / "results", storage / "state"

    @property
    def port(self) -> int:
        """The port actually listened on."""
        return int(self._server.server_address[1]) if self._server is not None else self.options.port

    def start(self) -> None:
        """Load the model, resume unfinished series, and start listening (returns at once).

        Raises:
            ModelError: the model cannot be loaded.
            PacsError: the port cannot be bound.
        """
        from pynetdicom import AE, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        from medseg.pacs.dimse import RECEIVE_TRANSFER_SYNTAXES, set_no_delay  # pynetdicom: loaded for DIMSE only

        model = self._model
        if is_loaded(model):
            self._segmenter = model
        else:
            check_models(model, self.options.model_options)
            threads = max(1, (os.cpu_count() or 1) // self.options.workers)
            self._pool = ProcessPoolExecutor(
                max_workers=self.options.workers,
                mp_context=multiprocessing.get_context("spawn"),  # no forked torch or pynetdicom threads
                initializer=_load_worker_model,
                initargs=(
                    [str(m) for m in model] if isinstance(model, (list, tuple)) else str(model),
                    self.options.device,
                    self.options.inference,
                    threads,
                    self.options.model_options,
                ),
            )
        for folder in (self._incoming, self._results, self._state):
            folder.mkdir(parents=True, exist_ok=True)
        self._resume()
        ae = AE(ae_title=self.options.ae_title)
        ae.maximum_associations = self.options.max_associations
        ae.require_calling_aet = list(self.options.allow)
        ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = 60
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, list(RECEIVE_TRANSFER_SYNTAXES))
        ae.add_supported_context(Verification)
        handlers = [(evt.EVT_C_STORE, self._handle_store), (evt.EVT_CONN_OPEN, lambda event: set_no_delay(event.assoc))]
        try:
            self._server = ae.start_server((self.options.host, self.options.port), block=False, evt_handlers=handlers)
        except OSError as exc:
            where = f"{self.options.host}:{self.options.port}"
            raise PacsError(f"cannot listen on {where} ({exc.strerror or exc})") from exc
        self._ae = ae
        self._stopping.clear()
        targets = [(self._watch, "medseg-listen-watch")]
        targets += [(self._work, f"medseg-listen-worker-{n}") for n in range(1, self.options.workers + 1)]
        for target, name in targets:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("listening as %s on %s:%d", self.options.ae_title, self.options.host, self.port)

    def stop(self) -> None:
        """Stop listening; the series being segmented is finished first."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
        for _ in range(self.options.workers):
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                break  # the workers see the stop event after their current series
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._ae is not None:
            self._ae.shutdown()
        self._server = self._ae = None

    def serve(self, stop: threading.Event) -> None:
        """:meth:`start`, then block until ``stop`` is set, then :meth:`stop`."""
        self.start()
        try:
            while not stop.wait(0.5):
                pass
        finally:
            self.stop()

    def __enter__(self) -> Listener:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def status(self) -> dict[str, str]:
        """Series UID -> state, of every series this listener knows."""
        with self._lock:
            return {uid: series.status for uid, series in self._series.items()}

    # -- receiving ------------------------------------------------------------------------

    def _handle_store(self, event: Any) -> int:
        from medseg.pacs.dimse import write_received  # pynetdicom: loaded for DIMSE only

        try:
            dataset = event.dataset
            series_uid, study_uid = str(dataset.SeriesInstanceUID), str(dataset.get("StudyInstanceUID", ""))
        except Exception as exc:  # noqa: BLE001 - any undecodable request is refused, not fatal
            log.warning("refused an instance that cannot be decoded: %s", exc)
            return _CANNOT_UNDERSTAND
        name = folder_name(series_uid)
        try:
            write_received(event, self._incoming / name)
        except OSError as exc:
            log.error("cannot store an instance of series %s: %s", series_uid, exc)
            return _OUT_OF_RESOURCES
        requestor = event.assoc.requestor
        first = False
        with self._lock:
            series = self._series.get(series_uid)
            if series is None:
                series = self._series[series_uid] = _Series(series_uid, name)
                first = True
            elif series.queued:
                series.changed = True  # a worker has it (perhaps segmenting it now): it will be done again
            elif series.status != RECEIVED:
                series.status, first = RECEIVED, True
            series.study_uid = series.study_uid or study_uid
            series.sender_ae, series.sender_host = str(requestor.ae_title), str(requestor.address)
            series.instances += 1
            series.last_seen = time.monotonic()
            if first:
                self._save_state(series)
        if first:
            self._on_event(RECEIVED, series_uid, f"first instance from {series.sender_ae}")
        return _SUCCESS

    # -- watching for complete series -------------------------------------------------------

    def _watch(self) -> None:
        while not self._stopping.wait(0.2):
            now = time.monotonic()
            with self._lock:
                ready = [
                    s
                    for s in self._series.values()
                    if not s.queued
                    and (
                        (s.status == RECEIVED and now - s.last_seen >= self.options.quiet_time)
                        or (s.status == SEGMENTED and now - s.last_seen >= self.options.retry_interval)
                    )
                ]
            for series in sorted(ready, key=lambda s: s.last_seen):
                try:
                    self._queue.put_nowait(series.uid)
                except queue.Full:
                    break
                with self._lock:
                    series.queued = True

    def _work(self) -> None:
        while not self._stopping.is_set():
            uid = self._queue.get()
            if uid is None:
                return
            with self._lock:
                series = self._series[uid]
                series.changed = False
                status = series.status
            try:
                if status == RECEIVED:
                    self._segment(series)
                if series.status == SEGMENTED:
                    self._send(series)
            except Exception as exc:
                log.exception("series %s: unexpected error", uid)
                self._set(series, FAILED, message=f"unexpected error: {exc}")
            finally:
                with self._lock:
                    series.queued = False
                    if series.changed:
                        series.changed = False
                        series.status = RECEIVED
                        series.last_seen = time.monotonic()
                        self._save_state(series)

    def _segment(self, series: _Series) -> None:
        folder, formats = self._incoming / series.name, self.options.formats
        try:
            if self._pool is not None:
                results = self._pool.submit(_segment_in_worker, folder, self._results, formats).result()
            else:
                results = _segment_folder(
                    self._segmenter, folder, self._results, formats, self.options.device, self.options.inference
                )
        except BrokenProcessPool:
            self._set(series, FAILED, message="the segmentation worker died (out of memory?); see the log")
            return
        except MedsegError as exc:
            self._set(series, FAILED, message=str(exc))
            return
        mine = [r for r in results if r[0] == series.uid]
        if not mine or mine[0][1] != "done":
            message = mine[0][3] if mine else "no image series in the received instances"
            self._set(series, FAILED, message=message)
            return
        _, _, outputs, _, seconds = mine[0]
        outputs = [p for p in outputs if p.endswith((".seg.dcm", ".rtstruct.dcm"))]
        self._set(series, SEGMENTED, outputs=outputs, message=f"{seconds:.1f} s")

    def _send(self, series: _Series) -> None:
        from medseg.pacs.dimse import DimseClient  # pynetdicom: loaded for DIMSE only

        try:
            peer = self._peer(series)
            report = DimseClient(peer).store(series.outputs)
        except MedsegError as exc:
            with self._lock:
                series.last_seen = time.monotonic()  # retried after retry_interval
            self._on_event("retry", series.uid, f"not sent, retrying in {self.options.retry_interval:g} s: {exc}")
            log.warning("series %s: %s", series.uid, exc)
            return
        if not report.ok:
            self._set(series, FAILED, message="; ".join(f"{Path(p).name}: {why}" for p, why in report.failed))
            return
        self._set(series, SENT, message=f"to {peer.describe()}")

    def _peer(self, series: _Series) -> PacsSettings:
        if self.options.forward is not None:
            return replace(self.options.forward, calling_ae_title=self.options.ae_title)
        if not series.sender_ae or not series.sender_host:
            raise PacsError(f"series {series.uid}: its sender is unknown (no state file survived); use --forward")
        return PacsSettings(
            "dimse",
            ae_title=series.sender_ae,
            host=series.sender_host,
            port=self.options.return_port,
            calling_ae_title=self.options.ae_title,
            source="sender",
        )

    # -- state --------------------------------------------------------------------------------

    def _set(self, series: _Series, status: str, *, outputs: list[str] | None = None, message: str = "") -> None:
        with self._lock:
            series.status, series.message = status, message
            if outputs is not None:
                series.outputs = outputs
            self._save_state(series)
        self._on_event(status, series.uid, message)

    def _save_state(self, series: _Series) -> None:
        text = json.dumps(series.state(), indent=2) + "\n"
        write_atomically(self._state / f"{series.name}.json", lambda tmp: tmp.write_text(text))

    def _resume(self) -> None:
        """Reload the state files, and adopt received folders that have none (killed before the first was written)."""
        known: set[str] = set()
        now = time.monotonic()
        for path in sorted(self._state.glob("*.json")):
            try:
                state = json.loads(path.read_text())
                series = _Series(
                    uid=str(state["series_uid"]),
                    name=path.stem,
                    status=str(state["status"]),
                    study_uid=str(state.get("study_uid", "")),
                    sender_ae=str(state.get("sender", {}).get("ae_title", "")),
                    sender_host=str(state.get("sender", {}).get("host", "")),
                    outputs=[str(p) for p in state.get("outputs", [])],
                    message=str(state.get("message", "")),
                )
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                log.warning("%s: unreadable state file, ignored (%s)", path, exc)
                continue
            known.add(series.name)
            series.instances = _count(self._incoming / series.name)
            series.last_seen = now if series.status == RECEIVED else now - self.options.retry_interval
            self._series[series.uid] = series
            if series.status in (RECEIVED, SEGMENTED):
                self._on_event("resumed", series.uid, f"{series.status}, {series.instances} instance(s)")
        for folder in sorted(p for p in self._incoming.iterdir() if p.is_dir() and p.name not in known):
            uid = _series_uid(folder)
            if uid is None:
                continue
            series = _Series(uid, folder.name, instances=_count(folder), last_seen=now)
            self._series[uid] = series
            self._save_state(series)
            self._on_event("resumed", uid, f"{RECEIVED}, {series.instances} instance(s)")


def forward_peer(value: str | os.PathLike[str], *, calling_ae_title: str) -> PacsSettings:
    """Where ``--forward`` sends SEGs: a PACS settings file, or ``AE@host:port``.

    Raises:
        ConfigError: neither a readable settings file nor a peer of that form.
    """
    path = Path(value)
    return load_settings(path) if path.is_file() else parse_peer(str(value), calling_ae_title=calling_ae_title)


def default_workers(device: str = "auto") -> int:
    """Series segmented at once by default: one on a GPU (it holds one model's work at a time), else one per
    four CPU cores (each worker's PyTorch then has four threads)."""

    if resolve_device(device).type == "cuda":
        return 1
    return max(1, (os.cpu_count() or 1) // 4)


#: ``(series UID, status, outputs, message, seconds)`` per case, as :func:`_segment_folder` reports it.
_CaseOutcome = tuple[str | None, str, list[str], str, float]
_WORKER: dict[str, Any] = {}  # in a worker process: its segmenter and options


def _load_worker_model(
    model: str | list[str],
    device: str,
    inference: InferenceSettings,
    threads: int,
    model_options: ModelOptions | None = None,
) -> None:
    """Initialise a worker process: PyTorch's threads, and the model loaded once."""
    import torch

    torch.set_num_threads(threads)

    _WORKER["segmenter"] = load_segmenter(model, device=device, settings=inference, options=model_options)
    _WORKER["device"], _WORKER["inference"] = device, inference


def _segment_in_worker(folder: Path, results: Path, formats: tuple[str, ...]) -> list[_CaseOutcome]:
    return _segment_folder(_WORKER["segmenter"], folder, results, formats, _WORKER["device"], _WORKER["inference"])


def _segment_folder(
    segmenter: Segmenter | None,
    folder: Path,
    results: Path,
    formats: tuple[str, ...],
    device: str,
    inference: InferenceSettings,
) -> list[_CaseOutcome]:
    """Segment one received series folder into ``results``; plain data back (it crosses processes)."""

    options = PredictOptions(formats=formats, device=device, inference=inference, overwrite=True)
    report = predict([folder], results, model=segmenter, options=options)
    return [(r.series_uid, r.status, list(r.outputs), r.message, r.seconds) for r in report.results]


def _count(folder: Path) -> int:
    return sum(1 for p in folder.glob("*.dcm")) if folder.is_dir() else 0


def _series_uid(folder: Path) -> str | None:
    from pydicom import dcmread

    for path in sorted(folder.glob("*.dcm")):
        try:
            return str(dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"]).SeriesInstanceUID)
        except (OSError, ValueError, AttributeError):
            continue
    return None
