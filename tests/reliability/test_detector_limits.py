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
from common.detectors.ssd import SSDDetector
from tests.reliability.helpers import ROOT

# Largest network input area accepted: a 4:1 panorama at the default short side.
MAX_INPUT_PIXELS = 4 * 300 * 300


@pytest.fixture(scope="module")
def ssd():
    return SSDDetector(input_size=300)


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


def huge_header_jpeg(width: int = 40000, height: int = 40000) -> bytes:
    """A ~600-byte JPEG whose SOF0 header announces ``width`` x ``height`` pixels."""
    import struct

    import cv2
    import numpy as np
    data = bytearray(cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))[1].tobytes())
    i = data.find(b"\xff\xc0")  # SOF0: marker, length(2), precision(1), height(2), width(2)
    data[i + 5:i + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_decode_limit_refuses_images_larger_than_any_wire_frame(tmp_path):
    # given a process that set its thread budget (every service and `predict` do)
    import subprocess
    import sys
    (tmp_path / "bomb.jpg").write_bytes(huge_header_jpeg(9000, 9000))
    code = ("import resource, numpy as np; from common.process import set_thread_budget; "
            "set_thread_budget(1); import cv2; "
            f"d = np.fromfile({str(tmp_path / 'bomb.jpg')!r}, np.uint8)\n"
            "try:\n    cv2.imdecode(d, cv2.IMREAD_COLOR); print('decoded')\n"
            "except cv2.error:\n    print('refused')\n"
            # VmHWM: peak RSS of this address space (ru_maxrss would include the
            # forking pytest process's RSS, which Linux carries across exec)
            "print([int(ln.split()[1]) // 1024 for ln in open('/proc/self/status') "
            "if ln.startswith('VmHWM')][0])")
    # when it decodes a JPEG announcing 9000x9000 (> wire.MAX_SIDE ** 2 pixels)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT,
                         timeout=60)
    lines = out.stdout.split()
    # then OpenCV refuses before allocating the 243 MB image
    assert lines[0] == "refused", out.stdout + out.stderr
    assert int(lines[1]) < 200, f"peak RSS {lines[1]} MiB"
