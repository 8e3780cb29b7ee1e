"""The collision, flag and crop-box formulas on small arrays worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from spuraudit.analysis.collisions import (
    collision_strength,
    collisions,
    confusion_flow,
    flag_order,
    soft_core_mask,
    square_box,
)


def test_collisions_list_each_other_class_where_the_feature_is_top():
    top = {0: [3, 9, 4], 1: [9, 2], 2: [5, 3]}
    importance = {0: {3: 1.0, 9: 0.5, 4: 0.2}, 1: {9: 0.8, 2: 0.1}, 2: {5: 0.4, 3: 0.3}}
    rows = collisions({0: [9, 9], 2: [5]}, top, importance, {(1, 9): "core"})
    assert rows == [{"class": 0, "feature": 9, "other_class": 1, "rank_there": 1, "importance_there": 0.8,
                     "label_there": "core", "core_there": True}]  # 5 is top of no other class; 9 listed once
    rows = collisions({1: [9]}, top, importance, {(0, 9): "spurious"})
    assert [(r["other_class"], r["rank_there"], r["core_there"]) for r in rows] == [(0, 2, False)]


def test_confusion_flow_counts_predictions():
    assert confusion_flow(np.array([1, 1, 0, 3]), 4).tolist() == [1, 2, 0, 1]


def test_collision_strength_is_relative_to_the_other_class_mean():
    acts = np.array([[2.0, 1.0, 7.0], [0.0, 0.5, 7.0]])
    strength = collision_strength(acts, np.array([2.0, 1.0, 0.0]))  # the third feature's mean is 0: left out
    np.testing.assert_allclose(strength, [1.0, 0.25])
    assert collision_strength(acts, np.zeros(3)).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="do not match"):
        collision_strength(acts, np.ones(2))


def test_flag_order_strongest_first_and_the_cut():
    order, flagged = flag_order(np.array([0.2, 0.9, 0.5, 0.49]), cut=0.5)
    assert order.tolist() == [1, 2, 3, 0] and flagged.tolist() == [True, True, False, False]


def test_soft_core_mask_weights_and_peak():
    maps = np.zeros((2, 4, 4))
    maps[0, 0, 0] = 1.0
    maps[1, 3, 3] = 1.0
    mask = soft_core_mask(maps, np.array([3.0, 1.0]))
    assert mask[0, 0] == 1.0 and mask[3, 3] == pytest.approx(1 / 3)
    assert soft_core_mask(maps, np.array([-1.0, 0.0])).max() == 0.0  # negative weights count as zero


def test_square_box_extends_the_shorter_side_and_stays_inside():
    mask = np.zeros((28, 28))
    mask[10:14, 2:20] = 1.0  # 4 tall, 18 wide
    top, left, h, w = square_box(mask)
    assert (h, w) == (18, 18) and left == 2 and top == 3  # centred on rows 10-13: 12 - 9
    mask = np.zeros((28, 28))
    mask[0:2, 0:10] = 1.0  # at the top edge: the square is shifted down, not cut
    assert square_box(mask) == (0, 0, 10, 10)
    assert square_box(np.zeros((5, 7))) == (0, 0, 5, 7)  # nothing fires: the whole image
    wide = np.zeros((6, 20))
    wide[2, :] = 1.0
    assert square_box(wide) == (0, 0, 6, 20)  # wider than the image is tall: cut to the image
