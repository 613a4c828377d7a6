"""Model formats: one module per kind of model medseg runs, behind one protocol, in one registry.

``--model`` of every command, ``medseg model`` and ``medseg doctor`` go through the registry
(:mod:`~medseg.model_formats.registry`), never through a switch on the kind::

    from medseg.model_formats import describe_model, load_segmenter

    describe_model("runs/liver/model").describe()   # 'a medseg model (liver)'
    segmenter = load_segmenter("Dataset001/nnUNetTrainer__nnUNetPlans__3d_fullres", device="cpu")
    labels = segmenter.segment(image)                # on image's own grid, voxel for voxel

A format is a class with ``name``, ``title``, ``expects``, ``detect``, ``describe``, ``check`` and
``load`` (:class:`~medseg.model_formats.base.ModelFormat`): :mod:`~medseg.model_formats.native`
(medseg's own), :mod:`~medseg.model_formats.nnunet`, :mod:`~medseg.model_formats.bundle`. Another
package adds one through the ``medseg.model_formats`` entry point group (``docs/architecture.md``).
"""

from medseg.model_formats.base import ModelFormat, ModelOptions, ModelPath
from medseg.model_formats.registry import (
    BUNDLED,
    ENTRY_POINT_GROUP,
    check_models,
    describe_model,
    format_of,
    formats,
    is_loaded,
    load_segmenter,
    plugin_problems,
    register_format,
    resolve_path,
)

__all__ = [
    "BUNDLED",
    "ENTRY_POINT_GROUP",
    "ModelFormat",
    "ModelOptions",
    "ModelPath",
    "check_models",
    "describe_model",
    "format_of",
    "formats",
    "is_loaded",
    "load_segmenter",
    "plugin_problems",
    "register_format",
    "resolve_path",
]
