"""Box geometry: clipping, widening to a model's crop aspect, IoU, eye-line roll."""

from __future__ import annotations

import pytest

from common.geometry import Detection, clip_box, eye_roll_degrees, iou, widen_box


def test_clip_box_contract():
    assert clip_box(-5.2, -1, 30.1, 20, 40, 30) == (0, 0, 31, 20)   # rounded outwards
    assert clip_box(10, 10, 10, 20, 40, 30) is None                 # zero area
    assert clip_box(35, 5, 80, 25, 40, 30, min_face_px=12) is None  # 5 px after clipping
    assert clip_box(50, 50, 60, 60, 40, 30) is None                 # outside
    assert clip_box(float("inf"), 0, 10, 10, 40, 30) is None
    assert clip_box(float("nan"), 0, 10, 10, 40, 30) is None


def test_widen_box_to_the_training_aspect():
    # a 40 x 60 box (w/h 0.67) widened to 0.9: 54 px wide about the same centre
    assert widen_box((100, 50, 140, 110), 0.9, 640) == (93, 50, 147, 110)
    # clipped at the frame's edges, never taller, never narrower
    assert widen_box((0, 0, 40, 60), 0.9, 45) == (0, 0, 45, 60)
    assert widen_box((100, 50, 160, 110), 0.9, 640) == (100, 50, 160, 110)
    assert widen_box((100, 50, 140, 110), None, 640) == (100, 50, 140, 110)


def test_roll_from_the_eye_line():
    # level eyes: 0; the left eye (image right) higher: counter-clockwise, positive
    level = [(10, 20), (30, 20)] + [(0, 0)] * 4
    assert eye_roll_degrees(level) == 0.0
    assert eye_roll_degrees([(10, 20), (30, 0)] + [(0, 0)] * 4) == pytest.approx(45.0)
    assert eye_roll_degrees([(10, 20), (30, 40)] + [(0, 0)] * 4) == pytest.approx(-45.0)
    # a detection without keypoints has no roll
    assert Detection((0, 0, 4, 4), 0.5).roll_degrees is None
    assert Detection((0, 0, 4, 4), 0.5, tuple(level)).roll_degrees == 0.0


@pytest.mark.parametrize("a, b, expected", [
    ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
    ([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150),
    ([0, 0, 10, 10], [10, 0, 20, 10], 0.0),        # touching edges: no overlap
    ([0, 0, 10, 10], [2, 2, 4, 4], 4 / 100),       # inside
    ([5, 5, 5, 9], [0, 0, 10, 10], 0.0),           # degenerate
])
def test_iou(a, b, expected):
    assert iou(a, b) == pytest.approx(expected)
    assert iou(b, a) == pytest.approx(expected)
