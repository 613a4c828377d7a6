"""A real Orthanc on loopback for the PACS tests, and small CT studies to put into it.

The server (``/usr/sbin/Orthanc`` with the DICOMweb plugin; CI installs both) runs once per
session in a temporary folder, on free ports, with throw-away storage and credentials;
each test starts from an empty PACS. Tests that need it skip with the reason where
Orthanc is not installed.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest

from tests import factories

ORTHANC = Path(os.environ.get("MEDSEG_ORTHANC", "/usr/sbin/Orthanc"))
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
GDCM_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancGdcm.so")
ORTHANC_AET = "ORTHANC"
#: The AE title the tests' own DIMSE requests use (declared in Orthanc).
TEST_AET = "MEDSEG-TEST"
#: The listener's AE title (declared in Orthanc as a C-MOVE destination at run time).
LISTENER_AET = "MEDSEG"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Orthanc:
    """A running Orthanc: where it listens, how to log in, and a REST helper."""

    http_port: int
    dicom_port: int
    username: str
    password: str
    folder: Path
    process: subprocess.Popen = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def rest(self, method: str, path: str, **kwargs):
        import requests

        response = requests.request(method, self.url + path, auth=(self.username, self.password), timeout=30, **kwargs)
        response.raise_for_status()
        return response.json() if response.content and "json" in response.headers.get("content-type", "") else response

    def upload(self, paths) -> None:
        for path in paths:
            self.rest("POST", "/instances", data=Path(path).read_bytes())

    def clear(self) -> None:
        for patient in self.rest("GET", "/patients"):
            self.rest("DELETE", f"/patients/{patient}")

    def series_of(self, modality: str | None = None) -> list[dict]:
        """Every series in Orthanc (its REST description), optionally of one modality."""
        found = [self.rest("GET", f"/series/{s}") for s in self.rest("GET", "/series")]
        return [s for s in found if modality is None or s["MainDicomTags"].get("Modality") == modality]

    def instance_file(self, instance_id: str) -> bytes:
        return self.rest("GET", f"/instances/{instance_id}/file").content

    def add_modality(self, name: str, aet: str, port: int) -> None:
        self.rest("PUT", f"/modalities/{name}", data=json.dumps({"AET": aet, "Host": "127.0.0.1", "Port": port}))

    def settings_file(self, folder: Path, *, protocol: str = "dicomweb", password: str | None = None) -> Path:
        """A PACS settings YAML for medseg, the password in a file beside it."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"pacs-{protocol}.yaml"
        if protocol == "dicomweb":
            secret = folder / "password.txt"
            secret.write_text((password or self.password) + "\n")
            path.write_text(f"url: {self.dicomweb}\nusername: {self.username}\npassword_file: {secret}\ntimeout: 20\n")
        else:
            path.write_text(
                f"ae_title: {ORTHANC_AET}\nhost: 127.0.0.1\nport: {self.dicom_port}\n"
                f"calling_ae_title: {TEST_AET}\ntimeout: 20\n"
            )
        return path


def _config(http_port: int, dicom_port: int, username: str, password: str) -> dict:
    return {
        "Name": "medseg-test",
        "StorageDirectory": "storage",
        "IndexDirectory": "storage",
        "TemporaryDirectory": "tmp",
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": ORTHANC_AET,
        "DicomCheckCalledAet": True,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {username: password},
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Host": f"127.0.0.1:{http_port}", "Ssl": False},
        "DicomModalities": {"medseg-test": {"AET": TEST_AET, "Host": "127.0.0.1", "Port": 1}},
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "StorageCompression": False,
        "ConcurrentJobs": 2,
        "StableAge": 1,
        "SaveJobs": False,
    }


def start_orthanc(folder: Path, *, plugins: tuple[Path, ...] = (), **options) -> Orthanc:
    """Start an Orthanc in ``folder`` (DICOMweb plugin, plus ``plugins``; ``options`` added to its config)."""
    if not ORTHANC.is_file():
        pytest.skip(f"Orthanc not installed at {ORTHANC} (apt-get install orthanc orthanc-dicomweb)")
    for plugin in (DICOMWEB_PLUGIN, *plugins):
        if not plugin.is_file():
            pytest.skip(f"Orthanc plugin {plugin} is not installed (apt-get install orthanc-dicomweb orthanc-gdcm)")
    import requests

    (folder / "tmp").mkdir(parents=True)
    http_port, dicom_port = free_port(), free_port()
    username, password = "medseg", secrets.token_urlsafe(12)
    config = _config(http_port, dicom_port, username, password)
    config["Plugins"] = [str(DICOMWEB_PLUGIN), *(str(p) for p in plugins)]
    config.update(options)
    (folder / "orthanc.json").write_text(json.dumps(config, indent=2))
    log = open(folder / "orthanc.log", "wb")
    process = subprocess.Popen(
        [str(ORTHANC), str(folder / "orthanc.json")],
        cwd=folder,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    log.close()  # the child holds its own descriptor
    server = Orthanc(http_port, dicom_port, username, password, folder, process)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            pytest.fail(f"Orthanc exited with {process.returncode}: {(folder / 'orthanc.log').read_text()[-2000:]}")
        try:
            if requests.get(server.url + "/system", auth=(username, password), timeout=2).ok:
                return server
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"Orthanc did not answer within 30 s: {(folder / 'orthanc.log').read_text()[-2000:]}")
        time.sleep(0.1)


def stop_orthanc(server: Orthanc) -> None:
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="session")
def orthanc_server(tmp_path_factory) -> Orthanc:
    """One Orthanc for the session (started on first use; SIGTERM at the end)."""
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    yield server
    stop_orthanc(server)


@pytest.fixture()
def orthanc(orthanc_server) -> Orthanc:
    """The session's Orthanc, emptied for this test."""
    orthanc_server.clear()
    return orthanc_server


def ct_study(folder: Path, *, series: int = 2, seed: int = 7) -> list[list[Path]]:
    """Write a study of ``series`` small phantom CT series (14 slices each); returns the files per series."""
    from pydicom.uid import generate_uid

    study_uid = generate_uid()
    out = []
    for index in range(series):
        image, _ = factories.phantom_pair(seed=seed + index)
        out.append(
            factories.write_series(
                image,
                folder / f"series{index + 1}",
                study_instance_uid=study_uid,
                series_number=index + 1,
                series_description=f"phantom {index + 1}",
            )
        )
    return out


def c_store(paths, port: int, *, calling: str = "MODALITY", called: str = LISTENER_AET) -> list[int]:
    """Send files with plain pynetdicom, as a modality would; returns the statuses."""
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    ae = AE(ae_title=calling)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(pydicom.dcmread(p)).Status) for p in paths]
    finally:
        assoc.release()


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m medseg ARGS`` in a subprocess (what a user's shell sees: stdout, stderr, exit code)."""
    return subprocess.run(
        [sys.executable, "-m", "medseg", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
