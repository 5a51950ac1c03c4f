"""Images in and out of messages and files: the one JPEG decoder (with error and size
checks), the JPEG encoder, the check every stage applies to a pixel array, and the reading
of image files (capture's image folders and ``agegender predict``).

Every stage works on ``(H, W, 3) uint8`` BGR arrays (OpenCV's order). Image files come in
many shapes: grayscale, gray + alpha, RGBA/BGRA, 16-bit, float TIFFs, 1x1 pixels; every
decoded file goes through :func:`to_bgr8` first.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

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


#: File name endings treated as images in an image folder (lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm",
                  ".ppm", ".pbm", ".pnm", ".gif", ".jp2")


class BadImage(ValueError):
    """An image that cannot be decoded or normalised; the message says why.

    Attributes:
        reason: why, without the file name (the message is ``"<file>: <reason>"`` when
            the error names a file).
    """

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


def to_bgr8(image: np.ndarray) -> np.ndarray:
    """Convert a decoded image to a contiguous ``(H, W, 3) uint8`` BGR array.

    Accepts what ``cv2.imread(path, cv2.IMREAD_UNCHANGED)`` returns:

    * ``(H, W)`` or ``(H, W, 1)`` grayscale -> replicated to 3 channels;
    * ``(H, W, 2)`` gray + alpha -> the gray channel, alpha dropped;
    * ``(H, W, 3)`` BGR -> unchanged;
    * ``(H, W, 4)`` BGRA -> alpha dropped (not composited: a face under a transparent
      pixel keeps its colour);
    * ``uint16`` -> the high byte (``value >> 8``); other integer types are clipped to
      0..255; floats are taken as 0..1 when their maximum is <= 1, else clipped to 0..255.

    Raises:
        BadImage: ``None``/empty input, more than 4 channels, or a non-numeric dtype.
    """
    if image is None or not isinstance(image, np.ndarray) or image.size == 0:
        raise BadImage("empty or undecodable image")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise BadImage(f"unsupported image shape {image.shape}")
    if image.dtype == np.uint8:
        pass
    elif image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif np.issubdtype(image.dtype, np.integer):
        image = np.clip(image, 0, 255).astype(np.uint8)
    elif np.issubdtype(image.dtype, np.floating):
        finite = np.nan_to_num(image.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        scale = 255.0 if finite.max(initial=0.0) <= 1.0 else 1.0
        image = np.clip(finite * scale, 0, 255).round().astype(np.uint8)
    else:
        raise BadImage(f"unsupported pixel type {image.dtype}")
    channels = image.shape[2]
    if channels in (1, 2):
        image = cv2.cvtColor(np.ascontiguousarray(image[:, :, 0]), cv2.COLOR_GRAY2BGR)
    elif channels == 4:
        image = image[:, :, :3]
    return np.ascontiguousarray(image)


def why_undecodable(data: bytes) -> str:
    """Why bytes that OpenCV did not decode are not an image, in words: an empty file, a
    file with no image format at all (a text file named ``.png``), a JPEG cut short
    (OpenCV 4.14's ``imdecode`` refuses a JPEG without its end-of-image marker; it does
    not return the part it could read), or another truncated or corrupt format. The
    format is identified from the header with Pillow, which reads no pixels for it."""
    n = len(data)
    if n == 0:
        return "empty file (0 bytes)"
    from PIL import Image, UnidentifiedImageError
    try:
        fmt = Image.open(io.BytesIO(data)).format
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        fmt = None
    if fmt is None:
        return (f"not an image: no known image format in its {n} bytes (it starts with "
                f"{data[:16]!r})")
    if fmt == "JPEG" and not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        return (f"truncated JPEG ({n} bytes, no end-of-image marker): OpenCV "
                f"{cv2.__version__} does not decode a JPEG cut short")
    return f"corrupt or truncated {fmt} ({n} bytes): OpenCV cannot decode it"


#: EXIF tag number of ``Orientation`` (TIFF/EXIF 2.3, tag 0x0112).
EXIF_ORIENTATION = 0x0112


def exif_orientation(data) -> int:
    """The EXIF ``Orientation`` (1-8) of an encoded image, 1 when it has none.

    Read with Pillow from the file's header only (no pixels are decoded); JPEG, PNG
    (``eXIf``), WebP and TIFF carry it. A value outside 1-8, or a file Pillow cannot
    parse, reads as 1 (upright: the pixels are used as stored).

    Args:
        data: the file's bytes (bytes or a uint8 array).
    """
    import io
    import warnings

    from PIL import Image
    try:
        with warnings.catch_warnings():  # a large photo is no bomb here (OpenCV's cap
            warnings.simplefilter("ignore")  # rules), a corrupt EXIF block reads as 1
            with Image.open(io.BytesIO(memoryview(data).tobytes())) as im:
                value = im.getexif().get(EXIF_ORIENTATION, 1)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return 1  # not a format Pillow reads (or a broken header): as stored
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an image stored with EXIF ``Orientation`` ``orientation`` upright.

    The eight values (EXIF 2.3, tag 0x0112; where the stored first row and column are
    shown): 1 as stored; 2 mirrored left-right; 3 turned 180 deg; 4 mirrored top-bottom;
    5 transposed (mirror about the main diagonal); 6 turned 90 deg clockwise (a phone held
    upright, the usual case); 7 transversed (mirror about the other diagonal); 8 turned 90
    deg counter-clockwise.

    Args:
        image: ``(H, W, C)`` array as decoded.
        orientation: 1-8; anything else is taken as 1.

    Returns:
        The upright image (``(W, H, C)`` for 5-8), contiguous.
    """
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.swapaxes(0, 1), 6: lambda a: a.swapaxes(0, 1)[:, ::-1],
           7: lambda a: a.swapaxes(0, 1)[::-1, ::-1], 8: lambda a: a.swapaxes(0, 1)[::-1]}
    op = ops.get(orientation)
    return image if op is None else np.ascontiguousarray(op(image))


