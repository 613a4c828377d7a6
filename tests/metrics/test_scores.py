"""Per-label metrics: analytic values on shifted boxes at anisotropic spacing, MONAI agreement, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from medseg.errors import GeometryError, InputError
from medseg.geometry import Geometry
from medseg.metrics import LabelStatus, score_labels
from medseg.metrics.overlap import overlap_counts
from medseg.metrics.surface import surface_distances, surface_mask
from medseg.volume import Volume, VolumeKind
from tests import factories


def _labels(array: np.ndarray, geometry: Geometry) -> Volume:
    return Volume(array.astype(np.uint8), geometry, kind=VolumeKind.LABEL)


def _shifted_boxes(sizes, axis, shift, shape=(30, 28, 26), start=(5, 7, 6)):
    """Two boxes of ``sizes`` voxels, the prediction ``shift`` voxels further along ``axis``."""
    ref, pred = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    box = tuple(slice(s, s + n) for s, n in zip(start, sizes))
    ref[box] = 1
    moved = list(start)
    moved[axis] += shift
    pred[tuple(slice(s, s + n) for s, n in zip(moved, sizes))] = 1
    return pred, ref


def _expected(sizes, axis, shift, spacing):
    """Surface-voxel distances of two boxes shifted by ``shift`` voxels along ``axis``, by hand.

    With ``shift * spacing[axis]`` no larger than the other spacings and ``2 * shift < n``,
    each direction has the same distances: the far face and the inner part of the near face
    lie ``shift`` steps away; the side voxels that stick out lie 1 .. shift-1 steps away (one
    ring of ``ring`` voxels per step); every other surface voxel lies on the other surface.
    """
    n = sizes[axis]
    m, p = (sizes[a] for a in range(3) if a != axis)
    step = spacing[axis]
    assert shift * step <= min(spacing[a] for a in range(3) if a != axis) and 2 * shift < n
    ring = m * p - (m - 2) * (p - 2)
    total = n * m * p - (n - 2) * (m - 2) * (p - 2)
    far = (m - 2) * (p - 2) + m * p
    distances = np.zeros(total)
    distances[:far] = shift * step
    for k in range(1, shift):
        distances[far + (k - 1) * ring : far + k * ring] = k * step
    assert far / total > 0.05  # so the 95th percentile is the far distance
    return {
        "dice": (n - shift) / n,
        "iou": (n - shift) / (n + shift),
        "hd95_mm": shift * step,
        "assd_mm": distances.mean(),
        "nsd_below": 1 - far / total,  # tolerance just under the far distance
        "distances": distances,
    }


CASES = [
    # sizes, axis, shift, spacing: shifts along each axis, each with its own spacing
    ((12, 8, 6), 0, 3, (0.5, 2.0, 3.0)),
    ((6, 14, 5), 1, 2, (1.6, 0.4, 1.1)),
    ((7, 9, 10), 2, 2, (2.0, 2.5, 0.6)),
]


@pytest.mark.parametrize("sizes, axis, shift, spacing", CASES)
@pytest.mark.parametrize("oblique", [False, True], ids=["axial", "oblique"])
def test_shifted_boxes_match_hand_computed_values(sizes, axis, shift, spacing, oblique):
    pred, ref = _shifted_boxes(sizes, axis, shift)
    direction = factories.rotation("z", 31) @ factories.rotation("x", -17) if oblique else None
    geometry = Geometry.from_spacing(pred.shape, spacing, (-40.5, 12.0, 33.3), direction)
    (scores,) = score_labels(_labels(pred, geometry), _labels(ref, geometry), tolerance_mm=1.0)
    expected = _expected(sizes, axis, shift, spacing)
    assert scores.status is LabelStatus.OK
    assert scores.dice == pytest.approx(expected["dice"], abs=1e-12)
    assert scores.iou == pytest.approx(expected["iou"], abs=1e-12)
    assert scores.hd95_mm == pytest.approx(expected["hd95_mm"], abs=1e-9)
    assert scores.assd_mm == pytest.approx(expected["assd_mm"], abs=1e-9)
    assert scores.volume_difference_ml == pytest.approx(0.0, abs=1e-12)
    assert scores.reference_ml == pytest.approx(np.prod(sizes) * np.prod(spacing) / 1000)
    far = shift * spacing[axis]
    distances = surface_distances(pred.astype(bool), ref.astype(bool), spacing=geometry.affine[:3, :3])
    assert distances.surface_dice(far - 1e-6) == pytest.approx(expected["nsd_below"], abs=1e-12)
    assert distances.surface_dice(far + 1e-6) == 1.0
    np.testing.assert_allclose(np.sort(distances.prediction_to_reference), np.sort(expected["distances"]), atol=1e-9)
    np.testing.assert_allclose(np.sort(distances.reference_to_prediction), np.sort(expected["distances"]), atol=1e-9)


def test_spacing_belongs_to_its_axis():
    """The same voxel shift along i, then along k, is as far as that axis's spacing says."""
    geometry = Geometry.from_spacing((30, 28, 26), (0.5, 1.0, 4.0))
    along_i = score_labels(*(_labels(a, geometry) for a in _shifted_boxes((12, 8, 6), 0, 1)))[0]
    along_k = score_labels(*(_labels(a, geometry) for a in _shifted_boxes((12, 8, 6), 2, 1)))[0]
    assert along_i.hd95_mm == pytest.approx(0.5)
    assert along_k.hd95_mm == pytest.approx(4.0)


