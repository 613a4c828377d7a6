"""``medseg doctor``: the report's keys, its exit code, and a broken installation caught."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from medseg.cli import main


@pytest.fixture(scope="module")
def report():
    """The JSON report of this installation, from a real ``medseg doctor --json`` process."""
    result = subprocess.run(
        [sys.executable, "-m", "medseg", "doctor", "--json"], capture_output=True, text=True, timeout=120
    )
    return result.returncode, json.loads(result.stdout)


def test_the_json_report_has_every_section(report):
    code, data = report
    assert code == 0, data["problems"]
    assert data["ok"] is True and data["problems"] == []
    assert set(data) >= {"medseg", "python", "libraries", "cuda", "codecs", "tools", "bundled_model"}
    assert data["libraries"]["torch"]["ok"] and data["libraries"]["monai"]["version"]
    assert isinstance(data["cuda"]["available"], bool) and "torch_cuda_version" in data["cuda"]
    assert set(data["tools"]) == {"dciodvfy", "storescu", "findscu", "Orthanc"}
    assert data["tools"]["dciodvfy"] == shutil.which("dciodvfy")


def test_codecs_list_the_transfer_syntaxes_and_their_decoders(report):
    _, data = report
    by_name = {entry["name"]: entry for entry in data["codecs"]["transfer_syntaxes"]}
    assert by_name["JPEG 2000 Image Compression (Lossless Only)"]["decodable"]
    assert "pylibjpeg" in by_name["JPEG 2000 Image Compression (Lossless Only)"]["plugins"]
    assert by_name["JPEG-LS Lossless Image Compression"]["essential"]
    assert data["codecs"]["packages"]["pyjpegls"] is not None


def test_the_bundled_model_is_loaded_and_run(report):
    _, data = report
    model = data["bundled_model"]
    assert model["ok"] and model["labels"] == {"1": "liver", "2": "spleen", "3": "kidney"}
    assert len(model["sha256"]) == 64


def test_a_library_that_does_not_import_fails_the_check(tmp_path):
    """A broken install (here: a highdicom that raises on import, first on sys.path) gives exit 1 and says so."""
    broken = tmp_path / "highdicom"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('highdicom is broken in this test')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    result = subprocess.run(
        [sys.executable, "-m", "medseg", "doctor", "--json"], capture_output=True, text=True, timeout=120, env=env
    )
    data = json.loads(result.stdout)
    assert result.returncode == 1 and data["ok"] is False
    assert data["libraries"]["highdicom"]["ok"] is False
    assert any("highdicom" in problem for problem in data["problems"])
    # Under -q the report is silent, but not what is broken.
    result = subprocess.run(
        [sys.executable, "-m", "medseg", "-q", "doctor"], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("medseg doctor: error: highdicom does not import (ImportError: highdicom is broken")


def test_the_text_report_names_each_section(capsys):
    code = main(["doctor"])
    out = capsys.readouterr().out
    assert code == 0, out
    for heading in ("libraries", "GPU", "DICOM codecs", "tools", "bundled model", "the essentials work"):
        assert heading in out


def _doctor_on_a_terminal(*options: str) -> tuple[int, str, str]:
    """``medseg doctor`` with stderr on a pseudo-terminal (stdout piped): exit code, stdout, what the terminal got."""
    import pty

    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "medseg", *options, "doctor"], stdout=subprocess.PIPE, stderr=terminal, text=True
    )
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the process closed its end
            break
        if not chunk:
            break
        shown += chunk
    out = process.stdout.read()
    code = process.wait(timeout=120)
    os.close(controller)
    return code, out, shown.decode(errors="replace")


def test_each_check_shows_progress_on_a_terminal_and_none_under_quiet():
    code, out, shown = _doctor_on_a_terminal()
    assert code == 0 and "the essentials work" in out and "bundled model" in out
    assert "checking libraries" in shown  # the slow first check (torch, MONAI imports) is shown while it runs
    assert "checking" not in out  # the report on stdout is as before
    code, out, shown = _doctor_on_a_terminal("-q")
    assert code == 0 and out == "" and shown == ""
