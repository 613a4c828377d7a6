"""Post-processing: largest component, small islands (in mL at anisotropic spacing), holes."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.config.schema import Postprocessing
from medseg.errors import InputError
from medseg.inference.postprocess import fill_holes, keep_largest_component, postprocess, remove_small_islands
from tests import factories


def blank(shape=(30, 24, 18)) -> np.ndarray:
    return np.zeros(shape, dtype=np.uint8)


def test_keep_largest_component_per_label():
    labels = blank()
    labels[2:6, 2:6, 2:6] = 1  # 64 voxels
    labels[20:23, 2:5, 2:5] = 1  # 27 voxels
    labels[10:12, 10:12, 10:12] = 2  # another label: untouched
    labels[25, 20, 15] = 2
    keep_largest_component(labels, 1)
    assert (labels == 1).sum() == 64 and labels[2:6, 2:6, 2:6].all()
    assert (labels == 2).sum() == 9


def test_diagonal_neighbours_belong_to_one_component():
    labels = blank()
    labels[5:8, 5:8, 5:8] = 1
    labels[8, 8, 8] = 1  # touches the cube at a corner only
    labels[20, 20, 10] = 1
    keep_largest_component(labels, 1)
    assert labels[8, 8, 8] == 1 and labels[20, 20, 10] == 0


def test_small_islands_are_measured_in_millilitres_at_anisotropic_spacing():
    geometry = factories.oblique_geometry(shape=(30, 24, 18), spacing=(2.0, 2.5, 4.0))
    voxel_ml = geometry.voxel_volume_ml
    assert voxel_ml == pytest.approx(0.02)  # 2 x 2.5 x 4 mm = 20 mm3, at any orientation
    labels = blank()
    labels[1:5, 1:3, 1:6] = 3  # 40 voxels = 0.8 mL: removed
    labels[10:15, 10:12, 1:6] = 3  # 50 voxels = 1.0 mL: kept (not smaller than 1 mL)
    labels[20:26, 15:17, 1:6] = 3  # 60 voxels = 1.2 mL: kept
    labels[1:3, 20:22, 10:12] = 1  # 8 voxels of another label: untouched
    remove_small_islands(labels, 3, min_ml=1.0, voxel_volume_ml=voxel_ml)
    assert (labels == 3).sum() == 110 and not labels[1:5, 1:3, 1:6].any()
    assert (labels == 1).sum() == 8
    # At half the voxel volume the 60-voxel island is 0.6 mL, and goes too.
    remove_small_islands(labels, 3, min_ml=1.0, voxel_volume_ml=voxel_ml / 2)
    assert not (labels == 3).any()


def test_fill_holes_fills_enclosed_background_only():
    labels = blank()
    labels[5:15, 5:15, 5:15] = 1
    labels[7:9, 7:9, 7:9] = 0  # an enclosed cavity: filled
    labels[11, 11, 11] = 2  # another label inside: kept
    labels[10:15, 12, 12] = 0  # a tunnel open to the outside: not a hole
    fill_holes(labels, 1)
    assert labels[7:9, 7:9, 7:9].all() and (labels[7:9, 7:9, 7:9] == 1).all()
    assert labels[11, 11, 11] == 2
    assert not labels[10:15, 12, 12].any()


def test_a_hole_sealed_on_every_face_is_filled_even_if_corners_touch_outside():
    labels = blank()
    labels[4:7, 4:7, 4:7] = 1
    labels[5, 5, 5] = 0
    for corner in [(4, 4, 4), (6, 6, 6)]:  # corners of the shell open, faces closed
        labels[corner] = 0
    fill_holes(labels, 1)
    assert labels[5, 5, 5] == 1 and labels[4, 4, 4] == 0


def test_postprocess_applies_the_pipeline_settings_per_label():
    settings = Postprocessing(largest_component=[1], min_island_ml={2: 0.5}, fill_holes=[2])
    labels = blank()
    labels[2:8, 2:8, 2:8] = 1
    labels[12, 12, 12] = 1  # a second component of 1: removed
    labels[15:21, 2:8, 2:8] = 2
    labels[17, 4, 4] = 0  # a hole in 2: filled
    labels[25:27, 20:22, 15:17] = 2  # 8 voxels x 0.05 mL = 0.4 mL: removed
    labels[2:4, 20:22, 2:4] = 3  # not listed: untouched, even in two pieces
    labels[6, 23, 17] = 3
    out = postprocess(labels, settings, voxel_volume_ml=0.05)
    assert out is labels
    assert (labels == 1).sum() == 216 and labels[12, 12, 12] == 0
    assert (labels == 2).sum() == 216 and labels[17, 4, 4] == 2
    assert (labels == 3).sum() == 9


def test_nothing_listed_changes_nothing_and_bad_input_is_refused():
    labels = blank()
    labels[3, 3, 3] = 1
    before = labels.copy()
    postprocess(labels, Postprocessing(), voxel_volume_ml=1.0)
    np.testing.assert_array_equal(labels, before)
    with pytest.raises(InputError):
        postprocess(labels.astype(np.float32), Postprocessing(fill_holes=[1]), voxel_volume_ml=1.0)
    with pytest.raises(InputError):
        remove_small_islands(labels, 1, min_ml=1.0, voxel_volume_ml=0.0)
