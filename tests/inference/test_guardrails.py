"""Guardrails: warnings (or refusals with strict) for scans unlike the training data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from medseg.config import parse_pipeline
from medseg.errors import InputError
from medseg.inference.guardrails import check_image
from medseg.volume import SourceSeries, Volume
from tests import factories
from tests.training.conftest import TINY

PIPELINE = parse_pipeline(TINY)
FINGERPRINT = {"spacings": [[0.8, 0.8, 2.5], [0.7, 0.7, 3.0]]}


def _ct(values: np.ndarray | None = None, spacing=(0.75, 0.75, 2.5), **source) -> Volume:
    geometry = factories.axial_geometry((10, 8, 6), spacing)
    array = np.full(geometry.shape, -1000, np.int16) if values is None else values
    return Volume(array, geometry, source=SourceSeries(modality="CT", units="HU", **source))


def test_a_ct_like_the_training_data_passes():
    assert check_image(_ct(), PIPELINE, fingerprint=FINGERPRINT) == []


def test_modality_units_and_spacing_are_each_reported():
    mr = dataclasses.replace(_ct(), source=SourceSeries(modality="MR"))
    assert any("modality MR" in w for w in check_image(mr, PIPELINE))
    raw = _ct(np.full((10, 8, 6), 24, np.int16))
    assert any("Hounsfield" in w and "24" in w for w in check_image(raw, PIPELINE))
    wrong_units = dataclasses.replace(_ct(), source=SourceSeries(modality="CT", units="US"))
    assert any("in US" in w for w in check_image(wrong_units, PIPELINE))
    thick = _ct(spacing=(0.75, 0.75, 10.0))
    (warning,) = check_image(thick, PIPELINE, fingerprint=FINGERPRINT)
    assert "10" in warning and "2.5-3 mm" in warning


def test_strict_refuses_and_channels_are_always_refused():
    raw = _ct(np.zeros((10, 8, 6), np.int16))
    with pytest.raises(InputError, match="strict"):
        check_image(raw, PIPELINE, strict=True)
    two = _ct().with_array(np.zeros((2, 10, 8, 6), np.float32))
    with pytest.raises(InputError, match="2 channel.*takes 1"):
        check_image(two, PIPELINE)
