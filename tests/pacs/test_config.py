"""PACS settings: file, environment and flags; secrets read from variables or files and never shown."""

from __future__ import annotations

import pytest

from medseg.errors import ConfigError
from medseg.pacs.config import Secret, load_settings, parse_peer
from medseg.pacs.model import SeriesQuery

SECRET = "s3cr3t-Pa55word!"


def test_a_dicomweb_file_with_a_password_file(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text(SECRET + "\n")
    path = tmp_path / "pacs.yaml"
    path.write_text(
        f"url: https://pacs.example.org/dicom-web/\nusername: reader\npassword_file: {secret}\nverify: false\n"
    )
    settings = load_settings(path, environ={})
    assert settings.protocol == "dicomweb"
    assert settings.url == "https://pacs.example.org/dicom-web"
    assert settings.username == "reader" and settings.password.reveal() == SECRET
    assert settings.verify is False
    assert SECRET not in repr(settings) and SECRET not in str(settings.password)


def test_environment_overrides_the_file_and_flags_override_both(tmp_path):
    path = tmp_path / "pacs.yaml"
    path.write_text("ae_title: FILEAET\nhost: file.example.org\nport: 104\n")
    environ = {"MEDSEG_PACS_HOST": "env.example.org", "MEDSEG_PACS_PORT": "4242"}
    settings = load_settings(path, environ=environ, overrides={"port": "11112", "calling_ae_title": "ME"})
    peer = (settings.protocol, settings.ae_title, settings.host, settings.port)
    assert peer == ("dimse", "FILEAET", "env.example.org", 11112)
    assert settings.calling_ae_title == "ME"
    assert settings.describe() == "FILEAET@env.example.org:11112"


def test_the_settings_file_may_come_from_the_environment(tmp_path):
    path = tmp_path / "pacs.yaml"
    path.write_text("url: http://localhost:8042/dicom-web\ntoken_env: MY_TOKEN\n")
    settings = load_settings(environ={"MEDSEG_PACS_FILE": str(path), "MY_TOKEN": SECRET})
    assert settings.token == Secret(SECRET) and settings.username is None


def test_secrets_from_the_environment_directly():
    environ = {
        "MEDSEG_PACS_URL": "http://localhost:8042/dicom-web",
        "MEDSEG_PACS_USERNAME": "u",
        "MEDSEG_PACS_PASSWORD": SECRET,
    }
    assert load_settings(environ=environ).password.reveal() == SECRET


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("url: http://x/dicom-web\nusername: u\npassword: hunter2\n", "secrets do not go into the file"),
        ("url: http://x/dicom-web\nusrname: u\n", "unknown key 'usrname'"),
        ("url: http://u:hunter2@x/dicom-web\n", "must not carry credentials"),
        ("url: ftp://x/\n", "http:// or https://"),
        ("url: http://x/dicom-web\nusername: u\n", "needs password_env or password_file"),
        ("url: http://x/dicom-web\nusername: u\npassword_env: NOT_SET_ANYWHERE\n", "NOT_SET_ANYWHERE is not set"),
        ("url: http://x/dicom-web\nverify: /no/such/ca.pem\n", "CA bundle"),
        ("ae_title: PACS\nhost: x\n", "needs port"),
        ("ae_title: PACS\nhost: x\nport: 70000\n", "not a port number"),
        ("ae_title: A_TITLE_LONGER_THAN_16\nhost: x\nport: 104\n", "not an AE title"),
        ("ae_title: PACS\nhost: x\nport: 104\nmove_ae: MEDSEG\n", "C-MOVE needs both move_ae and move_port"),
        ("ae_title: PACS\nhost: x\nport: 104\nmove_ae: MEDSEG\nmove_port: 0\n", "not a port number"),
        ("ae_title: PACS\nhost: x\nport: 104\ntls: maybe\n", "expected true or false"),
        ("ae_title: PACS\nhost: x\nport: 104\ntls: true\ncertificate: /no/such.pem\nprivate_key: /no/k\n",
         "is not a file"),
        ("- a list\n", "a mapping"),
        ("url: [unclosed\n", "invalid YAML"),
    ],
)
def test_bad_settings_name_the_file_and_key_and_never_echo_secrets(tmp_path, text, message):
    path = tmp_path / "pacs.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_settings(path, environ={})
    assert message in str(error.value)
    assert str(path) in str(error.value) or "port" in str(error.value)
    assert "hunter2" not in str(error.value)
    assert "\n" not in str(error.value)


def test_an_empty_secret_file_is_refused(tmp_path):
    (tmp_path / "pw").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        overrides = {"url": "http://x/dicom-web", "username": "u", "password_file": str(tmp_path / "pw")}
        load_settings(environ={}, overrides=overrides)


def test_no_pacs_at_all_says_how_to_give_one():
    with pytest.raises(ConfigError, match="--pacs FILE"):
        load_settings(environ={})


def test_a_peer_written_as_aet_at_host_port():
    peer = parse_peer("ORTHANC@127.0.0.1:4242", calling_ae_title="MEDSEG")
    assert (peer.ae_title, peer.host, peer.port, peer.calling_ae_title) == ("ORTHANC", "127.0.0.1", 4242, "MEDSEG")
    with pytest.raises(ConfigError, match="AET@HOST:PORT"):
        parse_peer("ORTHANC:4242")


@pytest.mark.parametrize("date", ["20240101", "20240101-20240131", "20240101-", "-20240131"])
def test_study_date_ranges(date):
    assert SeriesQuery(study_date=date).study_filters() == {"StudyDate": date}


@pytest.mark.parametrize("date", ["2024-01-01", "20240131-20240101", "-", "2024"])
def test_bad_study_dates_are_refused(date):
    with pytest.raises(ConfigError, match="study date"):
        SeriesQuery(study_date=date)
