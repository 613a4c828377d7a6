"""DICOM over TLS against a real Orthanc with its DICOM TLS options, certificates from a throw-away CA."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest

from medseg.pacs import SeriesQuery, connect, load_settings
from tests.pacs.conftest import ORTHANC_AET, TEST_AET, ct_study, free_port, run_cli, start_orthanc, stop_orthanc

pytestmark = pytest.mark.integration

MOVE_AET = "MEDSEG-TLS"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(folder: Path, name: str) -> None:
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        f"/CN={name} test CA",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.crt",
        cwd=folder,
    )


def make_certificate(folder: Path, name: str, ca: str) -> None:
    """A certificate for 127.0.0.1 / localhost signed by ``ca``."""
    (folder / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        f"/CN={name}",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        cwd=folder,
    )
    openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        f"{ca}.crt",
        "-CAkey",
        f"{ca}.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        f"{name}.ext",
        "-out",
        f"{name}.crt",
        cwd=folder,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("pki")
    make_ca(folder, "ca")
    make_ca(folder, "other")
    make_certificate(folder, "orthanc", "ca")
    make_certificate(folder, "medseg", "ca")
    return folder


@pytest.fixture(scope="module")
def tls_orthanc(tmp_path_factory, pki):
    """An Orthanc speaking DICOM only over TLS, requiring a client certificate from the test CA."""
    server = start_orthanc(
        tmp_path_factory.mktemp("orthanc-tls"),
        DicomTlsEnabled=True,
        DicomTlsCertificate=str(pki / "orthanc.crt"),
        DicomTlsPrivateKey=str(pki / "orthanc.key"),
        DicomTlsTrustedCertificates=str(pki / "ca.crt"),
        DicomTlsRemoteCertificateRequired=True,
    )
    yield server
    stop_orthanc(server)


def settings_file(server, folder: Path, pki: Path, **extra: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    values = {
        "ae_title": ORTHANC_AET,
        "host": "127.0.0.1",
        "port": server.dicom_port,
        "calling_ae_title": TEST_AET,
        "timeout": 10,
        "tls": "true",
        "verify": pki / "ca.crt",
        "certificate": pki / "medseg.crt",
        "private_key": pki / "medseg.key",
        **extra,
    }
    path = folder / "pacs.yaml"
    path.write_text("".join(f"{key}: {value}\n" for key, value in values.items() if value != ""))
    return path


def test_query_get_store_and_move_over_tls(tls_orthanc, pki, tmp_path):
    tls_orthanc.clear()
    (files,) = ct_study(tmp_path / "study", series=1)
    port = free_port()
    tls_orthanc.rest(
        "PUT", "/modalities/medseg-tls", json={"AET": MOVE_AET, "Host": "127.0.0.1", "Port": port, "UseDicomTls": True}
    )
    settings = load_settings(settings_file(tls_orthanc, tmp_path / "cfg", pki), environ={})
    with connect(settings) as pacs:
        pacs.echo()
        assert pacs.store(files).ok
        (series,) = pacs.find_series(SeriesQuery(modality="CT"))
        by_get = pacs.retrieve_series(series, tmp_path / "get")
    moving = load_settings(
        settings_file(tls_orthanc, tmp_path / "cfg-move", pki, move_ae=MOVE_AET, move_port=str(port)), environ={}
    )
    with connect(moving) as pacs:
        by_move = pacs.retrieve_series(series, tmp_path / "move")
    sent = {str(pydicom.dcmread(p).SOPInstanceUID) for p in files}
    assert {str(pydicom.dcmread(p).SOPInstanceUID) for p in by_get} == sent
    assert {str(pydicom.dcmread(p).SOPInstanceUID) for p in by_move} == sent


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"verify": "{pki}/other.crt"}, "the PACS's certificate was not accepted ("),
        ({"certificate": "", "private_key": ""}, "the PACS wants a certificate of ours"),
    ],
    ids=["a CA that did not sign the PACS", "no certificate of ours"],
)
def test_a_wrong_certificate_is_one_line(tls_orthanc, pki, tmp_path, change, message):
    change = {key: value.format(pki=pki) for key, value in change.items()}
    path = settings_file(tls_orthanc, tmp_path / "cfg", pki, **change)
    result = run_cli("pacs", "echo", "--pacs", str(path))
    assert result.returncode == 3
    (line,) = result.stderr.strip().splitlines()
    assert "TLS handshake failed for C-ECHO" in line and message in line, line
    assert f"{ORTHANC_AET}@127.0.0.1:{tls_orthanc.dicom_port}" in line


def test_plain_dicom_to_a_tls_port_is_one_line(tls_orthanc, tmp_path):
    result = run_cli(
        "pacs",
        "echo",
        "--ae-title",
        ORTHANC_AET,
        "--host",
        "127.0.0.1",
        "--port",
        str(tls_orthanc.dicom_port),
        "--calling-ae-title",
        TEST_AET,
        "--timeout",
        "5",
    )
    assert result.returncode == 3
    (line,) = result.stderr.strip().splitlines()
    assert f"{ORTHANC_AET}@127.0.0.1:{tls_orthanc.dicom_port}" in line
