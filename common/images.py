"""Images in and out of messages: the one JPEG decoder (with error and size checks), the
JPEG encoder, and the check every stage applies to a pixel array.

Every stage works on ``(H, W, 3) uint8`` BGR arrays (OpenCV's order).
"""

from __future__ import annotations

import cv2
import numpy as np

from common import wire


class BadFrame(ValueError):
    """An image that cannot be used (undecodable JPEG, size or layout not as announced)."""


def check_bgr8(image, what: str = "frame", shape: str = "(H, W, 3)") -> None:
    """Raise unless ``image`` is a non-empty ``(H, W, 3) uint8`` array.

    Args:
        image: the array to check.
        what: its name in the error message (``"frame"``, ``"face crop"``).
        shape: its shape as the message writes it.

    Raises:
        ValueError: not a non-empty 3-channel uint8 array; the message names ``what``.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 \
            or image.dtype != np.uint8 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{what} must be a non-empty {shape} uint8 BGR array, got "
                         f"{getattr(image, 'shape', None)} {getattr(image, 'dtype', None)}")


def decode_jpeg(data, size: tuple[int, int] | None = None, name: str = "image") -> np.ndarray:
    """Decode JPEG (or any format OpenCV reads) bytes to ``(H, W, 3) uint8`` BGR.

    Args:
        data: the encoded bytes (bytes, memoryview or zmq frame buffer).
        size: ``(width, height)`` in pixels the image must have, or ``None``.
        name: what the error messages call the image (e.g. ``"stream s seq 3"``).

    Raises:
        BadFrame: empty or undecodable data, refused by OpenCV (e.g. more pixels than
            ``OPENCV_IO_MAX_IMAGE_PIXELS``), or a size that differs from ``size``.
    """
    buf = np.frombuffer(data if data is not None else b"", dtype=np.uint8)
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    except cv2.error as exc:  # e.g. a header announcing more pixels than the decode limit
        raise BadFrame(f"{name}: JPEG refused by OpenCV ({exc.err or exc})") from None
    if image is None:
        raise BadFrame(f"{name}: undecodable image ({buf.size} bytes)")
    h, w = image.shape[:2]
    if size is not None and (w, h) != tuple(size):
        raise BadFrame(f"{name}: JPEG is {w}x{h}, header says {size[0]}x{size[1]}")
    return image


def frame_image(msg: wire.Message) -> np.ndarray:
    """The image of an image-carrying message as ``(H, W, 3) uint8`` BGR.

    ``bgr8`` payloads are returned as the decoded read-only view; JPEG payloads are
    decoded (:func:`decode_jpeg`) and must have the header's ``width`` x ``height``.

    Raises:
        BadFrame: the JPEG cannot be decoded or its size disagrees with the header.
    """
    if msg.image is not None:
        return msg.image
    return decode_jpeg(msg.image_bytes, (msg.header["width"], msg.header["height"]),
                       f"stream {msg.stream} seq {msg.seq}")


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of a ``(H, W, 3) uint8`` BGR image at ``quality`` (1-100).

    Raises:
        ValueError: not a non-empty ``(H, W, 3) uint8`` array, or OpenCV cannot encode it.
    """
    check_bgr8(image, "image")
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"cannot JPEG-encode a {image.shape[1]}x{image.shape[0]} image")
    return buf.tobytes()
