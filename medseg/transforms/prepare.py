"""One case brought onto the grid the network sees: cropped, resampled, normalised.

With ``preprocessing.orientation: LPS`` the image and label map are first put in the
canonical voxel order (:func:`medseg.orientation.to_canonical`: axes permuted and flipped,
no interpolation), so every scan reaches the network the same way round whatever order it
was stored in. :func:`prepare_case` then runs the MONAI dictionary transforms of
:func:`medseg.transforms.preprocess.preprocessing`, in this order:

1. ``crop_to_nonzero``: cut both volumes to the bounding box of voxels that are
   non-zero in any image channel (on the source grid, so the box is exact); the
   grid's origin moves to the box's first voxel. ``crop_to_body`` (CT): the same with
   the box of voxels above -500 HU, the body.
2. Resample to ``preprocessing.spacing`` on :func:`medseg.transforms.resample.target_grid`
   (origin and axes kept; see there where every voxel centre goes): linear for
   the image, nearest for the label map. A 2D pipeline resamples only ``i`` and
   ``j``; its slices (``k``) are kept as they are.
3. Normalise each channel (:func:`medseg.transforms.normalize.normalize`); the
   z-score region is the non-zero region when ``crop_to_nonzero`` is set.

It also lists where each label lies (a sample of voxel indices per class), so
that patch sampling can centre patches on foreground without scanning the case.
"""

from __future__ import annotations

import logging
import mmap
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from medseg.config.schema import Pipeline
from medseg.errors import InputError
from medseg.geometry import Geometry
from medseg.orientation import to_canonical
from medseg.transforms.preprocess import preprocessing
from medseg.volume import Volume

log = logging.getLogger(__name__)

#: Foreground voxels kept per class (nnU-Net's numbers): all up to this many ...
MAX_LOCATIONS = 10_000
#: ... and at least this fraction of them beyond it.
MIN_LOCATION_FRACTION = 0.01


@dataclass(frozen=True, eq=False)
class PreparedCase:
    """A case on the network's grid.

    Attributes:
        case_id: the dataset's name for the case.
        image: float32 ``(C, I, J, K)``, resampled and normalised.
        label: uint8 ``(1, I, J, K)`` (int16 past 255 labels) on the same grid, or None.
        geometry: the grid of ``image`` and ``label``: the pipeline's spacing, the
            source's origin (moved by the crop) and axes (in the canonical order when the
            pipeline asks for it).
        source_geometry: the grid the case was prepared from, for :func:`restore_to_source`:
            the scan's own, or its canonical order (same voxel centres, axes permuted).
        class_locations: label value -> ``(n, 3)`` int32 voxel indices (a random
            sample) of that label; None until computed (:func:`class_locations`).
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    geometry: Geometry
    source_geometry: Geometry | None = None
    class_locations: Mapping[int, np.ndarray] | None = field(default=None, repr=False)

    def __reduce__(self) -> tuple:
        # Memory-mapped arrays travel to worker processes as their file name, not their bytes.
        return (
            _rebuild,
            (
                self.case_id,
                _portable(self.image),
                _portable(self.label),
                self.geometry,
                self.source_geometry,
                self.class_locations,
            ),
        )

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """Voxels along ``i, j, k``."""
        return self.geometry.shape


def _portable(array: np.ndarray | None) -> object:
    """A memory map of a whole ``.npy`` file (or an axis permutation of one) as its file name and axes."""
    if not isinstance(array, np.memmap) or not array.filename:
        return array
    root = array if isinstance(array.base, mmap.mmap) else array.base
    if not (isinstance(root, np.memmap) and isinstance(root.base, mmap.mmap)):
        return array
    if array.ctypes.data != root.ctypes.data or array.size != root.size:
        return array
    axes = []
    for stride, size in zip(array.strides, array.shape):
        matches = [a for a in range(root.ndim) if root.strides[a] == stride and root.shape[a] == size and a not in axes]
        if not matches:
            return array
        axes.append(matches[0])
    return ("memmap", str(array.filename), tuple(axes))


def _reopen(value: object) -> np.ndarray | None:
    if isinstance(value, tuple) and len(value) == 3 and value[0] == "memmap":
        return np.load(value[1], mmap_mode="r").transpose(value[2])
    return value  # type: ignore[return-value]


def _rebuild(
    case_id: str,
    image: object,
    label: object,
    geometry: Geometry,
    source_geometry: Geometry | None,
    locations: Mapping[int, np.ndarray] | None,
) -> PreparedCase:
    return PreparedCase(case_id, _reopen(image), _reopen(label), geometry, source_geometry, locations)


def prepared_spacing(source: Geometry, pipeline: Pipeline) -> tuple[float, float, float]:
    """The spacing a case is resampled to: the pipeline's, or its in-plane part for a 2D network."""
    spacing = pipeline.preprocessing.spacing
    if pipeline.network.dimensions == 2:
        return (float(spacing[0]), float(spacing[1]), source.spacing[2])
    return (float(spacing[0]), float(spacing[1]), float(spacing[2]))