def _blobs(seed: int, shape=(34, 29, 17), labels=3) -> np.ndarray:
    """Smooth random blobs, some touching the array's border."""
    rng = np.random.default_rng(seed)
    fields = ndimage.gaussian_filter(rng.random((labels + 1, *shape)), (0, 2.5, 2.5, 1.5))
    return np.argmax(fields, axis=0).astype(np.uint8)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI's own deprecation notice
def test_agrees_with_monai_on_random_blobs_with_anisotropic_spacing():
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice
    from monai.networks.utils import one_hot

    spacing = (0.8, 1.7, 3.1)
    geometry = Geometry.from_spacing((34, 29, 17), spacing, (10.0, -20.0, 5.0))
    pred, ref = _blobs(1), _blobs(2)
    scores = score_labels(_labels(pred, geometry), _labels(ref, geometry), tolerance_mm=2.5)
    assert [s.label for s in scores] == [1, 2, 3]

    def hot(array):
        return one_hot(torch.from_numpy(array.astype(np.int64))[None, None], num_classes=4)

    hd95 = compute_hausdorff_distance(hot(pred), hot(ref), percentile=95, spacing=spacing)[0]
    assd = compute_average_surface_distance(hot(pred), hot(ref), symmetric=True, spacing=spacing)[0]
    nsd = compute_surface_dice(hot(pred), hot(ref), [2.5] * 3, spacing=spacing)[0]
    for s in scores:
        assert s.hd95_mm == pytest.approx(float(hd95[s.label - 1]), rel=1e-5)
        assert s.assd_mm == pytest.approx(float(assd[s.label - 1]), rel=1e-5)
        assert s.nsd == pytest.approx(float(nsd[s.label - 1]), rel=1e-5)
        p, r = pred == s.label, ref == s.label
        assert s.dice == pytest.approx(2 * (p & r).sum() / (p.sum() + r.sum()))
        assert s.prediction_ml == pytest.approx(p.sum() * np.prod(spacing) / 1000)


def test_a_small_object_in_a_large_scan_scores_as_in_a_tight_box():
    spacing = (0.7, 0.7, 2.0)
    small_p, small_r = _blobs(3, (20, 18, 9), 1), _blobs(4, (20, 18, 9), 1)
    large_p, large_r = np.zeros((160, 150, 70), np.uint8), np.zeros((160, 150, 70), np.uint8)
    large_p[90:110, 40:58, 30:39], large_r[90:110, 40:58, 30:39] = small_p, small_r
    tight = score_labels(*(_labels(a, Geometry.from_spacing(a.shape, spacing)) for a in (small_p, small_r)))
    large = score_labels(*(_labels(a, Geometry.from_spacing(a.shape, spacing)) for a in (large_p, large_r)))
    # the tight box's border counts as surface; padding by one voxel gives the same surfaces
    padded = score_labels(
        *(_labels(np.pad(a, 1), Geometry.from_spacing(np.add(a.shape, 2), spacing)) for a in (small_p, small_r))
    )
    assert [s.as_dict() for s in large] == [s.as_dict() for s in padded]
    assert tight[0].dice == large[0].dice


