"""DICOMweb against a real Orthanc: query, pull, push, and the errors a user sees."""

from __future__ import annotations

import json

import pydicom
import pytest

from medseg.errors import PacsError
from medseg.pacs import SeriesQuery, connect, load_settings
from tests.pacs.conftest import ct_study, free_port, run_cli

pytestmark = pytest.mark.integration


@pytest.fixture()
def study(orthanc, tmp_path):
    files = ct_study(tmp_path / "study", series=2)
    orthanc.upload([p for series in files for p in series])
    return files


def test_query_filters_and_pull_round_trip(orthanc, study, tmp_path):
    settings = load_settings(orthanc.settings_file(tmp_path / "cfg"), environ={})
    first = pydicom.dcmread(study[0][0], stop_before_pixels=True)
    with connect(settings) as pacs:
        pacs.echo()
        everything = pacs.find_series(SeriesQuery())
        assert {s.series_uid for s in everything} == {
            str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID) for files in study
        }
        (one,) = pacs.find_series(SeriesQuery(description="phantom 1", modality="CT"))
        assert (one.series_uid, one.study_uid, one.instances) == (first.SeriesInstanceUID, first.StudyInstanceUID, 14)
        assert one.patient_id == "MEDSEG-PHANTOM" and one.series_number == 1
        assert pacs.find_series(SeriesQuery(modality="MR")) == []
        assert len(pacs.find_series(SeriesQuery(study_date=f"{first.StudyDate}-"))) == 2
        assert pacs.find_series(SeriesQuery(study_date="19000101-19000102")) == []
        paths = pacs.retrieve_series(one, tmp_path / "pulled")
    assert len(paths) == 14
    sent = {str(pydicom.dcmread(p).SOPInstanceUID): pydicom.dcmread(p).pixel_array for p in study[0]}
    for path in paths:
        ds = pydicom.dcmread(path)
        assert path.name == f"{ds.SOPInstanceUID}.dcm"
        assert (ds.pixel_array == sent[str(ds.SOPInstanceUID)]).all()


def test_push_files_and_folders_with_the_cli(orthanc, tmp_path):
    files = ct_study(tmp_path / "study", series=2)
    config = orthanc.settings_file(tmp_path / "cfg")
    result = run_cli("pacs", "push", "--pacs", str(config), str(files[0][0].parent), str(files[1][0]))
    assert result.returncode == 0, result.stderr
    assert "15 instance(s) stored" in result.stdout
    counts = sorted(len(s["Instances"]) for s in orthanc.series_of("CT"))
    assert counts == [1, 14]


def test_query_cli_prints_a_table_or_json(orthanc, study, tmp_path):
    config = orthanc.settings_file(tmp_path / "cfg")
    table = run_cli("pacs", "query", "--pacs", str(config), "--modality", "CT")
    assert table.returncode == 0, table.stderr
    assert "phantom 1" in table.stdout and "phantom 2" in table.stdout and "2 series in 1 study" in table.stdout
    listed = run_cli("pacs", "query", "--pacs", str(config), "--description", "phantom 2", "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["description"] == "phantom 2" and row["instances"] == 14


def test_pull_cli_needs_a_filter_and_writes_study_and_series_folders(orthanc, study, tmp_path):
    config = orthanc.settings_file(tmp_path / "cfg")
    refused = run_cli("pacs", "pull", "--pacs", str(config), "--output", str(tmp_path / "out"))
    assert refused.returncode == 2 and "at least one filter" in refused.stderr
    first = pydicom.dcmread(study[1][0], stop_before_pixels=True)
    pulled = run_cli(
        "pacs", "pull", "--pacs", str(config), "--series-uid", first.SeriesInstanceUID, "-o", str(tmp_path / "out")
    )
    assert pulled.returncode == 0, pulled.stderr
    folder = tmp_path / "out" / first.StudyInstanceUID / first.SeriesInstanceUID
    assert len(list(folder.glob("*.dcm"))) == 14


def test_wrong_password_is_one_line_without_the_secret(orthanc, tmp_path):
    config = orthanc.settings_file(tmp_path / "cfg", password="not-the-password-42")
    result = run_cli("pacs", "query", "--pacs", str(config))
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "authentication failed (HTTP 401)" in lines[0] and orthanc.dicomweb in lines[0]
    assert "not-the-password-42" not in result.stderr + result.stdout


def test_a_password_from_an_environment_variable(orthanc, study, tmp_path):
    result = run_cli(
        "pacs", "query", "--url", orthanc.dicomweb, "--username", orthanc.username, "--password-env", "PACS_PW",
        "--json",
        env={"PACS_PW": orthanc.password},
    )
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == 2


def test_an_unreachable_server_is_one_line(tmp_path):
    port = free_port()
    result = run_cli("pacs", "echo", "--url", f"http://127.0.0.1:{port}/dicom-web", "--timeout", "5")
    assert result.returncode == 3
    (line,) = result.stderr.strip().splitlines()
    assert "cannot connect" in line and f"127.0.0.1:{port}" in line


def test_a_missing_secret_variable_is_a_usage_error(tmp_path):
    url = "http://127.0.0.1:9/dicom-web"
    result = run_cli("pacs", "query", "--url", url, "--username", "u", "--password-env", "NOPE_NOT_SET")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "NOPE_NOT_SET is not set" in line


def test_errors_of_the_library_are_pacs_errors(orthanc, tmp_path):
    settings = load_settings(orthanc.settings_file(tmp_path / "cfg", password="wrong"), environ={})
    with connect(settings) as pacs, pytest.raises(PacsError, match="HTTP 401") as error:
        pacs.find_series(SeriesQuery())
    assert isinstance(error.value, ConnectionError)