def prepare_case(image: Volume, label: Volume | None, pipeline: Pipeline, *, case_id: str = "") -> PreparedCase:
    """Crop, resample and normalise one case as ``pipeline.preprocessing`` says.

    Args:
        image: the scan, one channel per ``preprocessing.channels`` entry.
        label: its label map on the same grid, or None (inference).
        pipeline: the recipe.
        case_id: carried into the result and into error messages.

    Returns:
        The prepared case, with ``class_locations`` filled when there is a label.

    Raises:
        InputError: the channel count differs from the pipeline's.
        GeometryError: the label map is not on the image's grid.
    """
    what = f"case {case_id!r}" if case_id else "case"
    settings = pipeline.preprocessing
    if image.num_channels != len(settings.channels):
        raise InputError(
            f"{what}: image has {image.num_channels} channel(s), the pipeline lists {len(settings.channels)} "
            f"({', '.join(c.name for c in settings.channels)})"
        )
    if label is not None:
        image.geometry.require_same_grid(label.geometry, tolerance_mm=0.01, what=f"{what}: image and label grids")
    if settings.orientation != "stored":
        image = to_canonical(image)[0]
        label = None if label is None else to_canonical(label)[0]
    item: dict[str, object] = {"image": image.array, "geometry": image.geometry, "case_id": what}
    label_dtype: type = np.uint8
    if label is not None:
        top = int(label.array.max()) if label.array.size else 0
        if top > np.iinfo(np.int16).max:
            raise InputError(f"{what}: label value {top} is beyond what training supports (32767)")
        label_dtype = np.uint8 if top <= 255 else np.int16
        item["label"] = label.array
    item = preprocessing(pipeline, label_dtype=label_dtype)(item)
    prepared, prepared_label, target = item["image"], item.get("label"), item["geometry"]
    locations = None if prepared_label is None else class_locations(prepared_label, seed=_stable_seed(case_id))
    log.debug("prepared %s: %s -> %s", what, list(image.geometry.shape), list(target.shape))
    return PreparedCase(case_id, prepared, prepared_label, target, image.geometry, locations)


def class_locations(label: np.ndarray, *, seed: int = 0) -> dict[int, np.ndarray]:
    """A random sample of the voxel indices of each non-zero label value.

    Every voxel of a class is kept up to :data:`MAX_LOCATIONS`; beyond that,
    ``max(MAX_LOCATIONS, 1% of them)`` are drawn without replacement.

    Args:
        label: ``(1, I, J, K)`` or ``(I, J, K)`` integer label map.
        seed: makes the sample reproducible.

    Returns:
        Label value -> ``(n, 3)`` int32 ``(i, j, k)`` indices, ascending by value.
    """
    flat = np.asarray(label).reshape(-1)
    foreground = np.flatnonzero(flat)
    if foreground.size == 0:
        return {}
    values = flat[foreground]
    order = np.argsort(values, kind="stable")
    foreground, values = foreground[order], values[order]
    classes, starts, counts = np.unique(values, return_index=True, return_counts=True)
    rng = np.random.default_rng(seed)
    spatial = np.asarray(label).shape[-3:]
    result = {}
    for value, start, count in zip(classes.tolist(), starts, counts):
        members = foreground[start : start + count]
        keep = max(MAX_LOCATIONS, int(np.ceil(count * MIN_LOCATION_FRACTION)))
        if count > keep:
            members = np.sort(rng.choice(members, size=keep, replace=False))
        result[int(value)] = np.stack(np.unravel_index(members, spatial), axis=1).astype(np.int32)
    return result


def _stable_seed(text: str) -> int:
    """A seed derived from a string, the same in every process (unlike ``hash``)."""
    return zlib.crc32(text.encode("utf-8"))
