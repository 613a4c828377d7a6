"""Phantom datasets and tiny pipelines that train in a second or two on a CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg.config import parse_pipeline
from medseg.config.schema import Pipeline
from medseg.synthetic import write_phantom_dataset

#: A 3-level U-Net on 6 x 6 x 8 mm voxels (phantoms become ~50 x 40 x 21): 3 steps of 2 patches an epoch.
TINY = """\
# A tiny pipeline for tests.
version: 1
name: tiny
modality: CT
labels: {1: liver, 2: spleen, 3: kidney}
preprocessing:
  spacing: [6.0, 6.0, 8.0]
  channels:
    - {name: CT, normalization: {scheme: ct, clip: [-160.0, 240.0], mean: 60.0, std: 50.0}}
network:
  dimensions: 3
  filters: [8, 16, 32]
  kernel_sizes: [[3, 3, 3], [3, 3, 3], [3, 3, 3]]
  strides: [[1, 1, 1], [2, 2, 2], [2, 2, 2]]
  deep_supervision_heads: 1
training:
  patch_size: [32, 32, 16]
  batch_size: 2
  epochs: 3  # three epochs
  iterations_per_epoch: 3
  folds: 3
"""


@pytest.fixture(scope="session")
def phantom_dataset(tmp_path_factory) -> Path:
    """Six labelled phantom cases in nnU-Net layout."""
    return write_phantom_dataset(tmp_path_factory.mktemp("data") / "Dataset001_Phantom", num_training=6)


@pytest.fixture(scope="session")
def tiny_pipeline() -> Pipeline:
    return parse_pipeline(TINY)


@pytest.fixture(scope="session")
def tiny_pipeline_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pipelines") / "tiny.yaml"
    path.write_text(TINY)
    return path
