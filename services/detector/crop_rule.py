"""The face crop rule for BlazeFace detections: where the classifier's crop is cut.

Training crops (UTKFace chips) and serving crops (video frames) must be cut by the same
rule from the same detector. This module is that rule, as small pure functions of a
BlazeFace detection (box + six keypoints, :mod:`services.detector.blazeface`):

1. **Face size** ``s`` (pixels): the box's side. BlazeFace's box is a stable ruler: 0.99
   of a UTKFace chip's width whatever the face's size in the network input (96, 48 or
   24 px), and :class:`services.detector.blazeface.BlazeFaceDetector` reads rolled faces
   again upright so their box keeps its upright size (the astronaut of
   :mod:`skimage.data`: 105 px upright, 105-111 px turned by up to +-45 degrees).
2. **Angle**: the eye line's roll (:attr:`FaceDetection.roll_degrees` convention, counter-
   clockwise positive), 0 without keypoints.
3. **Crop**: a rectangle :data:`CROP_WIDTH` ``* s`` wide and :data:`CROP_HEIGHT` ``* s``
   high, its centre :data:`CROP_SHIFT_DOWN` ``* s`` below the box centre along the face's
   own vertical axis, turned by the angle.

Where the numbers come from (``/work/notes/detector/crop_geom.py`` in the issue's study;
2,100 UTKFace test-split chips, each with a black border of half its side as
``training/cache.py`` adds for the SSD): the age/gender models were trained on the SSD box
clipped to the chip; relative to BlazeFace's box on the same chip that crop is 0.847 as
wide and 0.964 as high (medians; so w/h 0.88, the models' ``crop_aspect``), and its centre
is 0.024 box heights lower. On chips the rule therefore reproduces the crops today's models
were trained on, and it stays inside the chip (BlazeFace's box reaches 4 % of the chip
above it; the crop starts 0.4 % below the chip's top edge, median), so retraining on it
sees no black border. In video the same rule cuts the same part of the face; the SSD's own
video boxes are 22 % taller than BlazeFace's (forehead and hair: 1.22 on the walking clip,
1.22 head-pose, 1.27 classroom), which the chips never showed the models.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

#: Crop width, in face sizes (median SSD-on-chip / BlazeFace box width, 2,100 chips: 0.847).
CROP_WIDTH = 0.85
#: Crop height, in face sizes (median SSD-on-chip, clipped to the chip / BlazeFace box
#: height: 0.964).
CROP_HEIGHT = 0.96
#: Crop centre below the box centre, in face sizes (median: 0.024).
CROP_SHIFT_DOWN = 0.024


def crop_region(box, keypoints=None) -> tuple[float, float, float, float, float]:
    """The crop of one face as a rotated rectangle (see the module docstring).

    Args:
        box: ``(x1, y1, x2, y2)`` BlazeFace box, pixels (the larger side is the face size).
        keypoints: six ``(x, y)`` pixels in MediaPipe's order (right eye, left eye, nose
            tip, mouth centre, right ear, left ear), or ``None``; only the eyes are used.

    Returns:
        ``(cx, cy, width, height, angle)``: centre (pixels), size (pixels) and roll
        (degrees, counter-clockwise positive; the crop is upright after turning by
        ``-angle``).

    Raises:
        ValueError: an empty or non-finite box, or keypoints that are not ``(6, 2)``.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 <= x1 or y2 <= y1:
        raise ValueError(f"box must be finite with x2 > x1 and y2 > y1, got {box}")
    size = max(x2 - x1, y2 - y1)
    angle = 0.0
    if keypoints is not None:
        kp = np.asarray(keypoints, np.float64)
        if kp.shape != (6, 2) or not np.all(np.isfinite(kp)):
            raise ValueError(f"keypoints must be six finite (x, y) pairs, got {kp.shape}")
        (rx, ry), (lx, ly) = kp[0], kp[1]
        angle = math.degrees(math.atan2(-(ly - ry), lx - rx))
    t = math.radians(angle)
    # the face's "down" axis in image coordinates (y down) for a roll t (ccw positive)
    down = (math.sin(t), math.cos(t))
    shift = CROP_SHIFT_DOWN * size
    cx = (x1 + x2) / 2 + shift * down[0]
    cy = (y1 + y2) / 2 + shift * down[1]
    return cx, cy, CROP_WIDTH * size, CROP_HEIGHT * size, angle


def crop_box(box, keypoints, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Axis-aligned bounding box of :func:`crop_region`, rounded outwards and clipped.

    What to cut from the frame so that the upright crop (:func:`cut_crop`) can be made from
    it: for an upright face this is the crop itself.

    Args:
        box, keypoints: as :func:`crop_region`.
        width, height: frame size (pixels).

    Returns:
        ``(x1, y1, x2, y2)`` ints, ``0 <= x1 < x2 <= width`` and likewise for y, or
        ``None`` when nothing of it lies in the frame.

    Raises:
        ValueError: as :func:`crop_region`.
    """
    cx, cy, w, h, angle = crop_region(box, keypoints)
    t = math.radians(angle)
    c, s = abs(math.cos(t)), abs(math.sin(t))
    bw, bh = w * c + h * s, w * s + h * c
    x1 = max(0, math.floor(cx - bw / 2))
    y1 = max(0, math.floor(cy - bh / 2))
    x2 = min(int(width), math.ceil(cx + bw / 2))
    y2 = min(int(height), math.ceil(cy + bh / 2))
    if x2 <= x1 or y2 <= y1:
        return None
    return x1, y1, x2, y2


def cut_crop(frame: np.ndarray, box, keypoints=None) -> np.ndarray:
    """The upright face crop of a frame by the rule (one affine warp from the frame).

    Args:
        frame: ``(H, W, 3)`` uint8 BGR.
        box, keypoints: as :func:`crop_region`.

    Returns:
        ``(round(height), round(width), 3)`` uint8 BGR (at least 1x1), the face turned
        upright; pixels beyond the frame's edge repeat the edge (``BORDER_REPLICATE``).

    Raises:
        ValueError: a frame that is not ``(H, W, 3)`` uint8, or as :func:`crop_region`.
    """
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 \
            or frame.dtype != np.uint8 or frame.size == 0:
        raise ValueError("frame must be a non-empty (H, W, 3) uint8 BGR array")
    cx, cy, w, h, angle = crop_region(box, keypoints)
    ow, oh = max(1, int(round(w))), max(1, int(round(h)))
    m = cv2.getRotationMatrix2D((cx, cy), -angle, 1.0)
    m[:, 2] += ((ow - 1) / 2.0 - cx, (oh - 1) / 2.0 - cy)
    return cv2.warpAffine(frame, m, (ow, oh), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
