"""Face quality (common.quality): each sub-score moves the way its name says, on real
faces of the shared clips."""

from __future__ import annotations

import cv2
import pytest

from common.detectors import make_detector
from common.quality import face_quality, frontal, sharpness
from tests.conftest import clip_path


@pytest.fixture(scope="module")
def walking_face():
    """Frame 0 of the walking clip and its middle face (box, confidence, keypoints)."""
    cap = cv2.VideoCapture(str(clip_path("face-demographics-walking-and-pause.mp4")))
    ok, frame = cap.read()
    cap.release()
    assert ok
    faces = sorted(make_detector(threads=1).detect(frame), key=lambda d: d.box[0])
    return frame, faces[1]


def test_blur_lowers_sharpness_and_quality(walking_face):
    frame, face = walking_face
    blurred = cv2.GaussianBlur(frame, (9, 9), 3)
    # given the same face sharp and blurred / then blur scores lower, on both measures
    assert sharpness(blurred, face.box) < 0.5 * sharpness(frame, face.box)
    q = face_quality(frame, face.box, face.confidence, face.keypoints)
    qb = face_quality(blurred, face.box, face.confidence, face.keypoints)
    assert qb.value < q.value and qb.size == q.size and qb.frontal == q.frontal
    # and the quality is the product of its parts, within 0..1
    assert q.value == pytest.approx(q.size * q.confidence * q.sharpness * q.frontal)
    assert 0 < q.value <= 1


def test_size_saturates_at_the_reference_side(walking_face):
    frame, face = walking_face
    x1, y1, x2, y2 = face.box
    # the 40-ish px face scores below 1; a box of 64 px or more scores 1
    assert face_quality(frame, face.box, 0.9).size == pytest.approx(
        min(x2 - x1, y2 - y1) / 64)
    assert face_quality(frame, [0, 0, 100, 80], 0.9).size == 1.0
    assert face_quality(None, [0, 0, 100, 80], 0.9).sharpness == 1.0   # unknown: neutral


def test_frontal_faces_beat_turned_ones(walking_face):
    _, face = walking_face
    kp = [list(p) for p in face.keypoints]
    # given the real frontal face's keypoints, and the nose moved towards one eye with
    # that side's ear moved next to its eye (a head turned by about 45 degrees)
    turned = [list(p) for p in kp]
    turned[2][0] = kp[1][0]
    turned[5][0] = kp[1][0] + 1.0
    # then the frontal face scores high, the turned one low, an unknown one neutral
    assert frontal(kp) > 0.7
    assert frontal(turned) < 0.2
    assert frontal(None) == 1.0
