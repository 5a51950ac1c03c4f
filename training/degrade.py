"""Image degradations of the wild proxy (:mod:`training.wild`), each a small pure function
of an ``(H, W, 3)`` uint8 BGR image and explicit parameters: occlusion, colour cast,
haze, grayscale, motion and defocus blur, downscaling, JPEG, and a detector's box error
(:func:`jitter_box`, :func:`round_box`).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

#: A box ``(x1, y1, x2, y2)`` in pixels (floats).
Box = tuple[float, float, float, float]


def occlude(image: np.ndarray, rect: Box, colour: tuple[int, int, int]) -> np.ndarray:
    """A flat-coloured rectangle (a hand, a mask, a cup, another head) over ``image``.

    Args:
        image: ``(H, W, 3)`` uint8.
        rect: ``(x1, y1, x2, y2)`` pixels (clipped to the image).
        colour: BGR fill.

    Returns:
        A new image.
    """
    out = image.copy()
    h, w = out.shape[:2]
    x1, y1 = max(0, int(round(rect[0]))), max(0, int(round(rect[1])))
    x2, y2 = min(w, int(round(rect[2]))), min(h, int(round(rect[3])))
    if x2 > x1 and y2 > y1:
        out[y1:y2, x1:x2] = np.asarray(colour, np.uint8)
    return out


def colour_cast(image: np.ndarray, gains: tuple[float, float, float],
                gamma: float) -> np.ndarray:
    """White-balance error and exposure: per-channel gains (B, G, R), then a gamma curve
    ``255 * (v / 255) ** gamma`` (``gamma < 1`` brightens, ``> 1`` darkens).

    Args:
        image: ``(H, W, 3)`` uint8 BGR.
        gains: multiplicative gains per channel (1 = unchanged).
        gamma: exponent (> 0).

    Returns:
        A new uint8 image.
    """
    lut_x = np.arange(256, dtype=np.float32) / 255.0
    out = np.empty_like(image)
    for c in range(3):
        lut = np.clip(255.0 * np.clip(lut_x * gains[c], 0.0, 1.0) ** gamma + 0.5, 0, 255)
        out[:, :, c] = cv2.LUT(image[:, :, c], lut.astype(np.uint8))
    return out


def haze(image: np.ndarray, amount: float, level: float) -> np.ndarray:
    """Low contrast (haze, glare, a cheap or dirty lens, lifted blacks): the image blended
    towards a flat gray ``level`` (0..255) by ``amount`` (0 unchanged, 1 flat gray).

    Returns:
        A new ``(H, W, 3)`` uint8 image.
    """
    flat = np.full_like(image, int(round(level)))
    return cv2.addWeighted(image, 1.0 - float(amount), flat, float(amount), 0.0)


def grayscale(image: np.ndarray) -> np.ndarray:
    """Gray image kept in three channels (``(H, W, 3)`` uint8, B = G = R)."""
    return cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


def motion_blur(image: np.ndarray, length_px: float, angle_deg: float) -> np.ndarray:
    """Linear motion blur: a line kernel of ``length_px`` pixels at ``angle_deg``
    (0 = horizontal, counter-clockwise). Lengths below 1 px return a copy."""
    n = int(math.ceil(length_px))
    if n < 2:
        return image.copy()
    k = n if n % 2 else n + 1
    kernel = np.zeros((k, k), np.float32)
    c = (k - 1) / 2.0
    dx, dy = math.cos(math.radians(angle_deg)), -math.sin(math.radians(angle_deg))
    for t in np.linspace(-length_px / 2.0, length_px / 2.0, 4 * k):
        x, y = int(round(c + t * dx)), int(round(c + t * dy))
        kernel[y, x] = 1.0
    kernel /= kernel.sum()
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REPLICATE)


def defocus_blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Out-of-focus blur approximated by a Gaussian of ``sigma_px`` pixels."""
    if sigma_px < 0.3:
        return image.copy()
    return cv2.GaussianBlur(image, (0, 0), sigmaX=float(sigma_px),
                            borderType=cv2.BORDER_REPLICATE)


def downscale(image: np.ndarray, factor: float) -> np.ndarray:
    """``image`` resized by ``factor`` (< 1 shrinks; area interpolation), at least 1x1."""
    h, w = image.shape[:2]
    size = (max(1, int(round(w * factor))), max(1, int(round(h * factor))))
    if size == (w, h):
        return image.copy()
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interp)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """``image`` encoded as JPEG at ``quality`` (1..100) and decoded again."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def jitter_box(box: Box, scale: float, shift: tuple[float, float], aspect: float) -> Box:
    """A detector's box error: ``box`` scaled by ``scale`` about its centre, its width
    further multiplied by ``aspect``, and its centre moved by ``shift`` (fractions of the
    box's width and height).

    Returns:
        ``(x1, y1, x2, y2)`` floats (not clipped).
    """
    x1, y1, x2, y2 = box
    w, h = (x2 - x1) * scale * aspect, (y2 - y1) * scale
    cx = (x1 + x2) / 2.0 + shift[0] * (x2 - x1)
    cy = (y1 + y2) / 2.0 + shift[1] * (y2 - y1)
    return cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0


def round_box(box: Box, width: int, height: int, min_px: int = 2
              ) -> tuple[int, int, int, int]:
    """``box`` rounded outwards to whole pixels and clipped to the frame, at least
    ``min_px`` on each side (moved inside the frame when it would be smaller)."""
    x1 = int(np.clip(math.floor(box[0]), 0, width - min_px))
    y1 = int(np.clip(math.floor(box[1]), 0, height - min_px))
    x2 = int(np.clip(math.ceil(box[2]), x1 + min_px, width))
    y2 = int(np.clip(math.ceil(box[3]), y1 + min_px, height))
    return x1, y1, x2, y2
