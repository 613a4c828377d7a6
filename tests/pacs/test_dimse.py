"""DIMSE against a real Orthanc: C-ECHO, C-FIND, C-GET, C-STORE, and the errors a user sees."""

from __future__ import annotations

import json

import pydicom
import pytest

from medseg.pacs import SeriesQuery, connect, load_settings
from tests.pacs.conftest import ORTHANC_AET, TEST_AET, ct_study, free_port, run_cli

pytestmark = pytest.mark.integration


def test_find_get_and_store(orthanc, tmp_path):
    files = ct_study(tmp_path / "study", series=2)
    settings = load_settings(orthanc.settings_file(tmp_path / "cfg", protocol="dimse"), environ={})
    with connect(settings) as pacs:
        pacs.echo()
        report = pacs.store([p for series in files for p in series])
        assert report.ok and len(report.stored) == 28
        found = pacs.find_series(SeriesQuery(modality="CT"))
        assert sorted(s.description for s in found) == ["phantom 1", "phantom 2"]
        assert {s.instances for s in found} == {14}
        (second,) = pacs.find_series(SeriesQuery(description="*2", patient_id="MEDSEG-*"))
        paths = pacs.retrieve_series(second, tmp_path / "pulled")
        headers = pacs.series_headers(second)
    sent = {str(pydicom.dcmread(p).SOPInstanceUID): pydicom.dcmread(p).pixel_array for p in files[1]}
    assert len(paths) == 14 and len(headers) == 14
    for path in paths:
        ds = pydicom.dcmread(path)
        assert (ds.pixel_array == sent[str(ds.SOPInstanceUID)]).all()


def test_query_and_pull_with_the_cli(orthanc, tmp_path):
    files = ct_study(tmp_path / "study", series=1)
    orthanc.upload(files[0])
    flags = ["--ae-title", ORTHANC_AET, "--host", "127.0.0.1", "--port", str(orthanc.dicom_port),
             "--calling-ae-title", TEST_AET]
    listed = run_cli("pacs", "query", *flags, "--modality", "CT", "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    pulled = run_cli("pacs", "pull", *flags, "--study-uid", row["study_uid"], "-o", str(tmp_path / "out"))
    assert pulled.returncode == 0, pulled.stderr
    assert len(list((tmp_path / "out" / row["study_uid"] / row["series_uid"]).glob("*.dcm"))) == 14


def test_pull_by_c_move_with_the_cli(orthanc, tmp_path):
    files = ct_study(tmp_path / "study", series=1)
    orthanc.upload(files[0])
    port = free_port()
    flags = ["--ae-title", ORTHANC_AET, "--host", "127.0.0.1", "--port", str(orthanc.dicom_port),
             "--calling-ae-title", TEST_AET, "--move-ae", "MEDSEG-MOVE", "--move-port", str(port)]
    study_uid = str(pydicom.dcmread(files[0][0]).StudyInstanceUID)

    unknown = run_cli("pacs", "pull", *flags, "--study-uid", study_uid, "-o", str(tmp_path / "out"))
    assert unknown.returncode == 3
    (line,) = unknown.stderr.strip().splitlines()
    assert "never connected back" in line and "AE title MEDSEG-MOVE" in line and f"port {port}" in line

    orthanc.add_modality("medseg-move", "MEDSEG-MOVE", port)
    pulled = run_cli("pacs", "pull", *flags, "--study-uid", study_uid, "-o", str(tmp_path / "out"))
    assert pulled.returncode == 0, pulled.stderr
    (folder,) = (tmp_path / "out" / study_uid).iterdir()
    sent = {str(pydicom.dcmread(p).SOPInstanceUID) for p in files[0]}
    assert {str(pydicom.dcmread(p).SOPInstanceUID) for p in folder.glob("*.dcm")} == sent


def test_a_c_move_port_in_use_is_one_line(orthanc, tmp_path):
    import socket

    files = ct_study(tmp_path / "study", series=1)
    orthanc.upload(files[0])
    with socket.socket() as busy:
        busy.bind(("", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("pacs", "pull", "--ae-title", ORTHANC_AET, "--host", "127.0.0.1", "--port",
                         str(orthanc.dicom_port), "--calling-ae-title", TEST_AET, "--move-ae", "MEDSEG-MOVE",
                         "--move-port", str(port), "--modality", "CT", "-o", str(tmp_path / "out"))
    assert result.returncode == 3
    (line,) = result.stderr.strip().splitlines()
    assert f"cannot listen on port {port}" in line


def test_a_rejected_association_is_one_line(orthanc, tmp_path):
    port = str(orthanc.dicom_port)
    result = run_cli("pacs", "echo", "--ae-title", "NOT-ORTHANC", "--host", "127.0.0.1", "--port", port)
    assert result.returncode == 3
    (line,) = result.stderr.strip().splitlines()
    assert "association rejected" in line and "called AE title is not recognised" in line
    assert f"NOT-ORTHANC@127.0.0.1:{orthanc.dicom_port}" in line


def test_an_unreachable_peer_is_one_line(tmp_path):
    port = free_port()
    result = run_cli("pacs", "echo", "--ae-title", "PACS", "--host", "127.0.0.1", "--port", str(port), "--timeout", "5")
    assert result.returncode == 3
    (line,) = result.stderr.strip().splitlines()
    assert "cannot connect" in line and f"PACS@127.0.0.1:{port}" in line


def test_pushing_a_file_that_is_not_dicom_names_it(orthanc, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not dicom")
    port = str(orthanc.dicom_port)
    result = run_cli("pacs", "push", "--ae-title", ORTHANC_AET, "--host", "127.0.0.1", "--port", port, str(bad))
    assert result.returncode == 2  # not DICOM: an input error, named
    (line,) = result.stderr.strip().splitlines()
    assert str(bad) in line and "not a readable DICOM file" in line
