"""Close-ups: a face filling the whole image (dataset chips, selfies) and SSDDetector's pad."""

import cv2
import numpy as np
import pytest
from skimage import data

from common.detectors.ssd import SSDDetector


@pytest.fixture(scope="module")
def face_chip():
    """A 200x200 close-up of the astronaut's face (public domain), face filling the image."""
    image = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    x1, y1, x2, y2 = SSDDetector(threads=1).detect(image)[0].box
    cx, cy, half = (x1 + x2) // 2, (y1 + y2) // 2, int(max(x2 - x1, y2 - y1) * 0.55)
    chip = image[max(cy - half, 0):cy + half, max(cx - half, 0):cx + half]
    return cv2.resize(np.ascontiguousarray(chip), (200, 200))


def test_without_pad_the_top_detection_is_a_quadrant_of_the_face(face_chip):
    # given a close-up, when detected without a border
    box = SSDDetector(threads=1).detect(face_chip)[0].box
    # then the best box misses most of the face (the SSD's close-up failure that pad fixes)
    x1, y1, x2, y2 = box
    assert x1 > 0.4 * 200 and y1 > 0.3 * 200 and (x2, y2) == (200, 200), box


def test_pad_finds_the_whole_face_in_frame_coordinates(face_chip):
    # given the same close-up, when detected with a border of half its side
    dets = SSDDetector(threads=1, pad=0.5).detect(face_chip)
    # then one box covers the face centre and most of the chip, in chip pixels
    assert len(dets) == 1
    x1, y1, x2, y2 = dets[0].box
    assert 0 <= x1 < 100 < x2 <= 200 and 0 <= y1 < 100 < y2 <= 200
    assert (x2 - x1) * (y2 - y1) > 0.5 * 200 * 200


def test_pad_out_of_range_is_rejected():
    with pytest.raises(ValueError):
        SSDDetector(pad=-0.1)
