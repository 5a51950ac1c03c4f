"""Issue 12 item 10 at capture: a 12000x9000 phone photo in an image folder is read (it
was refused by the decode cap of 8192x8192) and sent downscaled to what the pipeline
takes (``common.wire.MAX_SIDE`` a side, ``common.wire.MAX_FRAME_PIXELS`` in all: one
message), counted; the face in it survives.
"""

from __future__ import annotations

import numpy as np
import pytest

from common import wire
from services.capture.finite import ImageFolderSource
from services.capture.metrics import CaptureMetrics
from services.capture.spec import SourceOptions
from tests.capture.test_media_time import _run_capture

pytestmark = pytest.mark.slow


def big_photo(path, width: int = 12000, height: int = 9000):
    """Write a ``width`` x ``height`` JPEG: a smooth gradient with scikit-image's
    public-domain astronaut photo (one face) pasted at 2400x2400 pixels."""
    import cv2
    from skimage import data
    yy = np.linspace(40, 200, height, dtype=np.float32)[:, None]
    xx = np.linspace(60, 180, width, dtype=np.float32)[None, :]
    img = np.empty((height, width, 3), np.uint8)
    img[:, :, 0] = (yy * 0.5 + xx * 0.5).astype(np.uint8)
    img[:, :, 1] = (yy * 0.8).astype(np.uint8)
    img[:, :, 2] = (xx * 0.9).astype(np.uint8)
    img[3000:5400, 5000:7400] = cv2.resize(data.astronaut()[:, :, ::-1], (2400, 2400))
    assert cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return path


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phone")
    big_photo(folder / "IMG_0001.jpg")
    return folder


def test_a_12000x9000_photo_in_a_folder_is_sent_downscaled(photo_folder):
    # given an image folder with a 108-megapixel phone photo (over 8192x8192 = 67 Mpx)
    # when the capture service plays the folder
    msgs, registry, rc = _run_capture({"sources": [f"phone={photo_folder}"],
                                       "realtime": False}, timeout_s=120)
    frames = [m for _, m in msgs if m.kind == "frame"]
    # then the photo is read (not dropped as bad_image) and sent as large as one message
    # allows (22.3 Mpx: 5456x4092), aspect kept, the downscale counted
    assert rc == 0 and len(frames) == 1
    f = frames[0]
    w, h = f.header["width"], f.header["height"]
    assert w * h <= wire.MAX_FRAME_PIXELS and w * h > 0.99 * wire.MAX_FRAME_PIXELS
    assert abs(w / h - 12000 / 9000) < 0.01
    assert registry.get_sample_value("agegender_frames_downscaled_total",
                                     {"stream": "phone"}) == 1
    assert registry.get_sample_value("agegender_frames_dropped_total",
                                     {"stage": "capture", "reason": "bad_image"}) == 0
    # and the pasted face is where it was, scaled (8192 / 12000): its box holds the
    # astronaut's colours, not the gradient
    s = w / 12000
    face = f.image[int(3000 * s):int(5400 * s), int(5000 * s):int(7400 * s)]
    assert face.std() > 30


def test_the_folder_source_counts_what_it_downscales(photo_folder):
    # given the folder read directly by its source, with metrics
    metrics = CaptureMetrics()
    metrics.add_stream("phone")
    src = ImageFolderSource("phone", str(photo_folder), SourceOptions(), metrics)
    # when the photo is read
    frame = src.read()
    # then the frame fits the wire and is counted once
    h, w = frame.image.shape[:2]
    assert max(h, w) <= wire.MAX_SIDE and h * w <= wire.MAX_FRAME_PIXELS
    assert metrics.registry.get_sample_value("agegender_frames_downscaled_total",
                                             {"stream": "phone"}) == 1
