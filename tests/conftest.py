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
