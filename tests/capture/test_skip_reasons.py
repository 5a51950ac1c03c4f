"""Why an image file is skipped, in words a user can act on (what the summary shows)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from common.images import BadImage, read_image


@pytest.fixture
def jpeg() -> bytes:
    from skimage import data
    return cv2.imencode(".jpg", cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))[1].tobytes()


def test_jpeg_cut_mid_scan_is_refused_by_opencv_and_named_truncated(tmp_path, jpeg):
    # given a JPEG cut in the middle of its scan data
    path = tmp_path / "cut.jpg"
    path.write_bytes(jpeg[: len(jpeg) * 3 // 4])
    # then OpenCV's imdecode returns nothing (docs/failure-modes.md says so: a test, so a
    # newer OpenCV that decodes the top part would make it fail and the docs be fixed)
    assert cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED) \
        is None
    # and reading it fails with a reason naming the truncation
    with pytest.raises(BadImage) as info:
        read_image(path)
    assert info.value.reason.startswith("truncated JPEG (") and "end-of-image" in \
        info.value.reason
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize("name,content,reason", [
    ("empty.jpg", b"", "empty file (0 bytes)"),
    ("text.png", b"hello, not a picture\n", "not an image: no known image format"),
    ("cut.png", "png[:60]", "corrupt or truncated PNG (60 bytes)"),
])
def test_reasons_for_files_that_are_not_images(tmp_path, name, content, reason):
    if content == "png[:60]":  # a real PNG cut after its header
        content = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()[:60]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(BadImage) as info:
        read_image(path)
    assert info.value.reason.startswith(reason), info.value.reason
