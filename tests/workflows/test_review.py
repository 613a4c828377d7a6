"""The review server's routes on a real socket: pages, case data, scans and masks, decisions, and refusals."""

from __future__ import annotations

import csv
import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from medseg.io import read_image
from medseg.io.dicom import DicomReadOptions, read_dicom
from medseg.workflows.review import review_server
from tests.review.conftest import FLAGGED

STATIC = Path(__file__).resolve().parents[2] / "medseg" / "review" / "static"


@pytest.fixture()
def server(batch_folder):
    server = review_server(batch_folder, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def request(server, path: str, body: dict | bytes | None = None) -> tuple[int, bytes, str]:
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    connection.request(
        "POST" if body is not None else "GET",
        path,
        body=data,
        headers={"Content-Type": "application/json"} if data else {},
    )
    response = connection.getresponse()
    answer = response.status, response.read(), response.getheader("Content-Type") or ""
    connection.close()
    return answer


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "review.csv"
    }


def test_the_page_its_scripts_and_the_cases(server):
    status, page, kind = request(server, "/")
    assert status == 200 and kind.startswith("text/html")
    assert b'<script src="/static/niivue.umd.js">' in page and b"review.js" in page
    status, bundle, kind = request(server, "/static/niivue.umd.js")
    assert status == 200 and bundle == (STATIC / "niivue.umd.js").read_bytes() and "javascript" in kind
    assert request(server, "/static/NIIVUE-LICENSE.txt")[1].startswith(b"NiiVue 0.69.0")
    status, body, kind = request(server, "/api/cases")
    data = json.loads(body)
    assert status == 200 and kind == "application/json"
    assert [c["case"] for c in data["cases"]] == ["alpha", "bravo", "broken", "charlie"]
    assert {c["case"] for c in data["cases"] if c["flagged"]} == FLAGGED
    assert [c["hasMask"] for c in data["cases"]] == [True, True, False, True]
    assert data["labels"] == ["liver", "spleen", "kidney"] and all(c["review"] is None for c in data["cases"])


def test_masks_and_nifti_scans_are_served_as_they_are(server, batch_folder, predicted):
    status, mask, _ = request(server, "/api/cases/alpha/mask.nii.gz")
    assert status == 200 and mask == (batch_folder / "alpha.nii.gz").read_bytes()
    status, scan, _ = request(server, "/api/cases/alpha/scan.nii.gz")
    assert status == 200 and scan == (predicted[0] / "alpha.nii.gz").read_bytes()
    status, mask, _ = request(server, "/api/cases/charlie/mask.nii.gz")
    assert status == 200 and mask == (batch_folder / "charlie" / "charlie.nii.gz").read_bytes()


def test_a_dicom_series_is_converted_once_into_a_cache_outside_out(server, batch_folder, predicted, tmp_path):
    status, scan, _ = request(server, "/api/cases/charlie/scan.nii.gz")
    assert status == 200
    cache = server.app.cache
    assert not cache.is_relative_to(batch_folder)
    (converted,) = cache.iterdir()
    assert converted.read_bytes() == scan
    stamp = converted.stat().st_mtime_ns
    assert request(server, "/api/cases/charlie/scan.nii.gz")[1] == scan and converted.stat().st_mtime_ns == stamp
    (tmp_path / "scan.nii.gz").write_bytes(scan)
    served = read_image(tmp_path / "scan.nii.gz")
    original = read_dicom(predicted[0] / "charlie", options=DicomReadOptions(tilt="keep"))
    np.testing.assert_allclose(served.array, original.array)
    mask = read_image(batch_folder / "charlie" / "charlie.nii.gz", kind="label")
    assert served.geometry.is_close(mask.geometry)  # the mask lies on the scan the viewer gets
    server.server_close()
    assert not cache.exists()


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/api/cases/zulu/mask.nii.gz", b"no case 'zulu'"),
        ("/api/cases/broken/mask.nii.gz", b"case 'broken' has no mask (status failed)"),
        ("/api/cases/alpha/preview.png", b"no such page"),
        ("/api/cases/..%2F..%2F..%2Fetc%2Fpasswd/mask.nii.gz", b"no case '../../../etc/passwd'"),
        ("/api/cases/%2Fetc%2Fpasswd/scan.nii.gz", b"no case '/etc/passwd'"),
        ("/api/cases/alpha/..%2F..%2Fmanifest.csv", b"no such page"),
        ("/api/cases/alpha/../../manifest.csv", b"no such page"),
        ("/static/..%2Fserver.py", b"no such page"),
        ("/static/../server.py", b"no such page"),
        ("/../../etc/passwd", b"no such page"),
        ("/manifest.csv", b"no such page"),
    ],
)
def test_unknown_cases_and_other_files_are_404_with_a_message(server, path, message):
    status, body, kind = request(server, path)
    assert status == 404 and kind.startswith("text/plain")
    assert body.startswith(b"not found: ") and message in body and body.count(b"\n") == 1
    assert b"root:" not in body and b"import" not in body and b"case,input" not in body


