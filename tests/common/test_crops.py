"""The classifier's face crop (common.crops): the BlazeFace crop rules on real faces."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from skimage import data

from common.crops import (CHIP_RULE, DEFAULT_RULE, SSD_VIDEO_RULE, CropRule, crop_box,
                          crop_region, cut_crop, face_crop)
from common.detectors.blazeface import BlazeFaceDetector


@pytest.fixture(scope="module")
def blazeface():
    return BlazeFaceDetector(threads=1)


@pytest.fixture(scope="module")
def astronaut_frame():
    """The astronaut (public domain) with a grey border, 712x712 BGR."""
    img = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    return cv2.copyMakeBorder(img, 100, 100, 100, 100, cv2.BORDER_CONSTANT, value=(128,) * 3)


def _best(dets):
    return max(dets, key=lambda d: d.confidence)


def test_upright_face_crop_geometry(blazeface, astronaut_frame):
    # given the upright astronaut, when its crop is computed
    d = _best(blazeface.detect(astronaut_frame))
    cx, cy, w, h, angle = crop_region(d.box, d.keypoints, CHIP_RULE)
    x1, y1, x2, y2 = d.box
    # then the chip rule's is narrower than the box (w/h ~0.885), centred on it, a little lower
    assert w / h == pytest.approx(CHIP_RULE.width / CHIP_RULE.height)
    assert 0.8 * (x2 - x1) <= w <= 0.95 * (x2 - x1)
    assert abs(cx - (x1 + x2) / 2) < 3 and 0 <= cy - (y1 + y2) / 2 < 6
    assert abs(angle) < 10
    # and the cut crop has that size
    crop = cut_crop(astronaut_frame, d.box, d.keypoints, CHIP_RULE)
    assert crop.shape == (round(h), round(w), 3) and crop.dtype == np.uint8
    # without keypoints: same centre column, no turn
    assert crop_region(d.box)[4] == 0.0
    # and the video rule's (the default) is wider than the box and reaches higher
    vx, vy, vw, vh, _ = crop_region(d.box, d.keypoints)
    assert DEFAULT_RULE == SSD_VIDEO_RULE
    assert vw > x2 - x1 and vh > y2 - y1 and vy < (y1 + y2) / 2


@pytest.mark.parametrize("turn", [30, -45])
def test_a_rolled_face_gives_the_same_upright_crop(blazeface, astronaut_frame, turn):
    # given the astronaut turned by `turn` degrees about her face
    up = _best(blazeface.detect(astronaut_frame))
    m = cv2.getRotationMatrix2D((327.0, 222.0), turn, 1.0)
    turned = cv2.warpAffine(astronaut_frame, m, (712, 712), borderValue=(128,) * 3)
    d = _best(blazeface.detect(turned))
    # when both are cut by the rule
    a = cut_crop(astronaut_frame, up.box, up.keypoints, CHIP_RULE)
    b = cut_crop(turned, d.box, d.keypoints, CHIP_RULE)

    # then, read again by the detector, both crops show an upright face with the eyes at
    # the same places (fractions of the crop, within 6 %)
    def eyes(crop):
        h, w = crop.shape[:2]
        pad = cv2.copyMakeBorder(crop, h, h, w, w, cv2.BORDER_CONSTANT, value=(128,) * 3)
        e = _best(blazeface.detect(pad))
        assert abs(e.roll_degrees) < 8
        return (np.array(e.keypoints[:2]) - (w, h)) / (w, h)
    assert np.abs(eyes(a) - eyes(b)).max() < 0.06
    # and the bounding box to cut holds the whole turned crop
    bx1, by1, bx2, by2 = crop_box(d.box, d.keypoints, 712, 712, CHIP_RULE)
    cx, cy, w, h, _ = crop_region(d.box, d.keypoints, CHIP_RULE)
    assert bx2 - bx1 > w and by2 - by1 > h * 0.99


def test_crop_box_is_clipped_and_bad_input_refused():
    # a 40 px box with level eyes: 34 x 38.4 px, centred 0.96 px below the box centre
    kp = [(50, 40), (70, 40), (60, 50), (60, 56), (40, 45), (80, 45)]
    assert crop_box((40, 30, 80, 70), kp, 100, 100, CHIP_RULE) == (43, 31, 77, 71)
    # the video rule: 43.2 x 48 px, centred 2.8 px above the box centre
    assert crop_box((40, 30, 80, 70), kp, 100, 100, SSD_VIDEO_RULE) == (38, 23, 82, 72)
    # a face at the corner: clipped to the frame; one outside it: None
    x1, y1, x2, y2 = crop_box((-20, -20, 20, 20), None, 100, 100, CHIP_RULE)
    assert (x1, y1) == (0, 0) and x2 <= 20 and y2 <= 21
    assert crop_box((200, 200, 240, 240), None, 100, 100) is None
    for bad in [(10, 10, 10, 20), (0, 0, float("nan"), 5)]:
        with pytest.raises(ValueError):
            crop_region(bad)
    with pytest.raises(ValueError):
        crop_region((0, 0, 10, 10), [(1, 2)])
    with pytest.raises(ValueError):
        cut_crop(np.zeros((5, 5), np.uint8), (0, 0, 4, 4))


def test_on_utkface_chips_the_crop_stays_in_the_chip(blazeface, utkface_dir):
    # given 40 UTKFace chips with a black border of half their side (as the training cache)
    names = sorted(os.listdir(utkface_dir))[::500][:40]
    tops, bottoms, sides, aspects = [], [], [], []
    for n in names:
        chip = cv2.imread(str(utkface_dir / n))
        h, w = chip.shape[:2]
        b = w // 2
        big = cv2.copyMakeBorder(chip, b, b, b, b, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        dets = blazeface.detect(big)
        if not dets:
            continue
        d = _best(dets)
        cx, cy, cw, ch, _ = crop_region(d.box, d.keypoints, CHIP_RULE)
        tops.append((cy - ch / 2 - b) / h)
        bottoms.append((cy + ch / 2 - b) / h)
        sides.append(max(abs(cx - cw / 2 - b), abs(cx + cw / 2 - b - w)) / w)
        aspects.append(cw / ch)
    # then the crops lie within the chip (medians within 5 % of its edges) at w/h 0.885
    assert len(tops) >= 35
    assert -0.05 < np.median(tops) < 0.1 and 0.85 < np.median(bottoms) < 1.02
    assert np.median(aspects) == pytest.approx(0.885, abs=0.01)


def test_face_crop_cuts_by_keypoints_or_widens_the_box(blazeface, astronaut_frame):
    d = _best(blazeface.detect(astronaut_frame))
    # given a face with keypoints / then it is cut upright by the rule (a copy)
    a = face_crop(astronaut_frame, d.box, d.keypoints, 0.88, CHIP_RULE)
    assert np.array_equal(a, cut_crop(astronaut_frame, d.box, d.keypoints, CHIP_RULE))
    # given the same box without keypoints / then the box widened to the aspect (a view)
    x1, y1, x2, y2 = 100, 100, 140, 160
    b = face_crop(astronaut_frame, (x1, y1, x2, y2), None, 0.88)
    assert b.shape == (60, 54, 3) and b.base is not None  # 52.8 px rounded outwards
    assert face_crop(astronaut_frame, (x1, y1, x2, y2), None, None).shape == (60, 40, 3)


def test_crop_rule_from_meta():
    # given a model's meta.json without a rule / then the served-SSD rule
    assert CropRule.from_meta({}) == SSD_VIDEO_RULE
    # given one / then that rule
    rule = {"width": 0.85, "height": 0.96, "shift_down": 0.024}
    assert CropRule.from_meta({"crop_rule": rule}) == CHIP_RULE
    # and a broken one is refused
    for bad in [{"width": 1.0}, {"width": 0, "height": 1, "shift_down": 0},
                {"width": 1, "height": 9, "shift_down": 0}]:
        with pytest.raises(ValueError):
            CropRule.from_meta({"crop_rule": bad})
