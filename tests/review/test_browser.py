"""The report and the review page in a real browser (headless Chromium): what a reviewer clicks, and what lands.

Skipped where chromium, chromedriver or selenium are missing (the ``browser`` fixture).
"""

from __future__ import annotations

import csv
import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from medseg.review.batch import read_batch
from medseg.workflows.report import write_report
from medseg.workflows.review import review_server
from tests import browser as chromium
from tests.review.conftest import FLAGGED

pytestmark = pytest.mark.integration  # a real browser: chromium and chromedriver


def wait_for(condition, timeout: float = 30.0, what: str = "the page"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def rows(driver) -> list[str]:
    return driver.execute_script("return [...document.querySelectorAll('#cases tbody tr')].map(r => r.dataset.case)")


@pytest.fixture()
def report(batch_folder, browser):
    path = write_report(batch_folder).path
    browser.get(path.as_uri())
    wait_for(lambda: browser.execute_script("return document.body.dataset.ready === '1'"), what="the table")
    yield browser
    assert chromium.console_errors(browser) == []


def click(driver, selector: str) -> None:
    driver.find_element("css selector", selector).click()


def test_the_report_lists_every_case(report, batch_folder):
    assert rows(report) == [c.name for c in read_batch(batch_folder).cases]
    flagged = report.execute_script("return [...document.querySelectorAll('#cases tbody tr.flagged')].map(r => r.dataset.case)")
    assert set(flagged) == FLAGGED
    assert report.find_element("id", "shown").text == "4 of 4 case(s) shown"
    report.execute_script("document.querySelectorAll('#cases img.thumb').forEach(i => i.scrollIntoView())")  # lazy
    widths = "return [...document.querySelectorAll('#cases img.thumb')].map(i => i.complete ? i.naturalWidth : 0)"
    assert wait_for(lambda: report.execute_script(widths) == [240, 240, 240], what="the thumbnails")
    assert len(report.find_elements("css selector", "#cases .no-preview")) == 1  # the failed case


def test_sorting_a_column_reorders_the_rows(report, batch_folder):
    volumes = {c.name: c.volumes_ml.get("liver") for c in read_batch(batch_folder).cases}
    by_volume = sorted((n for n in volumes if volumes[n] is not None), key=lambda n: volumes[n])
    click(report, 'th[data-key="vol:liver"]')
    assert rows(report) == by_volume + ["broken"]  # blanks last
    click(report, 'th[data-key="vol:liver"]')
    assert rows(report) == by_volume[::-1] + ["broken"]
    assert report.find_element("css selector", 'th[data-key="vol:liver"]').get_attribute("aria-sort") == "descending"
    click(report, 'th[data-key="case"]')
    assert rows(report) == ["alpha", "bravo", "broken", "charlie"]
    click(report, 'th[data-key="case"]')
    assert rows(report) == ["charlie", "broken", "bravo", "alpha"]


def test_the_filter_narrows_the_rows(report):
    search = report.find_element("id", "filter")
    search.send_keys("far above")
    assert rows(report) == ["bravo"]
    search.clear()
    search.send_keys("FAILED")
    assert rows(report) == ["broken"]
    search.clear()
    search.send_keys("x")  # clear() sends no input event: type, then delete
    search.send_keys("\b")
    assert len(rows(report)) == 4
    click(report, "#flagged-only")
    assert rows(report) == ["alpha", "bravo"]
    search.send_keys("pieces")
    assert rows(report) == ["alpha"] and report.find_element("id", "shown").text == "1 of 4 case(s) shown"
    search.send_keys(" nothing like this")
    assert rows(report) == []


def test_a_flagged_dot_in_the_volume_plot_finds_its_case(report):
    click(report, 'svg.strip[data-label="spleen"] circle.flagged[data-case="bravo"]')
    assert rows(report) == ["bravo"]


def test_the_flagged_cases_export_as_csv(report, browser):
    target = Path(browser.downloads) / "flagged-cases.csv"
    target.unlink(missing_ok=True)
    click(report, "#export-flagged")
    wait_for(lambda: target.is_file() and target.stat().st_size, what="the download")
    exported = list(csv.DictReader(io.StringIO(target.read_text())))
    assert sorted(r["case"] for r in exported) == sorted(FLAGGED)
    by_case = {r["case"]: r for r in exported}
    assert by_case["alpha"]["flags"] == "spleen: 3 pieces, largest 71%;liver touches the upper edge of the scan"
    assert by_case["bravo"]["batch_flags"] == "liver: 3400 mL, far above this batch (median 1500 mL)"
    assert by_case["bravo"]["confidence"] == "0.93" and "liver=" in by_case["bravo"]["volumes_ml"]


# -- the review page ---------------------------------------------------------------------------


class Served:
    """A review server on a free port, in a thread."""

    def __init__(self, folder: Path) -> None:
        self.server = review_server(folder, port=0)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def open_review(driver, folder: Path) -> Served:
    served = Served(folder)
    driver.get(served.server.url)
    return served


def loaded(driver, case: str) -> None:
    wait_for(lambda: driver.execute_script("return document.body.dataset.loaded") == case, what=f"case {case}")
    time.sleep(0.5)  # NiiVue draws on the next animation frames


def viewer_pixels(driver) -> np.ndarray:
    from PIL import Image

    png = driver.find_element("id", "gl").screenshot_as_png
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int32)


