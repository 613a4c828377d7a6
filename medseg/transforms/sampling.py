"""Random training patches with foreground oversampling (nnU-Net style) and augmentation.

Each sample of a batch picks a case uniformly at random. A share
``training.foreground_oversampling`` of every batch (``floor(B * p)`` samples,
plus one more with probability ``frac(B * p)``, so the expected share is
exactly ``p``) is centred on a foreground voxel: a class present in the case,
chosen uniformly, then one of its voxels (:attr:`PreparedCase.class_locations`).
The patch is then shifted, if needed, to stay inside the image. Other samples
start uniformly at random. Where the image is smaller than the patch it is
placed at a random offset and padded with zeros (image) and 0 (label).

A 2D pipeline samples in-plane patches of one slice ``k`` (a random slice, or
the foreground voxel's).

Augmentation is the pipeline's list of steps (:mod:`medseg.transforms.steps`), a
``monai.transforms.Compose`` applied to ``{"image", "label", "spacing"}`` of each
patch. Where the list starts with medseg's :class:`RandAffineMmd`, the sampler
draws it before cutting, so the rotated patch is read from the case around it
rather than padded (see :mod:`medseg.transforms.augment`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.data import get_track_meta, set_track_meta
from monai.transforms import Compose

from medseg.config.schema import Pipeline
from medseg.errors import InputError
from medseg.transforms.augment import RandAffineMmd, region_half_extent, warp
from medseg.transforms.prepare import PreparedCase, class_locations
from medseg.transforms.steps import build_augmentation


def crop_padded(array: np.ndarray, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """``array[:, start:start+size]`` over the trailing axes, zero where it reaches outside.

    Only the overlapping part of ``array`` (possibly a memory map) is read.
    """
    spatial = array.shape[1:]
    out = np.zeros((array.shape[0], *size), dtype=array.dtype)
    source, target = [slice(None)], [slice(None)]
    for begin, n, total in zip(start, size, spatial):
        low, high = max(begin, 0), min(begin + n, total)
        if high <= low:
            return out
        source.append(slice(low, high))
        target.append(slice(low - begin, high - begin))
    out[tuple(target)] = array[tuple(source)]
    return out


class PatchSampler:
    """Random training patches with foreground oversampling and augmentation.

    Args:
        cases: prepared cases with labels (memory-mapped ones are read patch by patch).
        pipeline: patch size, batch size, oversampling and augmentation come from ``training``.
        seed: fixes every random choice, the augmentation's too (through MONAI's
            ``set_random_state``): the same seed gives the same batches (on CPU).
        augment: False gives plain crops (no augmentation steps).
        batch_size: overrides ``training.batch_size``.

    Attributes:
        samples: patches made so far.
        foreground_samples: how many of them were centred on a foreground voxel.

    Raises:
        InputError: no cases, or a case without a label map.
        ConfigError: an augmentation step that cannot be built.
    """

    def __init__(
        self,
        cases: Sequence[PreparedCase],
        pipeline: Pipeline,
        *,
        seed: int,
        augment: bool = True,
        batch_size: int | None = None,
    ) -> None:
        if not cases:
            raise InputError("PatchSampler needs at least one case")
        unlabelled = [c.case_id for c in cases if c.label is None]
        if unlabelled:
            raise InputError(f"training cases need label maps; these have none: {unlabelled[:5]}")
        self.cases = list(cases)
        self.pipeline = pipeline
        self.augment = augment
        self.batch_size = batch_size or pipeline.training.batch_size
        self.patch = tuple(int(n) for n in pipeline.training.patch_size)
        self.dimensions = pipeline.network.dimensions
        self._rng = np.random.default_rng(seed)
        steps = list(build_augmentation(pipeline).transforms) if augment else []
        self._spatial = steps.pop(0) if steps and isinstance(steps[0], RandAffineMmd) else None
        self._steps = Compose(steps)
        seeds = np.random.default_rng([seed, 1]).integers(2**31, size=2)
        self._steps.set_random_state(seed=int(seeds[0]))
        if self._spatial is not None:
            self._spatial.set_random_state(seed=int(seeds[1]))
        self._locations: list[dict[int, np.ndarray] | None] = [
            None if c.class_locations is None else dict(c.class_locations) for c in self.cases
        ]
        self.samples = 0
        self.foreground_samples = 0

    def __iter__(self) -> PatchSampler:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.batch()

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch: ``(B, C, *patch)`` float32 images and ``(B, 1, *patch)`` int64 labels."""
        share = self.batch_size * self.pipeline.training.foreground_oversampling
        forced = int(share) + int(self._rng.random() < share - int(share))
        images, labels = [], []
        tracking = get_track_meta()
        set_track_meta(False)  # MONAI's steps hand back plain tensors, without metadata to carry along
        try:
            for index in range(self.batch_size):
                image, label = self._sample(force_foreground=index < forced)
                images.append(image)
                labels.append(label)
        finally:
            set_track_meta(tracking)
        return torch.stack(images), torch.stack(labels).to(torch.int64)

    # -- one sample -------------------------------------------------------------------

    def _sample(self, *, force_foreground: bool) -> tuple[torch.Tensor, torch.Tensor]:
        rng = self._rng
        number = int(rng.integers(len(self.cases)))
        case = self.cases[number]
        shape = case.image.shape[1:]
        voxel = self._foreground_voxel(number) if force_foreground else None
        self.samples += 1
        self.foreground_samples += voxel is not None
        if self.dimensions == 2:
            k = int(voxel[2]) if voxel is not None else int(rng.integers(shape[2]))
            image_array, label_array = case.image[..., k], case.label[..., k]  # views: nothing read yet
            spacing = case.geometry.spacing[:2]
            shape, voxel = shape[:2], None if voxel is None else voxel[:2]
        else:
            image_array, label_array, spacing = case.image, case.label, case.geometry.spacing
        start = self._start(shape, voxel)
        matrix = None
        if self._spatial is not None:
            self._spatial.randomize(spacing)
            matrix = self._spatial.matrix
        if matrix is None:
            image = torch.from_numpy(crop_padded(image_array, start, self.patch).astype(np.float32, copy=False))
            label = torch.from_numpy(crop_padded(label_array, start, self.patch))
        else:
            centre = np.asarray(start, dtype=np.float64) + (np.asarray(self.patch) - 1) / 2
            reach = region_half_extent(matrix, self.patch)
            low = np.floor(centre - reach).astype(int)
            size = np.maximum(np.ceil(centre + reach).astype(int) + 1 - low, 2)
            region = torch.from_numpy(crop_padded(image_array, low, size).astype(np.float32, copy=False))
            image = warp(region, matrix, centre - low, self.patch, mode="bilinear")
            label = warp(torch.from_numpy(crop_padded(label_array, low, size)), matrix, centre - low, self.patch, mode="nearest")
        if self._steps.transforms:
            image, label = self._augment(image, label, spacing)
        return image.contiguous(), label.contiguous()

    def _augment(self, image: torch.Tensor, label: torch.Tensor, spacing: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
        """The steps after the spatial one, in order (called one by one: ``Compose.__call__`` costs ~0.5 ms a patch)."""
        item = {"image": image, "label": label, "spacing": tuple(float(v) for v in spacing)}
        for step in self._steps.transforms:
            item = step(item)
        return torch.as_tensor(item["image"], dtype=torch.float32), torch.as_tensor(item["label"]).to(label.dtype)

    def _foreground_voxel(self, number: int) -> np.ndarray | None:
        """A random voxel of a random class present in case ``number`` (None if it has none)."""
        locations = self._locations[number]
        if locations is None:
            case = self.cases[number]
            locations = class_locations(case.label)
            self._locations[number] = locations
        present = [value for value, where in locations.items() if len(where)]
        if not present:
            return None
        where = locations[present[int(self._rng.integers(len(present)))]]
        return np.asarray(where[int(self._rng.integers(len(where)))], dtype=np.int64)

    def _start(self, shape: Sequence[int], voxel: np.ndarray | None) -> list[int]:
        """The patch's first voxel: around ``voxel`` (kept inside the image), or uniformly at random."""
        start = []
        for axis, (n, p) in enumerate(zip(shape, self.patch)):
            low, high = min(0, n - p), max(0, n - p)
            if voxel is None:
                start.append(int(self._rng.integers(low, high + 1)))
            else:
                start.append(int(np.clip(int(voxel[axis]) - p // 2, low, high)))
        return start
