"""Validation scores, and the post-processing chosen from them (nnU-Net's rule)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medseg.training.validation import dice_per_label, largest_component_dice, largest_component_labels


def test_an_island_far_from_the_organ_costs_dice_that_keeping_the_largest_component_wins_back():
    truth = np.zeros((20, 20, 10), dtype=np.uint8)
    truth[2:10, 2:10, 2:8] = 1
    truth[14:17, 2:5, 2:5] = 2
    truth[14:17, 12:15, 2:5] = 2  # two true pieces: the largest component would lose one
    prediction = truth.copy()
    prediction[15:19, 15:19, 6:9] = 1  # a stray island of label 1
    before = dice_per_label(prediction, truth, [1, 2, 3])
    after = largest_component_dice(prediction, truth, [1, 2, 3])
    assert after[0] == 1.0 > before[0]
    assert after[1] < before[1] == 1.0
    assert math.isnan(before[2]) and math.isnan(after[2])
    assert np.array_equal(prediction[15:19, 15:19, 6:9], np.ones((4, 4, 3)))  # scored on a copy
    chosen, reason = largest_component_labels([1, 2, 3], before, after)
    assert chosen == [1]
    assert "1: " in reason and "2: 1.0000 -> 0.6667" in reason and "3:" not in reason


@pytest.mark.parametrize(("before", "after", "chosen"), [(0.9, 0.9, []), (0.9, 0.90001, [1]), (0.9, 0.8, [])])
def test_only_a_strict_gain_chooses_the_step(before, after, chosen):
    assert largest_component_labels([1], [before], [after])[0] == chosen