def mask_coloured(pixels: np.ndarray) -> int:
    """Pixels of label 1's red (230, 25, 75) laid over grey: far more red than green, more red than blue."""
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return int(np.count_nonzero((r - g > 60) & (r > b + 20)))


def test_the_viewer_draws_the_scan_with_its_mask(browser, batch_folder, tmp_path):
    served = open_review(browser, batch_folder)
    try:
        loaded(browser, "alpha")
        pixels = viewer_pixels(browser)
        Path(tmp_path / "viewer.png").write_bytes(browser.find_element("id", "gl").screenshot_as_png)
        assert pixels.std() > 20 and np.count_nonzero(pixels.sum(axis=2) > 60) > 0.05 * pixels[..., 0].size
        coloured = mask_coloured(pixels)
        assert coloured > 500, coloured
        browser.execute_script("const o = document.getElementById('opacity'); o.value = 0;"
                               "o.dispatchEvent(new Event('input'));")
        time.sleep(0.5)
        assert mask_coloured(viewer_pixels(browser)) < coloured / 10  # the colour was the mask's
        click(browser, '#case-list li[data-case="charlie"]')  # a DICOM series, converted by the server
        loaded(browser, "charlie")
        browser.execute_script("const o = document.getElementById('opacity'); o.value = 0.5;"
                               "o.dispatchEvent(new Event('input'));")
        time.sleep(0.5)
        assert mask_coloured(viewer_pixels(browser)) > 500
        assert chromium.console_errors(browser) == []
    finally:
        served.close()


def test_keys_step_to_flagged_cases_and_marks_survive_a_restart(browser, batch_folder):
    served = open_review(browser, batch_folder)
    try:
        loaded(browser, "alpha")
        body = browser.find_element("tag name", "body")
        body.send_keys("j")
        loaded(browser, "bravo")
        body.send_keys("f")  # no flagged case after bravo: it stays
        body.send_keys("k")
        loaded(browser, "alpha")
        body.send_keys("f")
        loaded(browser, "bravo")
        browser.find_element("id", "note").send_keys("liver far too big")
        click(browser, '#decide button[data-decision="rejected"]')
        wait_for(lambda: (batch_folder / "review.csv").is_file(), what="review.csv")
        body.send_keys("j")
        loaded(browser, "broken")
        assert "broken: no mask (failed): " in browser.find_element("id", "viewer-message").text
        body.send_keys("j")
        loaded(browser, "charlie")
        body.send_keys("a")
        wait_for(lambda: "charlie" in (batch_folder / "review.csv").read_text(), what="the second decision")
    finally:
        served.close()
    decisions = {r["case"]: r for r in csv.DictReader(open(batch_folder / "review.csv", newline=""))}
    assert decisions["bravo"]["decision"] == "rejected" and decisions["bravo"]["note"] == "liver far too big"
    assert decisions["charlie"]["decision"] == "accepted" and set(decisions) == {"bravo", "charlie"}

    served = open_review(browser, batch_folder)  # a new server reads review.csv back
    try:
        loaded(browser, "alpha")
        marks = browser.execute_script(
            "return Object.fromEntries([...document.querySelectorAll('#case-list li')]"
            ".map(li => [li.dataset.case, (li.querySelector('.mark') || {}).textContent || '']))")
        assert marks == {"alpha": "", "bravo": "\u2717 rejected", "broken": "", "charlie": "\u2713 accepted"}
        assert browser.find_element("id", "progress").text == "2 of 4 reviewed; 2 flagged"
        flags = browser.execute_script("return [...document.querySelectorAll('#case-list li[data-flagged]')].map(li => li.dataset.case)")
        assert set(flags) == FLAGGED
        click(browser, '#case-list li[data-case="bravo"]')
        loaded(browser, "bravo")
        assert browser.find_element("id", "note").get_attribute("value") == "liver far too big"
        assert "chosen" in browser.find_element("css selector", '#decide [data-decision="rejected"]').get_attribute("class")
        assert chromium.console_errors(browser) == []
    finally:
        served.close()
