"""Crop preprocessing shared by the classifier and training, so a network sees the same
pixels at training and at run time.

A face crop (``(h, w, 3)`` uint8 BGR, the detector box widened to the model's
``crop_aspect``, :func:`common.geometry.widen_box`) is resized to the model's input size
(area interpolation when shrinking, bilinear when enlarging) and turned gray for
one-channel models; colour models keep BGR order. Scaling to 0..1 is the first layer of
each network (``Rescaling``), so it cannot drift.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from common.images import check_bgr8


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """Network input size: ``height`` x ``width`` pixels, ``channels`` 1 (gray) or 3 (BGR)."""

    height: int
    width: int
    channels: int

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(height, width, channels)``."""
        return (self.height, self.width, self.channels)

    @property
    def tag(self) -> str:
        """Short name used in cache files, e.g. ``"64x64x3"`` (height x width x channels)."""
        return f"{self.height}x{self.width}x{self.channels}"

    @classmethod
    def from_meta(cls, meta: dict) -> "InputSpec":
        """Read ``meta["input"] = {"height", "width", "channels"}``."""
        spec = meta["input"]
        return cls(int(spec["height"]), int(spec["width"]), int(spec["channels"]))


def resize_crop(crop: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Model input pixels for one face crop.

    Args:
        crop: ``(h, w, 3)`` uint8 BGR face crop (``h, w >= 1``), as the detector cut it.
        spec: the model's input size.

    Returns:
        ``(spec.height, spec.width, spec.channels)`` uint8: BGR for 3 channels, gray
        (``cv2.COLOR_BGR2GRAY``) for 1.

    Raises:
        ValueError: the crop is not a non-empty ``(h, w, 3)`` uint8 array.
    """
    check_bgr8(crop, "face crop", "(h, w, 3)")
    h, w = crop.shape[:2]
    shrink = h * w > spec.height * spec.width
    out = cv2.resize(crop, (spec.width, spec.height),
                     interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    if spec.channels == 1:
        out = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)[:, :, None]
    return np.ascontiguousarray(out)
