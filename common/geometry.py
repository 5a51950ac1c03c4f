"""Box geometry shared by the detector, the classifier, the sink and training.

Boxes are ``(x1, y1, x2, y2)`` in absolute pixels of the frame, ``x2``/``y2`` exclusive,
so the region of a box is ``frame[y1:y2, x1:x2]``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


#: Face keypoints a detector may give, in MediaPipe's order (BlazeFace; the person's own
#: right and left, so the right eye is on the image's left for a face looking at the camera).
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_center",
                  "right_ear_tragion", "left_ear_tragion")


@dataclasses.dataclass(frozen=True)
class Detection:
    """One face found by a detector.

    Attributes:
        box: ``(x1, y1, x2, y2)`` int pixels, clipped to the frame, non-empty.
        confidence: detector score, 0..1.
        keypoints: ``None`` (the detector gives none: SSD, Haar, dlib) or six ``(x, y)``
            float pixels in :data:`KEYPOINT_NAMES` order, within ``[0, W] x [0, H]``
            (BlazeFace).
    """

    box: tuple[int, int, int, int]
    confidence: float
    keypoints: tuple[tuple[float, float], ...] | None = None

    @property
    def roll_degrees(self) -> float | None:
        """Head roll from the eye line (:func:`eye_roll_degrees`), ``None`` without
        keypoints."""
        return None if self.keypoints is None else eye_roll_degrees(self.keypoints)


def eye_roll_degrees(keypoints) -> float:
    """Head roll (degrees) from the eye line of six keypoints (:data:`KEYPOINT_NAMES`).

    Counter-clockwise positive as in :func:`cv2.getRotationMatrix2D`: turning the face by
    ``-roll`` makes it upright. The eye line runs from the person's right eye (image left)
    to the left eye; with image y pointing down, an upright face has roll 0.
    """
    (rx, ry), (lx, ly) = keypoints[0], keypoints[1]
    return math.degrees(math.atan2(-(float(ly) - float(ry)), float(lx) - float(rx)))


def clip_box(x1: float, y1: float, x2: float, y2: float, width: int, height: int,
             min_face_px: int = 1) -> tuple[int, int, int, int] | None:
    """Round a box outwards and clip it to a ``width`` x ``height`` frame.

    Returns:
        ``(x1, y1, x2, y2)`` ints with ``0 <= x1 < x2 <= width`` and likewise for y, or
        ``None`` when the clipped box is narrower or shorter than ``min_face_px`` pixels
        (including zero-area and fully outside boxes, and NaN coordinates).
    """
    vals = np.array([x1, y1, x2, y2], dtype=np.float64)
    if not np.all(np.isfinite(vals)):
        return None
    ix1 = int(np.clip(np.floor(vals[0]), 0, width))
    iy1 = int(np.clip(np.floor(vals[1]), 0, height))
    ix2 = int(np.clip(np.ceil(vals[2]), 0, width))
    iy2 = int(np.clip(np.ceil(vals[3]), 0, height))
    if ix2 - ix1 < max(min_face_px, 1) or iy2 - iy1 < max(min_face_px, 1):
        return None
    return ix1, iy1, ix2, iy2


def widen_box(box, aspect: float | None, width: int) -> tuple[int, int, int, int]:
    """``box`` widened about its centre to ``aspect`` = width/height, clipped to ``width``.

    The age/gender models were trained on crops of a given median aspect ratio
    (``meta.json`` ``crop_aspect``: 0.88 for UTKFace chips, whose SSD boxes are cut off at
    the top and bottom of the chip); in video the SSD's boxes are narrower (0.73 on the
    demo clip), and resizing them to the square input would widen every face. Boxes that
    are already as wide, or ``aspect`` None/0, are returned unchanged; the height is never
    changed, so nothing of the box is lost.

    Args:
        box: ``(x1, y1, x2, y2)`` int pixels, ``x2``/``y2`` exclusive.
        aspect: target width/height.
        width: frame width (pixels) to clip to.

    Returns:
        ``(x1, y1, x2, y2)`` ints.
    """
    x1, y1, x2, y2 = (int(v) for v in box)
    if not aspect or aspect <= 0 or (x2 - x1) >= aspect * (y2 - y1):
        return x1, y1, x2, y2
    extra = aspect * (y2 - y1) - (x2 - x1)
    return (max(0, math.floor(x1 - extra / 2.0)), y1,
            min(int(width), math.ceil(x2 + extra / 2.0)), y2)


def iou(a, b) -> float:
    """Intersection over union of two ``[x1, y1, x2, y2]`` boxes (pixels); 0 if disjoint
    or degenerate."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