def test_a_missing_scan_is_404(batch_folder):
    rows = list(csv.DictReader(open(batch_folder / "manifest.csv", newline="")))
    rows[1]["input"] = str(batch_folder / "gone.nii.gz")
    with open(batch_folder / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    server = review_server(batch_folder, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        status, body, _ = request(server, "/api/cases/bravo/scan.nii.gz")
        assert status == 404 and b"case 'bravo': its scan" in body and b"gone.nii.gz is missing" in body
    finally:
        server.shutdown()
        server.server_close()


def test_decisions_land_in_review_csv_and_nothing_else_changes(server, batch_folder):
    before = digests(batch_folder)
    status, body, _ = request(server, "/api/cases/bravo/review", {"decision": "rejected", "note": "liver too big"})
    assert status == 200 and json.loads(body)["decision"] == "rejected"
    assert request(server, "/api/cases/alpha/review", {"decision": "needs-edit"})[0] == 200
    rows = list(csv.DictReader(open(batch_folder / "review.csv", newline="")))
    assert [(r["case"], r["decision"], r["note"]) for r in rows] == [
        ("bravo", "rejected", "liver too big"),
        ("alpha", "needs-edit", ""),
    ]
    cases = {c["case"]: c for c in json.loads(request(server, "/api/cases")[1])["cases"]}
    assert cases["bravo"]["review"]["note"] == "liver too big" and cases["charlie"]["review"] is None
    assert digests(batch_folder) == before  # masks, manifest, run.json untouched


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/api/cases/bravo/review", {"decision": "maybe"}, 400, b"decision must be one of"),
        ("/api/cases/bravo/review", b"{not json", 400, b"not JSON"),
        ("/api/cases/bravo/review", b"", 400, b"expected a JSON body"),
        ("/api/cases/zulu/review", {"decision": "accepted"}, 404, b"no case 'zulu'"),
        ("/api/cases/bravo/mask.nii.gz", {"decision": "accepted"}, 404, b"no such page"),
    ],
)
def test_bad_decisions_are_refused(server, batch_folder, path, body, status, message):
    answer = request(server, path, body)
    assert answer[0] == status and message in answer[1]
    assert not (batch_folder / "review.csv").exists()


def test_the_command_prints_its_address_and_stops_on_ctrl_c(batch_folder, tmp_path):
    command = [sys.executable, "-m", "medseg", "review", str(batch_folder), "--port", "0"]
    temp = tmp_path / "temp"  # where the scan cache goes
    temp.mkdir()
    environment = {**os.environ, "TMPDIR": str(temp)}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    try:
        first, second = process.stdout.readline(), process.stdout.readline()
        assert "reviewing 4 case(s), 2 flagged" in first and str(batch_folder / "review.csv") in first.replace("\n", "")
        url = second.split()[1]
        assert url.startswith("http://127.0.0.1:") and "Ctrl-C stops" in second
        host, port = url.removeprefix("http://").rstrip("/").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.request("GET", "/api/cases/charlie/scan.nii.gz")  # fills the cache
        assert connection.getresponse().status == 200
        (cache,) = temp.glob("medseg-review-*")
        assert len(list(cache.iterdir())) == 1
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err
    assert not cache.exists()


def test_a_taken_port_is_one_line(batch_folder, capsys):
    from medseg.cli import main

    with review_server(batch_folder, port=0) as taken:
        port = taken.server_address[1]
        assert main(["review", str(batch_folder), "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("medseg review: error:") and err.count("\n") == 1
