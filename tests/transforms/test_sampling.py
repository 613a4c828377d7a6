"""PatchSampler: shapes, foreground oversampling, determinism, augmentation keeps labels, padding."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from medseg.transforms import PatchSampler, PreparedCase, crop_padded, prepare_case
from medseg.transforms.augment import RandAffineMmd, warp
from tests.transforms.helpers import make_pipeline, phantom

EVERYTHING = {"spatial_probability": 1.0, "intensity_probability": 1.0}


@pytest.fixture(scope="module")
def cases():
    pipeline = make_pipeline()
    return [prepare_case(*phantom(seed), pipeline, case_id=f"p{seed}") for seed in (1, 2)]


@pytest.fixture(scope="module")
def kidney_cases(cases):
    """The phantoms with only their kidneys labelled: a small organ."""
    return [
        dataclasses.replace(c, label=np.where(c.label == 3, 3, 0).astype(np.uint8), class_locations=None) for c in cases
    ]


def test_3d_batches(cases):
    images, labels = PatchSampler(cases, make_pipeline(patch=(40, 32, 16)), seed=0).batch()
    assert images.shape == (2, 1, 40, 32, 16) and images.dtype == torch.float32
    assert labels.shape == (2, 1, 40, 32, 16) and labels.dtype == torch.int64
    assert images.is_contiguous() and labels.is_contiguous()


def test_2d_batches(cases):
    pipeline = make_pipeline(dimensions=2, patch=(48, 40), batch_size=5)
    images, labels = PatchSampler(cases, pipeline, seed=0).batch()
    assert images.shape == (5, 1, 48, 40) and images.dtype == torch.float32
    assert labels.shape == (5, 1, 48, 40) and labels.dtype == torch.int64


def test_plain_patches_are_crops_of_the_case(cases):
    sampler = PatchSampler(cases[:1], make_pipeline(patch=(40, 32, 16)), seed=3, augment=False)
    images, labels = sampler.batch()
    case = cases[0]
    for image, label in zip(images.numpy(), labels.numpy()):
        # find where the patch came from by its labels and image together
        matches = [
            (i, j, k)
            for i in range(case.image.shape[1] - 39)
            for j in range(case.image.shape[2] - 31)
            for k in range(case.image.shape[3] - 15)
            if case.image[0, i, j, k] == image[0, 0, 0, 0]
            and np.array_equal(case.image[:, i : i + 40, j : j + 32, k : k + 16], image)
        ]
        assert len(matches) >= 1
        i, j, k = matches[0]
        np.testing.assert_array_equal(case.label[:, i : i + 40, j : j + 32, k : k + 16], label)


def contains_foreground(labels: torch.Tensor) -> np.ndarray:
    return (labels.flatten(1) > 0).any(dim=1).numpy()


def foreground_share(cases, oversampling: float, batches: int = 60) -> tuple[float, float]:
    pipeline = make_pipeline(patch=(16, 16, 8), batch_size=4, foreground_oversampling=oversampling)
    sampler = PatchSampler(cases, pipeline, seed=11)
    hits = np.concatenate([contains_foreground(sampler.batch()[1]) for _ in range(batches)])
    return float(hits.mean()), sampler.foreground_samples / sampler.samples


def test_foreground_oversampling_finds_a_small_organ(kidney_cases):
    without, centred_without = foreground_share(kidney_cases, 0.0)
    with_half, centred_half = foreground_share(kidney_cases, 0.5)
    always, centred_always = foreground_share(kidney_cases, 1.0)
    assert centred_without == 0.0 and centred_always == 1.0
    assert abs(centred_half - 0.5) < 0.1
    assert without < 0.3  # the kidneys are small: random patches mostly miss them
    assert with_half >= 0.5 - 0.05 and with_half > without + 0.2
    assert always > 0.95  # a rotated/zoomed patch may, rarely, turn its centre voxel out of view


def test_an_odd_share_is_exact_on_average(cases):
    pipeline = make_pipeline(patch=(16, 16, 8), batch_size=2, foreground_oversampling=0.33)
    sampler = PatchSampler(cases, pipeline, seed=5, augment=False)
    for _ in range(300):
        sampler.batch()
    assert sampler.foreground_samples / sampler.samples == pytest.approx(0.33, abs=0.05)


def test_the_same_seed_gives_the_same_batches(cases):
    pipeline = make_pipeline(patch=(40, 32, 16), augmentation=EVERYTHING)
    first, second, other = (PatchSampler(cases, pipeline, seed=s) for s in (7, 7, 8))
    for _ in range(3):
        a, b, c = first.batch(), second.batch(), other.batch()
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert not torch.equal(a[0], c[0])


def test_augmented_labels_keep_the_label_set(cases):
    for dimensions, patch in ((3, (40, 32, 16)), (2, (48, 40))):
        pipeline = make_pipeline(dimensions=dimensions, patch=patch, augmentation=EVERYTHING, batch_size=4)
        sampler = PatchSampler(cases, pipeline, seed=1)
        values = set()
        for _ in range(5):
            images, labels = sampler.batch()
            assert torch.isfinite(images).all()
            values |= set(torch.unique(labels).tolist())
        assert values <= {0, 1, 2, 3} and len(values) > 1


def test_cases_smaller_than_the_patch_are_padded_with_zeros():
    small = prepare_case(*phantom(3), make_pipeline(spacing=(8.0, 8.0, 10.0)), case_id="small")
    shape = small.image.shape[1:]
    patch = (shape[0] + 9, shape[1] + 4, shape[2] + 3)
    images, labels = PatchSampler([small], make_pipeline(patch=patch, batch_size=3), seed=0, augment=False).batch()
    assert images.shape == (3, 1, *patch)
    for image, label in zip(images.numpy(), labels.numpy()):
        nonzero = np.argwhere(image[0] != 0)  # normalised CT is nowhere exactly 0 (air is -4.4)
        start = nonzero.min(axis=0)
        assert np.all(nonzero.max(axis=0) - start + 1 == shape)
        window = (slice(None), *(slice(s, s + n) for s, n in zip(start, shape)))
        np.testing.assert_array_equal(image[window], small.image)
        np.testing.assert_array_equal(label[window], small.label)
        assert np.count_nonzero(image) == np.count_nonzero(small.image)
        assert np.count_nonzero(label) == np.count_nonzero(small.label)


def test_crop_padded_reads_only_the_overlap():
    array = np.arange(2 * 5 * 4 * 3).reshape(2, 5, 4, 3)
    out = crop_padded(array, (-2, 1, 1), (4, 4, 3))
    assert out.shape == (2, 4, 4, 3)
    np.testing.assert_array_equal(out[:, 2:, :3, :2], array[:, :2, 1:, 1:])
    assert np.all(out[:, :2] == 0) and np.all(out[:, :, 3:] == 0) and np.all(out[:, :, :, 2:] == 0)
    assert np.all(crop_padded(array, (7, 0, 0), (2, 2, 2)) == 0)


def test_warp_turns_the_patch_about_its_centre():
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.normal(size=(2, 30, 25, 20)).astype(np.float32))
    label = torch.from_numpy(rng.integers(0, 4, size=(1, 30, 25, 20)).astype(np.uint8))
    quarter = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # i <- -j, j <- i
    centre = np.array([14.0, 12.0, 9.0])
    patch = (11, 13, 9)
    warped = warp(image, quarter, centre, patch)
    warped_label = warp(label, quarter, centre, patch, mode="nearest")
    assert warped_label.dtype == torch.uint8
    for x in [(0, 0, 0), (3, 4, 5), (10, 12, 8), (5, 6, 4)]:
        source = (centre + quarter @ (np.array(x) - (np.array(patch) - 1) / 2)).astype(int)
        assert warped[1][x].item() == pytest.approx(image[1][tuple(source)].item(), abs=1e-5)
        assert warped_label[0][x] == label[0][tuple(source)]
    same, same_label = warp(image, np.eye(3), centre, patch), warp(label, np.eye(3), centre, patch, mode="nearest")
    np.testing.assert_allclose(same.numpy(), image[:, 9:20, 6:19, 5:14].numpy(), atol=1e-5)
    assert torch.equal(same_label, label[:, 9:20, 6:19, 5:14])


def test_rotations_are_rotations_in_millimetres():
    spatial = RandAffineMmd(prob=1.0, rotation_degrees=30, scale=(1.0, 1.0))
    spatial.set_random_state(seed=4)
    spatial.randomize((1.0, 1.0, 4.0))
    physical = np.diag([1.0, 1.0, 4.0]) @ spatial.matrix @ np.diag([1.0, 1.0, 0.25])
    np.testing.assert_allclose(physical @ physical.T, np.eye(3), atol=1e-12)
    assert not np.allclose(physical, np.eye(3))
    never = RandAffineMmd(prob=0.0, rotation_degrees=30)
    never.randomize((1.0, 1.0, 4.0))
    assert never.matrix is None


def test_rand_affine_mmd_works_on_its_own_as_a_monai_transform():
    """In a user's Compose it warps the patch it is given about its centre; labels keep their values."""
    from monai.transforms import Compose

    rng = np.random.default_rng(0)
    item = {
        "image": torch.from_numpy(rng.normal(size=(1, 20, 20, 8)).astype(np.float32)),
        "label": torch.from_numpy(rng.integers(0, 3, size=(1, 20, 20, 8)).astype(np.uint8)),
        "spacing": (1.0, 1.0, 3.0),
    }
    out = Compose([RandAffineMmd(prob=1.0, rotation_degrees=20)]).set_random_state(seed=1)(dict(item))
    assert out["image"].shape == item["image"].shape and not torch.allclose(out["image"], item["image"])
    assert set(torch.unique(out["label"]).tolist()) <= {0, 1, 2} and out["label"].dtype == torch.uint8
    with pytest.raises(ValueError, match="rotation_degrees"):
        RandAffineMmd(rotation_degrees=200)


def test_cases_without_labels_are_refused(cases):
    unlabelled = PreparedCase("x", cases[0].image, None, cases[0].geometry)
    with pytest.raises(ValueError, match="label maps"):
        PatchSampler([unlabelled], make_pipeline(), seed=0)