def test_edge_cases_give_flags_and_nan_not_infinity():
    geometry = Geometry.from_spacing((12, 11, 10), (1.0, 1.5, 2.0))
    pred, ref = np.zeros(geometry.shape, np.uint8), np.zeros(geometry.shape, np.uint8)
    ref[2:5, 2:5, 2:5] = 1  # missed
    pred[7:9, 7:9, 6:8] = 2  # spurious
    pred[1:4, 6:9, 1:3] = ref[1:4, 6:9, 1:3] = 3  # perfect
    by_label = {
        s.label: s
        for s in score_labels(_labels(pred, geometry), _labels(ref, geometry), labels=[1, 2, 3, 4], tolerance_mm=2.0)
    }
    missed, spurious, perfect, absent = (by_label[n] for n in (1, 2, 3, 4))
    assert missed.status is LabelStatus.MISSED and missed.dice == 0 and missed.iou == 0 and missed.nsd == 0
    assert math.isnan(missed.hd95_mm) and math.isnan(missed.assd_mm)
    assert missed.volume_difference_ml == pytest.approx(-27 * 3.0 / 1000) and missed.volume_difference_pct == -100
    assert spurious.status is LabelStatus.SPURIOUS and spurious.dice == 0 and spurious.nsd == 0
    assert math.isnan(spurious.hd95_mm) and math.isnan(spurious.volume_difference_pct)
    assert spurious.volume_difference_ml == pytest.approx(8 * 3.0 / 1000)
    assert perfect.status is LabelStatus.OK and perfect.dice == 1 and perfect.hd95_mm == 0 and perfect.nsd == 1
    assert absent.status is LabelStatus.ABSENT and absent.volume_difference_ml == 0
    assert all(math.isnan(getattr(absent, m)) for m in ("dice", "iou", "hd95_mm", "assd_mm", "nsd"))
    for s in by_label.values():
        assert not any(isinstance(v, float) and math.isinf(v) for v in s.as_dict().values())


def test_default_labels_are_those_in_either_map():
    geometry = Geometry.from_spacing((8, 8, 8), (1.0, 1.0, 1.0))
    pred, ref = np.zeros(geometry.shape, np.uint8), np.zeros(geometry.shape, np.uint8)
    pred[1, 1, 1], ref[5, 5, 5] = 4, 2
    scores = score_labels(_labels(pred, geometry), _labels(ref, geometry))
    assert [(s.label, s.status) for s in scores] == [(2, LabelStatus.MISSED), (4, LabelStatus.SPURIOUS)]


def test_different_grids_and_bad_inputs_are_refused():
    geometry = factories.axial_geometry()
    labels = _labels(np.zeros(geometry.shape, np.uint8), geometry)
    moved_grid = Geometry.from_spacing(geometry.shape, geometry.spacing, (0.0, 0.0, 0.5))
    moved = labels.replace(geometry=moved_grid, path="p.nii")
    with pytest.raises(GeometryError, match=r"p\.nii and .* mm apart"):
        score_labels(moved, labels)
    with pytest.raises(InputError, match="start at 1"):
        score_labels(labels, labels, labels=[0])
    image = Volume(np.zeros(geometry.shape, np.float32), geometry)
    with pytest.raises(InputError, match="label map"):
        score_labels(image, labels)


def test_surface_and_counts_primitives():
    mask = np.zeros((5, 5, 5), bool)
    mask[1:4, 1:4, 1:4] = True
    assert surface_mask(mask).sum() == 26  # a 3x3x3 cube less its centre
    full = np.ones((3, 3, 3), bool)
    assert surface_mask(full).sum() == 26  # the array's border counts as surface
    counts = overlap_counts(mask, np.ones_like(mask))
    assert (counts.prediction, counts.reference, counts.intersection, counts.union) == (27, 125, 27, 125)
    assert counts.dice == pytest.approx(54 / 152) and counts.iou == pytest.approx(27 / 125)
    with pytest.raises(GeometryError):
        surface_distances(mask, full)
    with pytest.raises(GeometryError, match="spacing"):
        surface_distances(mask, mask, spacing=(1.0, 0.0, 1.0))
