"""The listener under load: several senders at once, one dropping its association, the listener SIGKILLed once.

Used by ``tests/pacs/test_listener_load.py`` (which asserts) and ``benchmarks/listener_load.py``
(which prints the figures). Each sender is a pynetdicom Storage SCU on its own thread, sending its
series one instance at a time and remembering which instances were acknowledged; when its
association breaks (the listener was killed) it waits for the listener to come back and goes on
from the first instance not acknowledged, as a modality's send queue does.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from medseg.synthetic import make_phantom
from medseg.geometry import Geometry
from tests import factories

LISTENER_AET = "MEDSEG-LOAD"


@dataclass
class LoadRun:
    """A load run in progress: what was sent and acknowledged, and the listener that is running now."""

    files: list[list[Path]]
    storage: Path
    log: Path
    process: subprocess.Popen
    acknowledged: set[str] = field(default_factory=set)
    started_at: float = 0.0
    received_at: float = 0.0
    kills: int = 0
    dropped: int = 0
    peak_rss_mb: float = 0.0

    @property
    def instances(self) -> int:
        return sum(len(s) for s in self.files)

    @property
    def instances_per_second(self) -> float:
        """Acknowledged instances per second of receiving (the restart's pause included)."""
        return len(self.acknowledged) / (self.received_at - self.started_at)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()


def write_series_set(folder: Path, *, series: int, slices: int, size: int = 48) -> list[list[Path]]:
    """``series`` small CT series of ``slices`` slices each (one study), one file per instance."""
    from pydicom.uid import generate_uid

    study = generate_uid()
    out = []
    for index in range(series):
        geometry = Geometry.from_spacing((size, size, slices), (6.0, 6.0, 3.0), (-144.0, -144.0, -150.0))
        image, _ = make_phantom(100 + index, geometry=geometry)
        path = folder / f"s{index:02d}"
        written = factories.write_series(
            image, path, study_instance_uid=study, series_number=index + 1, series_description=f"load {index + 1}"
        )
        out.append(written)
    return out


def start_listener(
    model: Path,
    storage: Path,
    *,
    port: int,
    orthanc_port: int,
    orthanc_aet: str,
    quiet_time: float,
    workers: int,
    log: Path,
) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "medseg",
        "listen",
        "--model",
        str(model),
        "--ae-title",
        LISTENER_AET,
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--storage",
        str(storage),
        "--quiet-time",
        str(quiet_time),
        "--forward",
        f"{orthanc_aet}@127.0.0.1:{orthanc_port}",
        "--device",
        "cpu",
        "--workers",
        str(workers),
    ]
    handle = open(log, "a")
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
    handle.close()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"medseg listen exited with {process.returncode}: {log.read_text()[-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"medseg listen did not open port {port}: {log.read_text()[-2000:]}")


def rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a process and its children, in MB (0 when gone)."""
    total = 0.0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for one in pids:
        try:
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            continue
    return total


class Sender(threading.Thread):
    """Sends series one instance at a time; resumes after a broken association; may drop one on purpose."""

    def __init__(
        self,
        name: str,
        files: list[Path],
        port: int,
        run: LoadRun,
        lock: threading.Lock,
        *,
        drop_after: int | None = None,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.files, self.port, self.run_, self.lock, self.drop_after = files, port, run, lock, drop_after
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._send_all()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def _send_all(self) -> None:
        from pynetdicom import AE
        from pynetdicom.sop_class import CTImageStorage

        done, refused = 0, 0
        while done < len(self.files):
            ae = AE(ae_title=self.name)
            ae.add_requested_context(CTImageStorage)
            ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
            assoc = ae.associate("127.0.0.1", self.port, ae_title=LISTENER_AET)
            if not assoc.is_established:
                refused += 1
                if refused > 600:
                    raise RuntimeError(f"{self.name}: the listener did not come back")
                time.sleep(0.2)
                continue
            try:
                while done < len(self.files):
                    if self.drop_after is not None and done == self.drop_after:
                        self.drop_after = None
                        assoc.abort()  # the sender goes away half-way through a series, then comes back
                        with self.lock:
                            self.run_.dropped += 1
                        break
                    ds = pydicom.dcmread(self.files[done])
                    status = assoc.send_c_store(ds)
                    if not status or int(status.get("Status", -1)) != 0:
                        break  # a broken association (the listener was killed): reconnect, send it again
                    with self.lock:
                        self.run_.acknowledged.add(str(ds.SOPInstanceUID))
                    done += 1
            finally:
                if assoc.is_established:
                    assoc.release()


def run_load(
    model: Path,
    work: Path,
    orthanc,
    *,
    series: int = 20,
    slices: int = 100,
    senders: int = 4,
    workers: int = 2,
    quiet_time: float = 4.0,
    kill: bool = True,
) -> LoadRun:
    """Send ``series`` x ``slices`` instances from ``senders`` senders to a listener forwarding to ``orthanc``;
    SIGKILL and restart the listener once half of them are acknowledged. Returns once every sender is done
    (the listener still running: the caller waits for the SEGs, then calls ``stop``)."""
    from tests.pacs.conftest import ORTHANC_AET, free_port

    files = write_series_set(work / "scans", series=series, slices=slices)
    storage, log, port = work / "listen", work / "listen.log", free_port()

    def start() -> subprocess.Popen:
        return start_listener(
            model,
            storage,
            port=port,
            orthanc_port=orthanc.dicom_port,
            orthanc_aet=ORTHANC_AET,
            quiet_time=quiet_time,
            workers=workers,
            log=log,
        )

    run = LoadRun(files, storage, log, start())
    lock = threading.Lock()
    shares = [[p for s in files[i::senders] for p in s] for i in range(senders)]
    threads = [
        Sender(f"MODALITY{i + 1}", share, port, run, lock, drop_after=slices + slices // 2 if i == 0 else None)
        for i, share in enumerate(shares)
    ]
    run.started_at = time.monotonic()
    for thread in threads:
        thread.start()
    if kill:
        while len(run.acknowledged) < run.instances // 2 and any(t.is_alive() for t in threads):
            run.peak_rss_mb = max(run.peak_rss_mb, rss_mb(run.process.pid))
            time.sleep(0.05)
        run.process.send_signal(signal.SIGKILL)
        run.process.wait(timeout=30)
        run.kills += 1
        run.process = start()
    while any(t.is_alive() for t in threads):
        run.peak_rss_mb = max(run.peak_rss_mb, rss_mb(run.process.pid))
        time.sleep(0.2)
    run.received_at = time.monotonic()
    for thread in threads:
        if thread.error is not None:
            run.stop()
            raise thread.error
    return run
