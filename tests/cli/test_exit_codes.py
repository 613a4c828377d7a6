"""Every command ends with a code of one table (``medseg.cli.exits``, ``docs/cli.md``): 0, 1, 2, 3, 4."""

from __future__ import annotations

import errno
import socket

import pytest

from medseg.cli import main
from medseg.cli.exits import Exit, batch_exit, exit_for
from medseg.errors import ConfigError, DatasetError, DicomError, GeometryError, InputError, ModelError, PacsError
from tests import factories
from tests.pacs.conftest import run_cli


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (PacsError("PACS@host:104: association rejected"), 3),
        (ConnectionError("refused"), 3),
        (TimeoutError("no answer"), 3),
        (InputError("scan.nii.gz: not a NIfTI file"), 2),
        (DicomError("ct/: missing slice"), 2),
        (DatasetError("Dataset001: 2 cases without labels"), 2),
        (GeometryError("grids differ"), 2),
        (ConfigError("--overlap takes 0-1"), 2),
        (ModelError("model/: no model.pt"), 2),
        (FileNotFoundError("nope: no such file"), 2),
        (OSError(errno.ENOSPC, "No space left on device"), 1),
        (RuntimeError("a bug"), 1),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_every_error_has_its_code(error, code):
    assert exit_for(error) == code


def test_a_batch_is_ok_partial_or_empty():
    assert batch_exit(failed=0, total=3) is Exit.OK
    assert batch_exit(failed=1, total=3) is Exit.PARTIAL
    assert batch_exit(failed=3, total=3) is Exit.PARTIAL  # finished: the manifest names every failure
    assert batch_exit(failed=0, total=0) is Exit.USAGE  # nothing to work on: a wrong path


@pytest.mark.parametrize(
    "command",
    [
        ["info", "{missing}"],
        ["convert", "{missing}", "{out}"],
        ["plan", "{missing}"],
        ["train", "{missing}", "--output", "{out}"],
        ["predict", "--model", "bundled", "{missing}", "--output", "{out}"],
        ["evaluate", "{missing}", "{missing}"],
        ["model", "{missing}"],
        ["report", "{missing}"],
        ["review", "{missing}"],
        ["listen", "--model", "{missing}", "--storage", "{out}"],
    ],
    ids=lambda command: command[0],
)
def test_a_missing_path_is_a_usage_error_in_one_line(command, tmp_path, capsys):
    values = {"missing": str(tmp_path / "no-such-thing"), "out": str(tmp_path / "out")}
    assert main(["-q", *(part.format(**values) for part in command)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"medseg {command[0]}: error: ") and "no-such-thing" in err


def test_an_unexpected_failure_is_1_in_one_line_and_debug_shows_it(monkeypatch, tmp_path, capsys):
    import medseg.cli.model as model_command

    def broken(args):
        raise RuntimeError("a bug in the command")

    monkeypatch.setattr(model_command, "run", broken)
    assert main(["model", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "medseg model: unexpected error: RuntimeError: a bug in the command (--debug shows where)"
    with pytest.raises(RuntimeError, match="a bug"):
        main(["model", str(tmp_path), "--debug"])


def test_an_unreachable_pacs_is_3():
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for argv in (
        ["pacs", "echo", "--url", f"http://127.0.0.1:{port}/dicom-web", "--timeout", "3"],
        ["pacs", "echo", "--ae-title", "PACS", "--host", "127.0.0.1", "--port", str(port), "--timeout", "3"],
    ):
        result = run_cli(*argv)
        assert result.returncode == 3, result.stderr
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("medseg pacs: error: ")


def test_a_batch_with_a_failed_case_is_4_and_the_rest_is_done(tmp_path):
    image, _ = factories.phantom_pair()
    inputs = tmp_path / "in"
    factories.write_series(image, inputs / "good")
    (inputs / "broken.nii.gz").write_bytes(b"not a NIfTI file")
    out = tmp_path / "out"
    assert main(["-q", "predict", "--model", "bundled", str(inputs), "-o", str(out), "--device", "cpu"]) == 4
    assert [p.name for p in out.rglob("*.nii.gz")] == ["good.nii.gz"]
    assert main(["-q", "convert", str(inputs), str(tmp_path / "converted")]) == 4
    assert len(list((tmp_path / "converted").rglob("*.nii.gz"))) == 1
