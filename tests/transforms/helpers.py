"""Pipelines and phantom cases for the transforms tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from medseg.config.schema import Pipeline
from medseg.geometry import Geometry
from medseg.synthetic import PhantomSpec, make_phantom
from medseg.volume import Volume

CT = {"scheme": "ct", "clip": [-160.0, 240.0], "mean": 60.0, "std": 50.0}


def make_pipeline(
    *,
    dimensions: int = 3,
    spacing: tuple[float, float, float] = (3.0, 3.0, 4.0),
    patch: tuple[int, ...] = (32, 32, 16),
    normalization: dict[str, Any] | list[dict[str, Any]] = CT,
    crop_to_nonzero: bool = False,
    crop_to_body: bool = False,
    orientation: str = "stored",
    augmentation: dict[str, Any] | list[dict[str, Any]] | None = None,
    **training: Any,
) -> Pipeline:
    """A small valid pipeline; ``training`` overrides keys of the training section."""
    if not isinstance(augmentation, list):  # the old fixed keys, migrated on load
        augmentation = {"flip_axes": list(range(dimensions)), **(augmentation or {})}
    schemes = normalization if isinstance(normalization, list) else [normalization]
    return Pipeline.model_validate(
        {
            "name": "test",
            "modality": "CT",
            "labels": {1: "liver", 2: "spleen", 3: "kidney"},
            "preprocessing": {
                "spacing": list(spacing),
                "channels": [{"name": f"c{i}", "normalization": s} for i, s in enumerate(schemes)],
                "crop_to_nonzero": crop_to_nonzero,
                "crop_to_body": crop_to_body,
                "orientation": orientation,
            },
            "network": {
                "dimensions": dimensions,
                "filters": [8, 16, 32],
                "kernel_sizes": [[3] * dimensions] * 3,
                "strides": [[1] * dimensions, [2] * dimensions, [2] * dimensions],
                "deep_supervision": False,
            },
            "training": {"patch_size": list(patch), "batch_size": 2, **training, "augmentation": augmentation},
        }
    )


def phantom(seed: int = 5, geometry: Geometry | None = None) -> tuple[Volume, Volume]:
    """A CT phantom on the default small grid (96 x 80 x 40 at 3 x 3 x 4 mm) or on ``geometry``."""
    return make_phantom(seed, PhantomSpec(), geometry)


def physical_centroid(weights: np.ndarray, geometry: Geometry) -> np.ndarray:
    """The weighted mean position (LPS mm) of a ``(I, J, K)`` array of non-negative weights."""
    index = np.indices(weights.shape).reshape(3, -1).T
    w = weights.reshape(-1).astype(np.float64)
    return geometry.index_to_physical((index * w[:, None]).sum(axis=0) / w.sum())
