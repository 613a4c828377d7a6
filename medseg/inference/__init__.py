"""Inference: segment scans with a trained model, on the scan's own grid.

:class:`~medseg.inference.engine.Segmenter` is the entry point::

    from medseg.inference import Segmenter

    segmenter = Segmenter.from_folder("runs/phantom/model", device="auto")
    labels = segmenter.segment(image)   # a label Volume on image.geometry, voxel for voxel

Modules: :mod:`~medseg.inference.window` (the streaming sliding window),
:mod:`~medseg.inference.engine` (preparation, back onto the scan's grid, settings) and
:mod:`~medseg.inference.postprocess` (connected components, islands, holes).
"""

from __future__ import annotations

from typing import Any

__all__ = ["InferenceSettings", "Segmenter", "segments_of"]


def __getattr__(name: str) -> Any:
    # Lazy: importing medseg.inference (e.g. for the CLI's argument parsing) does not load torch and MONAI.
    if name in __all__:
        from medseg.inference import engine  # torch and MONAI: on first use

        return getattr(engine, name)
    raise AttributeError(f"module 'medseg.inference' has no attribute {name!r}")
