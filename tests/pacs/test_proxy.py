"""DICOMweb behind a reverse proxy: a URL prefix and a bearer token, as hospital gateways publish it.

A tiny loopback proxy stands in for the gateway: it serves Orthanc's DICOMweb under
``/gateway/pacs/dicom-web``, lets in only requests with the right bearer token, and talks to
Orthanc with its own credentials (which medseg never sees).
"""

from __future__ import annotations

import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pydicom
import pytest
import requests

from medseg.pacs import SeriesQuery, connect, load_settings
from tests.pacs.conftest import ct_study, run_cli

pytestmark = pytest.mark.integration

PREFIX = "/gateway/pacs/dicom-web"
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
    "host",
    "authorization",
}


@pytest.fixture()
def gateway(orthanc):
    token = secrets.token_urlsafe(16)

    class Handler(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            if self.headers.get("Authorization") != f"Bearer {token}":
                self.send_error(401, "bearer token required")
                return
            if not self.path.startswith(PREFIX):
                self.send_error(404)
                return
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            answer = requests.request(
                self.command,
                orthanc.dicomweb + self.path[len(PREFIX) :],
                data=body or None,
                headers=headers,
                auth=(orthanc.username, orthanc.password),
                timeout=60,
            )
            self.send_response(answer.status_code)
            for key, value in answer.headers.items():
                if key.lower() not in _HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = _forward

        def log_message(self, *args) -> None:  # keep the test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}{PREFIX}", token
    server.shutdown()


def test_query_pull_and_push_through_the_gateway(gateway, orthanc, tmp_path):
    url, token = gateway
    (files,) = ct_study(tmp_path / "study", series=1)
    settings = load_settings(overrides={"url": url, "token_env": "GATEWAY_TOKEN"}, environ={"GATEWAY_TOKEN": token})
    with connect(settings) as pacs:
        pacs.echo()
        assert pacs.store(files).ok
        (series,) = pacs.find_series(SeriesQuery(modality="CT"))
        pulled = pacs.retrieve_series(series, tmp_path / "pulled")
    assert {str(pydicom.dcmread(p).SOPInstanceUID) for p in pulled} == {
        str(pydicom.dcmread(p).SOPInstanceUID) for p in files
    }
    assert len(orthanc.series_of("CT")) == 1


def test_a_wrong_token_is_one_line_without_the_token(gateway, tmp_path):
    url, token = gateway
    result = run_cli("pacs", "echo", "--url", url, "--token-env", "GATEWAY_TOKEN", env={"GATEWAY_TOKEN": "wrong-token"})
    assert result.returncode == 3
    (line,) = result.stderr.strip().splitlines()
    assert "authentication failed (HTTP 401)" in line and url in line
    assert "wrong-token" not in line and token not in line
