"""Shared fixtures: real scans from ../shared/data (skipped when absent) and phantoms."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medseg.volume import Volume
from tests import factories

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``$MEDSEG_TEST_DATA``, else ``../shared/data`` beside the checkout."""
    return Path(os.environ.get("MEDSEG_TEST_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real scans; tests that use it skip where it is absent."""
    folder = shared_data_dir()
    if not folder.is_dir():
        pytest.skip(f"real test scans not found at {folder} (set MEDSEG_TEST_DATA)")
    return folder


@pytest.fixture()
def phantom() -> tuple[Volume, Volume]:
    """A small CT phantom (image, labels) on an oblique, anisotropic, off-origin grid."""
    return factories.phantom_pair()


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory) -> Path:
    """A model folder from a real, one-epoch ``medseg train`` run of the tiny test pipeline on phantoms."""
    from medseg.synthetic import write_phantom_dataset
    from medseg.workflows.train import train
    from tests.training.conftest import TINY

    root = tmp_path_factory.mktemp("trained_model")
    dataset = write_phantom_dataset(root / "Dataset001_Phantom", num_training=4)
    pipeline = root / "tiny.yaml"
    pipeline.write_text(TINY)
    return train(dataset, root / "run", pipeline=pipeline, epochs=1, device="cpu").model_dir


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """A headless Chromium (selenium), shared by the session; skips where it cannot start (tests/browser.py)."""
    from tests import browser as chromium

    why = chromium.missing()
    if why:
        pytest.skip(why)
    downloads = tmp_path_factory.mktemp("downloads")
    driver = chromium.start(downloads)
    driver.downloads = downloads
    yield driver
    driver.quit()
