"""The browser fixture says why it skips where no browser can start, rather than failing."""

from __future__ import annotations

import shutil

import pytest

from tests import browser


def test_a_machine_without_chromium_is_told_what_to_install(monkeypatch, tmp_path):
    pytest.importorskip("selenium")
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on it
    assert browser.missing().startswith("chromium is not installed (apt-get install chromium chromium-driver)")
    (tmp_path / "chromium").write_text("#!/bin/sh\n")
    (tmp_path / "chromium").chmod(0o755)
    assert browser.missing() == "chromedriver is not installed (apt-get install chromium-driver)"
    assert shutil.which("chromium") == str(tmp_path / "chromium")
