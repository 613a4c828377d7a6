"""Workflow tests call the library API as a notebook would; they share the fixtures of the libraries' tests."""

from __future__ import annotations

from tests.inference.conftest import one_torch_thread  # noqa: F401 - autouse: tiny networks on one thread
from tests.pacs.conftest import orthanc, orthanc_server  # noqa: F401 - a real Orthanc on loopback
from tests.review.conftest import batch_folder, older_folder, predicted  # noqa: F401 - a predicted batch
from tests.training.conftest import phantom_dataset, tiny_pipeline, tiny_pipeline_file  # noqa: F401