def fit_within(image: np.ndarray, max_side: int, max_pixels: int | None = None) -> np.ndarray:
    """``image`` downscaled (area interpolation, aspect kept) so that neither side is
    longer than ``max_side`` pixels and it has at most ``max_pixels`` pixels; the same
    array when it fits already."""
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if max_pixels:
        scale = min(scale, (max_pixels / (h * w)) ** 0.5)
    if scale >= 1.0:
        return image
    size = (max(1, int(w * scale)), max(1, int(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3) uint8`` BGR (see :func:`to_bgr8`), upright by its
    EXIF orientation (:func:`exif_orientation`, :func:`apply_orientation`; OpenCV's
    ``IMREAD_UNCHANGED``, needed for 16-bit and alpha, ignores it).

    The largest image decoded is the process's ``OPENCV_IO_MAX_IMAGE_PIXELS``
    (:func:`common.process.limit_image_decoding`).

    Raises:
        BadImage: the file is missing, unreadable, not an image, larger than the decode
            cap, or has an unsupported layout; the message names the file.
    """
    path = Path(path)

    def bad(reason: str) -> BadImage:
        """The refusal for this file: a :class:`BadImage` naming the path and ``reason``."""
        return BadImage(f"{path}: {reason}", reason)

    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise bad(f"cannot read ({exc})") from None
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error as exc:  # e.g. more pixels than OPENCV_IO_MAX_IMAGE_PIXELS
        raise bad(f"refused by OpenCV ({exc.err or exc}); the largest image read is "
                  f"OPENCV_IO_MAX_IMAGE_PIXELS="
                  f"{os.environ.get('OPENCV_IO_MAX_IMAGE_PIXELS', 'unset')} pixels: "
                  f"downscale the file or set that variable higher") from None
    if image is None:
        raise bad(why_undecodable(data.tobytes()))
    try:
        image = to_bgr8(image)
    except BadImage as exc:
        raise bad(str(exc)) from None
    return apply_orientation(image, exif_orientation(data))
