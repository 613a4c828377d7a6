"""Headless Chromium through selenium, for tests of the pages medseg writes and serves.

The ``browser`` fixture (tests/conftest.py) skips where selenium, Debian's ``chromium`` or
``chromedriver`` are absent (``apt-get install chromium chromium-driver``). WebGL runs on
SwiftShader, so NiiVue draws without a GPU.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = "chromedriver"


def missing() -> str:
    """Why no browser can be started here ("" when one can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if not any(shutil.which(name) for name in CHROMIUM):
        return "chromium is not installed (apt-get install chromium chromium-driver)"
    if not shutil.which(DRIVER):
        return "chromedriver is not installed (apt-get install chromium-driver)"
    return ""


def start(downloads: Path, *, width: int = 1280, height: int = 900) -> Any:
    """A headless Chromium that saves downloads into ``downloads`` and keeps its console log."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = next(shutil.which(name) for name in CHROMIUM if shutil.which(name))
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--use-angle=swiftshader",
        "--enable-unsafe-swiftshader",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": os.fspath(downloads)})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(shutil.which(DRIVER)))
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": os.fspath(downloads)})
    return driver


def console_errors(driver: Any) -> list[str]:
    """The browser console's errors since the last call (warnings and info left out)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
