"""Issue 5, points 6-7: a wire-valid but extreme frame must not make the detector
allocate without bound.

The wire schema accepts frames up to 8192 pixels a side (``common.wire.MAX_SIDE``), so an
8192x1 frame (24 KiB) is a valid message. The SSD keeps the aspect ratio with a short side
of ``input_size`` (300) pixels; without a cap on the long side that frame becomes a
2,457,600x300 network input: a 8.8 GB float blob before the first convolution.
"""

from __future__ import annotations

import pytest

from common import wire
from services.detector.backends import SSDDetector

# Largest network input area accepted: a 4:1 panorama at the default short side.
MAX_INPUT_PIXELS = 4 * 300 * 300


@pytest.fixture(scope="module")
def ssd():
    return SSDDetector(input_size=300)


@pytest.mark.xfail(strict=True, reason="reported to PIPELINE-A: services/detector/backends.py "
                   "SSDDetector.input_shape does not cap the long side (8192x1 frame -> "
                   "2457600x300 input, 8.8 GB blob); fix: scale = min(input_size / short, "
                   "max_long / long) with max_long ~ 4 * input_size")
@pytest.mark.parametrize("width,height", [(8192, 1), (1, 8192), (8192, 16), (4000, 50)])
def test_ssd_input_stays_bounded_for_extreme_aspect_ratios(ssd, width, height):
    assert width <= wire.MAX_SIDE and height <= wire.MAX_SIDE  # a wire-valid frame
    iw, ih = ssd.input_shape(width, height)
    assert iw * ih <= MAX_INPUT_PIXELS, (iw, ih)


@pytest.mark.parametrize("width,height", [(1280, 720), (640, 480), (1920, 1080), (2, 2),
                                          (1, 1), (480, 270)])
def test_ssd_input_for_ordinary_frames_keeps_short_side(ssd, width, height):
    iw, ih = ssd.input_shape(width, height)
    assert min(iw, ih) >= 296 and iw * ih <= MAX_INPUT_PIXELS
