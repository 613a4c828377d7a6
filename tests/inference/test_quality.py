"""Quality signals of a predicted label map: pieces, cut edges, empty labels, confidence, volumes."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.inference.quality import assess_case, batch_flags
from medseg.volume import Segment, VolumeKind
from tests import factories

SEGMENTS = (Segment(1, "liver"), Segment(2, "kidney"), Segment(3, "spleen"))
GEOMETRY = factories.axial_geometry((40, 36, 20), spacing=(2.0, 2.0, 2.5))  # 10 uL voxels
VOXEL_ML = 2.0 * 2.0 * 2.5 / 1000


def label_map(array: np.ndarray, geometry=GEOMETRY):
    image = factories.ramp_volume(geometry)
    return image.with_array(array.astype(np.uint8), kind=VolumeKind.LABEL, segments=SEGMENTS)


def organs() -> np.ndarray:
    """A liver block in the middle, two kidney blocks (one label, two pieces), a spleen block."""
    array = np.zeros(GEOMETRY.shape, dtype=np.uint8)
    array[5:20, 5:20, 5:15] = 1
    array[25:30, 5:10, 6:12] = 2
    array[25:30, 25:30, 6:12] = 2
    array[30:36, 14:20, 8:14] = 3
    return array


FINGERPRINT = {
    "num_cases": 10,
    "label_cases": {"1": 10, "2": 10, "3": 5},
    "label_volumes_ml": {"1": [20.0, 30.0], "2": [2.5, 4.0], "3": [1.5, 3.0]},
    "label_pieces": {"1": [1, 1], "2": [2, 2], "3": [1, 1]},
}


def test_a_good_case_raises_no_flag_and_measures_each_label():
    quality = assess_case(label_map(organs()), fingerprint=FINGERPRINT)

    assert quality.flags == ()
    liver, kidney = quality.labels["liver"], quality.labels["kidney"]
    assert liver.volume_ml == pytest.approx(15 * 15 * 10 * VOXEL_ML) and liver.components == 1
    assert kidney.components == 2 and kidney.largest_share == pytest.approx(0.5) and kidney.expected_share == 1.0
    assert quality.volumes_ml == {"liver": pytest.approx(22.5), "kidney": pytest.approx(3.0), "spleen": pytest.approx(2.2)}
    assert liver.touches == () and liver.confidence is None  # no confidence map given


def test_pieces_beyond_what_training_had_are_flagged():
    array = organs()
    array[30:36, 28:34, 2:6] = 3  # a second spleen piece, 40% of it
    array[0:3, 30:33, 16:19] = 2  # a third kidney piece (training had two)
    quality = assess_case(label_map(array), fingerprint=FINGERPRINT)
    assert "spleen: 2 pieces, largest 60%" in quality.flags
    assert not any(f.startswith("kidney: 3 pieces") for f in quality.flags)  # the third holds < 10%: fine
    array[0:5, 28:34, 14:20] = 2  # now big enough to matter
    assert any(f.startswith("kidney: 3 pieces") for f in assess_case(label_map(array), fingerprint=FINGERPRINT).flags)
    # without training counts one piece is expected: the kidney pair is flagged
    assert "kidney: 2 pieces, largest 50%" in assess_case(label_map(organs())).flags


def test_a_speck_is_not_a_piece():
    array = organs()
    array[0, 0, 0] = 1
    liver = assess_case(label_map(array), fingerprint=FINGERPRINT).labels["liver"]
    assert liver.components == 1 and liver.largest_share < 1.0


def test_cut_edges_are_named_in_patient_terms():
    array = organs()
    array[5:20, 5:20, 5:20] = 1  # the liver reaches the last slice
    quality = assess_case(label_map(array), fingerprint=FINGERPRINT)
    assert quality.labels["liver"].touches == ("upper",)  # head first: the last slice is the top
    assert "liver touches the upper edge of the scan" in quality.flags
    feet_first = factories.axial_geometry((40, 36, 20), spacing=(2.0, 2.0, 2.5), feet_first=True)
    assert assess_case(label_map(array, feet_first)).labels["liver"].touches == ("lower",)
    array[0:3, 5:20, 5:10] = 1  # and the first column: the right side (LPS: +x is left)
    assert set(assess_case(label_map(array)).labels["liver"].touches) == {"upper", "right"}


def test_one_voxel_on_an_edge_is_no_cut():
    array = organs()
    array[5:20, 5:20, 15:20][0, 0, :] = 1  # a one-voxel thread to the top slice, 5 voxels on no face
    assert assess_case(label_map(array)).labels["liver"].touches == ()


def test_empty_labels_are_flagged_when_training_almost_always_had_them():
    array = organs()
    array[array >= 2] = 0
    flags = assess_case(label_map(array), fingerprint=FINGERPRINT).flags
    assert "kidney: not found (in 100% of the training scans)" in flags
    assert not any(f.startswith("spleen") for f in flags)  # in only half of the training scans
    assert "spleen: not found" in assess_case(label_map(array)).flags
    assert assess_case(label_map(array)).labels["spleen"].empty


def test_volumes_against_training():
    array = organs()
    array[array == 1] = 0
    array[2:38, 2:34, 1:19] = np.where(array[2:38, 2:34, 1:19] == 0, 1, array[2:38, 2:34, 1:19])  # a huge liver
    flags = assess_case(label_map(array), fingerprint=FINGERPRINT).flags
    assert any(f.startswith("liver: ") and "above anything in training (20-30 mL)" in f for f in flags)
    # an old fingerprint knows only totals: the mean per scan (voxels x mean voxel volume / scans) stands in
    old = {"num_cases": 2, "label_cases": {"1": 2}, "label_voxels": {"1": 2000}, "spacings": [[2.0, 2.0, 2.5]] * 2}
    assert any("far above the training mean (10 mL)" in f for f in assess_case(label_map(array), fingerprint=old).flags)
    assert not any(f.startswith("liver") for f in assess_case(label_map(organs()), fingerprint=old).flags)


def test_confidence_inside_and_on_the_boundary():
    array = organs()
    confidence = np.full(array.shape, 255, dtype=np.uint8)
    liver = array == 1
    confidence[liver] = 204  # 0.8 inside
    confidence[5, 5:20, 5:15] = 102  # 0.4 on one face of the liver
    quality = assess_case(label_map(array), confidence, fingerprint=FINGERPRINT)
    boundary = 2 * (15 * 15 + 15 * 10 + 15 * 10) - 4 * (15 + 15 + 10) + 8  # surface voxels of a 15 x 15 x 10 block
    low = 15 * 10
    expected_boundary = ((boundary - low) * 0.8 + low * 0.4) / boundary
    expected_inside = (liver.sum() * 0.8 - low * 0.4) / liver.sum()
    assert quality.labels["liver"].boundary_confidence == pytest.approx(expected_boundary, abs=1e-3)
    assert quality.labels["liver"].confidence == pytest.approx(expected_inside, abs=1e-3)
    assert quality.labels["kidney"].confidence == 1.0
    assert quality.confidence == pytest.approx(
        (liver.sum() * expected_inside + (array > 1).sum()) / (array > 0).sum(), abs=1e-3
    )
    confidence[liver] = 150
    assert "liver: low confidence (0.59)" in assess_case(label_map(array), confidence).flags


def test_batch_flags_by_robust_z_score():
    volumes = {f"case{i}": {"liver": 1500.0 + 20 * i, "spleen": 200.0} for i in range(8)}
    volumes["big"] = {"liver": 3400.0, "spleen": 205.0}
    volumes["small"] = {"liver": 1510.0, "spleen": 20.0}
    flags = batch_flags(volumes)
    assert flags["big"] == ["liver: 3400 mL, far above this batch (median 1570 mL)"]
    assert flags["small"] == ["spleen: 20 mL, far below this batch (median 200 mL)"]
    assert all(flags[f"case{i}"] == [] for i in range(8))
    assert batch_flags({k: volumes[k] for k in ("big", "case1", "case2", "case3")}) == dict.fromkeys(
        ("big", "case1", "case2", "case3"), []
    )  # too few cases to judge
