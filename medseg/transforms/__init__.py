"""Getting cases ready for a network, and back: resampling, normalisation, caching, patches.

    cache = CaseCache(run_dir / "cache", pipeline)
    cases = [cache.get(c.case_id, partial(load_case, dataset, c)) for c in dataset.cases]
    sampler = PatchSampler(cases, pipeline, seed=pipeline.training.seed)
    images, labels = sampler.batch()          # (B, C, *patch) float32, (B, 1, *patch) int64
    ...
    mask = restore_to_source(prediction, case.geometry, case.source_geometry, order="nearest")

Heavy lifting is in torch (``index_select``/``lerp`` for resampling, ``grid_sample``
for augmentation); nothing here reads files except :class:`CaseCache`.
"""

from medseg.transforms.cache import CACHE_FORMAT, CaseCache, cache_key, file_stamp
from medseg.transforms.normalize import BODY_HU, body_box, nonzero_box, normalize
from medseg.transforms.prepare import PreparedCase, class_locations, prepare_case, prepared_spacing
from medseg.transforms.preprocess import (
    CropToBodyd,
    CropToNonzerod,
    NormalizeChannelsd,
    ResampleToSpacingd,
    preprocessing,
)
from medseg.transforms.resample import resample, restore_to_source, target_grid
from medseg.transforms.sampling import PatchSampler, crop_padded
from medseg.transforms.stream import BatchStream, worker_seed

__all__ = [
    "BODY_HU",
    "CACHE_FORMAT",
    "BatchStream",
    "CaseCache",
    "CropToBodyd",
    "CropToNonzerod",
    "NormalizeChannelsd",
    "PatchSampler",
    "PreparedCase",
    "ResampleToSpacingd",
    "body_box",
    "cache_key",
    "class_locations",
    "crop_padded",
    "file_stamp",
    "nonzero_box",
    "normalize",
    "prepare_case",
    "prepared_spacing",
    "preprocessing",
    "resample",
    "restore_to_source",
    "target_grid",
    "worker_seed",
]
