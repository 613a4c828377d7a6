"""Preprocessing as MONAI dictionary transforms: crop to the scan, resample in mm, normalise.

Each step reads and writes an item ``{"image": (C, I, J, K), "label": (1, I, J, K)
(optional), "geometry": Geometry}`` and keeps the geometry exact: the crop moves
the origin to the box's first voxel, the resampling puts every voxel centre where
:func:`medseg.transforms.resample.target_grid` says. MONAI's own ``CropForegroundd``
and ``Spacingd`` would do the same jobs on ``MetaTensor`` affines, but in RAS, with
their own rounding of the output shape and without memory-mapped inputs; these
steps keep medseg's one :class:`~medseg.geometry.Geometry` (LPS) flowing, so that a
mask written back lands on the scan's grid to the voxel.

:func:`preprocessing` composes them as ``pipeline.preprocessing`` says; a notebook
can add MONAI transforms around them::

    steps = Compose([*preprocessing(pipeline).transforms, ScaleIntensityd(keys="image")])
    item = steps({"image": volume.array, "geometry": volume.geometry})
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.transforms import Compose, MapTransform

from medseg.config.schema import Normalization, Pipeline
from medseg.geometry import Geometry
from medseg.transforms.normalize import BODY_HU, body_box, nonzero_box, normalize
from medseg.transforms.resample import Order, resample, target_grid

log = logging.getLogger(__name__)

#: The item entry that holds the grid of the arrays.
GEOMETRY = "geometry"


class CropToNonzerod(MapTransform):
    """Cut every key to the bounding box of voxels non-zero in any channel of ``source_key``.

    The box is taken on the source grid, so it is exact; the item's geometry keeps its
    axes and spacing and its origin moves to the box's first voxel. An image that is
    zero everywhere is left whole (with a warning).
    """

    #: What the box holds, for the warning when it is empty.
    region = "non-zero voxels"

    def __init__(
        self, keys: Sequence[Hashable] = ("image", "label"), source_key: str = "image", allow_missing_keys: bool = True
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.source_key = source_key

    def box(self, image: np.ndarray) -> tuple[slice, slice, slice] | None:
        """The box to keep, on the source grid (None: keep everything)."""
        return nonzero_box(image)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        box = self.box(np.asarray(d[self.source_key]))
        if box is None:
            log.warning("%s: the image has no %s; not cropped", d.get("case_id") or "case", self.region)
            return d
        for key in self.key_iterator(d):
            d[key] = d[key][(slice(None), *box)]
        geometry: Geometry = d[GEOMETRY]
        affine = geometry.affine_lps
        affine[:3, 3] = geometry.index_to_physical([s.start for s in box])
        d[GEOMETRY] = Geometry([s.stop - s.start for s in box], affine, geometry.frame_of_reference_uid)
        return d


class CropToBodyd(CropToNonzerod):
    """Cut every key to the box of a CT's body: voxels above ``threshold`` HU in channel 0 of ``source_key``.

    The air around a patient is about a third to half of a typical CT's voxels; the
    network need not look at it (the MONAI tutorial's ``CropForegroundd`` does the same).
    Scan voxels outside the box are labelled background at inference.
    """

    region = "voxels above the body threshold"

    def __init__(
        self,
        keys: Sequence[Hashable] = ("image", "label"),
        source_key: str = "image",
        threshold: float = BODY_HU,
        allow_missing_keys: bool = True,
    ) -> None:
        super().__init__(keys, source_key, allow_missing_keys)
        self.threshold = float(threshold)

    def box(self, image: np.ndarray) -> tuple[slice, slice, slice] | None:
        return body_box(image, self.threshold)


class ResampleToSpacingd(MapTransform):
    """Resample every key to ``spacing`` (mm along i, j, k) on the item's geometry.

    ``keep_slices`` keeps the k spacing as it is (a 2D network's slices). ``orders`` is
    ``linear`` or ``nearest`` per key (default: nearest for keys named like labels),
    ``dtypes`` the output type per key (default: the input's).
    """

    def __init__(
        self,
        keys: Sequence[Hashable] = ("image", "label"),
        spacing: Sequence[float] = (1.0, 1.0, 1.0),
        keep_slices: bool = False,
        orders: Sequence[Order] | None = None,
        dtypes: Sequence[Any] | None = None,
        allow_missing_keys: bool = True,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(spacing) != 3 or any(float(s) <= 0 for s in spacing):
            raise ValueError(f"spacing must be three positive numbers (mm), got {list(spacing)}")
        self.spacing = tuple(float(s) for s in spacing)
        self.keep_slices = keep_slices
        self.orders = list(orders or ["nearest" if "label" in str(k) else "linear" for k in self.keys])
        self.dtypes = list(dtypes or [None] * len(self.keys))
        if len(self.orders) != len(self.keys) or len(self.dtypes) != len(self.keys):
            raise ValueError(f"orders and dtypes need one entry per key ({len(self.keys)})")

    def target(self, geometry: Geometry) -> Geometry:
        """The grid an item on ``geometry`` is resampled to."""
        spacing = (*self.spacing[:2], geometry.spacing[2]) if self.keep_slices else self.spacing
        return target_grid(geometry, spacing)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        source: Geometry = d[GEOMETRY]
        target = self.target(source)
        for key, order, dtype in self.key_iterator(d, self.orders, self.dtypes):
            d[key] = resample(d[key], source, target, order=order, dtype=dtype or d[key].dtype)
        d[GEOMETRY] = target
        return d


class NormalizeChannelsd(MapTransform):
    """Normalise each channel of the float32 image as its :class:`Normalization` says (in place).

    With ``nonzero_region`` the z-score statistics come from voxels non-zero in any
    channel and the rest is set to 0 (nnU-Net's rule after cropping to non-zero).
    """

    def __init__(
        self,
        keys: Sequence[Hashable] = ("image",),
        settings: Sequence[Normalization] = (),
        nonzero_region: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.settings = list(settings)
        self.nonzero_region = nonzero_region

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            mask = np.any(image != 0, axis=0) if self.nonzero_region else None
            d[key] = normalize(image, self.settings, mask=mask)
        return d


def preprocessing(pipeline: Pipeline, *, label_dtype: Any = np.uint8) -> Compose:
    """The steps that bring a case onto the network's grid, as ``pipeline.preprocessing`` says.

    Crop to non-zero and to the body (when set), resample (image linear into float32, label nearest into
    ``label_dtype``; a 2D network keeps its slices), normalise each channel.
    """
    settings = pipeline.preprocessing
    steps: list[MapTransform] = []
    if settings.crop_to_nonzero:
        steps.append(CropToNonzerod(keys=("image", "label")))
    if settings.crop_to_body:
        steps.append(CropToBodyd(keys=("image", "label")))
    steps.append(
        ResampleToSpacingd(
            keys=("image", "label"),
            spacing=settings.spacing,
            keep_slices=pipeline.network.dimensions == 2,
            orders=("linear", "nearest"),
            dtypes=(np.float32, label_dtype),
        )
    )
    steps.append(
        NormalizeChannelsd(
            keys=("image",), settings=[c.normalization for c in settings.channels], nonzero_region=settings.crop_to_nonzero
        )
    )
    return Compose(steps)
