"""Clean-up of predicted label maps: largest component, small islands, holes.

Each step works on one label at a time, inside that label's bounding box
(:func:`scipy.ndimage.find_objects`), so a small organ in a large scan costs
little. Connectivity: a label's voxels connect through faces, edges and corners
(26 neighbours in 3D); the background inside a label connects through faces
only (6 neighbours), so a hole sealed on every face is a hole even where its
corners touch the outside. Removed voxels become background (0); hole filling
changes only background voxels.

Volumes are in millilitres from the grid's voxel volume
(:attr:`medseg.geometry.Geometry.voxel_volume_ml`), so thresholds mean the same
at any spacing.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medseg.config.schema import Postprocessing
from medseg.errors import InputError

#: 26-connectivity in 3D: components of a label.
_FULL = ndimage.generate_binary_structure(3, 3)


def postprocess(labels: np.ndarray, settings: Postprocessing, *, voxel_volume_ml: float) -> np.ndarray:
    """Apply a pipeline's post-processing to an ``(I, J, K)`` label map, in place.

    Per label, in increasing label order: islands smaller than ``min_island_ml``
    are removed, then all but the largest component (``largest_component``),
    then holes are filled (``fill_holes``).

    Args:
        labels: integer label map, changed in place.
        settings: the pipeline's ``inference.postprocessing``.
        voxel_volume_ml: the volume of one voxel in mL.

    Returns:
        ``labels``.

    Raises:
        InputError: not a 3D integer array, or a non-positive voxel volume.
    """
    wanted = sorted(set(settings.largest_component) | set(settings.min_island_ml) | set(settings.fill_holes))
    if not wanted:
        return labels
    _check(labels, voxel_volume_ml)
    boxes = {number: box for number, box in enumerate(ndimage.find_objects(labels), start=1) if box is not None}
    for label in wanted:
        box = boxes.get(label)
        if box is None:
            continue
        view = labels[box]
        if label in settings.min_island_ml:
            _remove_small_islands(view, label, settings.min_island_ml[label] / voxel_volume_ml)
        if label in settings.largest_component:
            _keep_largest_component(view, label)
        if label in settings.fill_holes:
            _fill_holes(view, label)
    return labels


def keep_largest_component(labels: np.ndarray, label: int) -> np.ndarray:
    """Set every voxel of ``label`` outside its largest connected component to 0, in place.

    Ties keep the component met first in index order. Returns ``labels``.
    """
    _check(labels)
    box = _box(labels, label)
    if box is not None:
        _keep_largest_component(labels[box], label)
    return labels


def remove_small_islands(labels: np.ndarray, label: int, *, min_ml: float, voxel_volume_ml: float) -> np.ndarray:
    """Set connected components of ``label`` smaller than ``min_ml`` millilitres to 0, in place.

    Returns ``labels``.
    """
    _check(labels, voxel_volume_ml)
    box = _box(labels, label)
    if box is not None:
        _remove_small_islands(labels[box], label, min_ml / voxel_volume_ml)
    return labels


def fill_holes(labels: np.ndarray, label: int) -> np.ndarray:
    """Give ``label`` to background voxels that ``label`` encloses (in 3D), in place.

    Returns ``labels``.
    """
    _check(labels)
    box = _box(labels, label)
    if box is not None:
        _fill_holes(labels[box], label)
    return labels


# -- on one label's box ---------------------------------------------------------------------


def _keep_largest_component(view: np.ndarray, label: int) -> None:
    components, count = ndimage.label(view == label, structure=_FULL)
    if count > 1:
        sizes = np.bincount(components.ravel(), minlength=count + 1)
        sizes[0] = 0
        view[(components != 0) & (components != int(np.argmax(sizes)))] = 0


def _remove_small_islands(view: np.ndarray, label: int, min_voxels: float) -> None:
    components, count = ndimage.label(view == label, structure=_FULL)
    if count:
        sizes = np.bincount(components.ravel(), minlength=count + 1)
        small = np.flatnonzero(sizes < min_voxels)
        small = small[small != 0]
        if small.size:
            view[np.isin(components, small)] = 0


def _fill_holes(view: np.ndarray, label: int) -> None:
    mask = view == label
    holes = ndimage.binary_fill_holes(mask) & ~mask & (view == 0)
    view[holes] = label


def _check(labels: np.ndarray, voxel_volume_ml: float = 1.0) -> None:
    if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"post-processing needs an (I, J, K) integer label map, got {labels.dtype} {labels.shape}")
    if not voxel_volume_ml > 0:
        raise InputError(f"post-processing needs a positive voxel volume, got {voxel_volume_ml} mL")


def _box(labels: np.ndarray, label: int) -> tuple[slice, ...] | None:
    """The bounding box of one label, or None when it is absent."""
    if label < 1:
        raise InputError(f"post-processing applies to labels 1 and up, got {label}")
    mask = labels == label
    box = []
    for axis in range(3):
        found = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(3) if a != axis)))
        if found.size == 0:
            return None
        box.append(slice(int(found[0]), int(found[-1]) + 1))
    return tuple(box)
