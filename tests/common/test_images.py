"""The one JPEG decoder (errors and size checks), the encoder and the array check."""

from __future__ import annotations

import time

import numpy as np
import pytest
from skimage import data

from common import wire
from common.images import BadFrame, check_bgr8, decode_jpeg, encode_jpeg, frame_image


@pytest.fixture(scope="module")
def astronaut():
    """scikit-image's public-domain astronaut photo, ``(512, 512, 3)`` BGR."""
    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


def test_jpeg_round_trip_keeps_size_and_pixels(astronaut):
    # given the photo as JPEG / when decoded with its expected size
    image = decode_jpeg(encode_jpeg(astronaut, 95), (512, 512))
    # then the same size, close to the original pixels
    assert image.shape == (512, 512, 3) and image.dtype == np.uint8
    assert np.mean(np.abs(image.astype(int) - astronaut)) < 4


@pytest.mark.parametrize("payload, match", [
    (b"", "undecodable image \\(0 bytes\\)"),
    (b"\xff\xd8 not a jpeg", "undecodable"),
    (None, "undecodable"),
])
def test_undecodable_data_is_a_clear_error(payload, match):
    with pytest.raises(BadFrame, match="stream s seq 3: " + match):
        decode_jpeg(payload, name="stream s seq 3")


def test_size_that_disagrees_with_the_header_is_rejected(astronaut):
    jpg = encode_jpeg(astronaut)
    with pytest.raises(BadFrame, match="JPEG is 512x512, header says 100x50"):
        decode_jpeg(jpg, (100, 50))


def test_frame_image_of_raw_and_jpeg_messages(astronaut):
    # given the same frame as a raw and as a JPEG message
    hdr = wire.frame_header("s", 4, time.time_ns(), 512, 512)
    raw = wire.decode(wire.encode_frame(hdr, astronaut))
    jpg = wire.decode(wire.encode(dict(hdr, encoding="jpeg"), [encode_jpeg(astronaut)]))
    # then the raw one is the payload view and the JPEG one is decoded
    assert frame_image(raw) is raw.image
    assert frame_image(jpg).shape == astronaut.shape
    # and a JPEG message whose header lies about the size names the frame
    lie = wire.decode(wire.encode(dict(hdr, encoding="jpeg", width=64), [encode_jpeg(astronaut)]))
    with pytest.raises(BadFrame, match="stream s seq 4: JPEG is 512x512, header says 64x512"):
        frame_image(lie)


@pytest.mark.parametrize("bad", [np.zeros((0, 10, 3), np.uint8), np.zeros((10, 10), np.uint8),
                                 np.zeros((10, 10, 4), np.uint8),
                                 np.zeros((10, 10, 3), np.float32), "image"])
def test_check_bgr8_names_what_is_wrong(bad):
    with pytest.raises(ValueError, match="face crop must be a non-empty \\(h, w, 3\\) uint8"):
        check_bgr8(bad, "face crop", "(h, w, 3)")
    with pytest.raises(ValueError):
        encode_jpeg(bad)
