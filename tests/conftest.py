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
    from medseg.workflows.train import TrainOptions, train
    from tests.training.conftest import TINY

    root = tmp_path_factory.mktemp("trained_model")
    dataset = write_phantom_dataset(root / "Dataset001_Phantom", num_training=4)
    pipeline = root / "tiny.yaml"
    pipeline.write_text(TINY)
    return train(dataset, root / "run", TrainOptions(pipeline=pipeline, epochs=1, device="cpu")).model_dir


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


#: The reference nnU-Net models the ``nnunet_models`` fixture can make, by variant: keyword arguments
#: of ``tests.nnunet_reference.build_reference`` (dataset 501 is planned for 2d and 3d_fullres at once).
NNUNET_VARIANTS = {
    "3d": {"dataset_id": 501, "configurations": ("2d", "3d_fullres")},
    "2d": {"dataset_id": 501, "configurations": ("2d", "3d_fullres"), "configuration": "2d"},
    "no_mirroring": {
        "dataset_id": 501,
        "configurations": ("2d", "3d_fullres"),
        "trainer": "nnUNetTrainerMedsegTinyNoMirroring",
    },
    "regions": {"dataset_id": 503, "name": "MedsegPhantomRegions", "regions": True},
    "mr": {"dataset_id": 504, "name": "MedsegPhantomMR", "modality": "MR"},
}


@pytest.fixture(scope="session")
def nnunet_models(tmp_path_factory):
    """``get(variant)``: a real nnU-Net model (:data:`NNUNET_VARIANTS`) and nnU-Net's predictions, made once a session.

    Each is planned, trained (custom trainer, CPU) and run by nnU-Net's own commands
    (``tests/nnunet_reference.py``): about 2 minutes for the first (planning included), 1.5 for each
    further variant on the same dataset. ``$MEDSEG_NNUNET_CACHE`` names a folder to keep them in across
    sessions (delete it after changing the reference helpers). Skips where nnunetv2 is not installed.
    """
    pytest.importorskip("nnunetv2")
    from tests.nnunet_reference import build_reference

    cache = os.environ.get("MEDSEG_NNUNET_CACHE")
    root = Path(cache) if cache else tmp_path_factory.mktemp("nnunet_reference")
    built = {}

    def get(variant: str = "3d"):
        if variant not in built:
            built[variant] = build_reference(root, **NNUNET_VARIANTS[variant])
        return built[variant]

    return get


@pytest.fixture(scope="session")
def nnunet_model(nnunet_models):
    """nnU-Net's 3d_fullres reference (``tests.nnunet_reference.Reference``): ``model_folder``, ``inputs``
    (``<case>_0000.nii.gz``), ``truth`` and ``predictions`` (``<case>.nii.gz``), ``labels``, ``seconds``."""
    return nnunet_models("3d")
