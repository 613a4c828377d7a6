"""Checks before a scan meets a model: is this the kind of image the model was trained on?

A model trained on CT in Hounsfield units gives confident nonsense on an MR, on
raw stored values without the rescale applied, or on a 5 mm scan when it saw 1 mm
ones. These checks say so before inference: as warnings, or as a refusal in
strict mode. A channel count the network cannot take is always refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from medseg.config.schema import Pipeline
from medseg.errors import InputError
from medseg.volume import Volume

#: A CT whose lowest value is above this does not look like HU (air is -1000 HU).
CT_LOWEST_HU = -500.0
#: A spacing this many times finer or coarser than every training case's is "far outside".
SPACING_FACTOR = 2.0


@dataclass(frozen=True)
class ModelFacts:
    """What the checks need to know of a model: its input channels, by name, and the modality it was trained on."""

    channels: tuple[str, ...]
    modality: str | None = None

    @classmethod
    def of(cls, pipeline: Pipeline) -> ModelFacts:
        """The facts of a medseg pipeline."""
        return cls(tuple(c.name for c in pipeline.preprocessing.channels), pipeline.modality)


def check_image(
    image: Volume,
    model: Pipeline | ModelFacts,
    *,
    fingerprint: Mapping[str, Any] | None = None,
    strict: bool = False,
) -> list[str]:
    """The warnings for ``image`` under a model; raises instead in strict mode.

    Args:
        image: the scan about to be segmented.
        model: the model's pipeline, or its :class:`ModelFacts` (a model medseg did not train).
        fingerprint: the model's ``fingerprint.json``, when it has one (training spacings).
        strict: raise on the first finding instead of returning it.

    Returns:
        One line per finding (empty when the image looks like the training data).

    Raises:
        InputError: the channel count differs from the model's (always), or any
            finding in strict mode.
    """
    facts = model if isinstance(model, ModelFacts) else ModelFacts.of(model)
    expected = len(facts.channels)
    if image.num_channels != expected:
        names = ", ".join(facts.channels)
        raise InputError(f"the image has {image.num_channels} channel(s); the model takes {expected} ({names})")
    findings = [*_modality(image, facts), *_units(image, facts), *_spacing(image, fingerprint)]
    if strict and findings:
        raise InputError(f"{findings[0]} (--strict)")
    return findings


def _modality(image: Volume, facts: ModelFacts) -> list[str]:
    found, trained = image.source.modality, facts.modality
    if found and trained and found.upper() != trained.upper():
        return [f"modality {found}, but the model was trained on {trained}"]
    return []


def _units(image: Volume, facts: ModelFacts) -> list[str]:
    if (facts.modality or "").upper() != "CT":
        return []
    units = image.source.units
    if units and units.upper() != "HU":
        return [f"pixel values are in {units}, not Hounsfield units"]
    lowest = float(np.min(image.array[0])) if image.array.size else 0.0
    if lowest > CT_LOWEST_HU:
        return [f"lowest value {lowest:g} does not look like Hounsfield units (air is -1000); is the rescale applied?"]
    return []


def _spacing(image: Volume, fingerprint: Mapping[str, Any] | None) -> list[str]:
    if not fingerprint or not fingerprint.get("spacings"):
        return []
    seen = np.asarray(fingerprint["spacings"], dtype=np.float64)
    low, high = seen.min(axis=0) / SPACING_FACTOR, seen.max(axis=0) * SPACING_FACTOR
    spacing = np.asarray(image.geometry.spacing)
    outside = (spacing < low) | (spacing > high)
    if not outside.any():
        return []
    shown = " x ".join(f"{v:.3g}" for v in spacing)
    ranges = " x ".join(f"{a:.3g}-{b:.3g}" for a, b in zip(seen.min(axis=0), seen.max(axis=0)))
    return [f"spacing {shown} mm is far outside the training data's {ranges} mm"]
