"""Where the classifier's face crop is cut: one function for serving and training.

Training crops and serving crops must be cut by the same rule from the same detector.
:func:`face_crop` is the one entry point: a face with keypoints (BlazeFace) is cut by a
:class:`CropRule`, upright by its eye line, in one affine warp; a face without keypoints
(SSD, Haar, dlib) is its box widened to the model's ``crop_aspect``
(:func:`common.geometry.widen_box`), as the shipped models' crops were cut before.

A crop rule, as small pure functions of a BlazeFace detection (box + six keypoints,
:mod:`common.detectors.blazeface`):

1. **Face size** ``s`` (pixels): the box's side. BlazeFace's box is a stable ruler: 0.99
   of a UTKFace chip's width whatever the face's size in the network input (96, 48 or
   24 px), and :class:`common.detectors.blazeface.BlazeFaceDetector` reads rolled faces
   again upright so their box keeps its upright size (the astronaut of
   :mod:`skimage.data`: 105 px upright, 105-111 px turned by up to +-45 degrees).
2. **Angle**: the eye line's roll (:func:`common.geometry.eye_roll_degrees`, counter-
   clockwise positive), 0 without keypoints.
3. **Crop**: a rectangle ``width * s`` wide and ``height * s`` high, its centre
   ``shift_down * s`` below the box centre along the face's own vertical axis, turned by
   the angle.

Two rules are measured (``docs/detectors.md``):

* :data:`CHIP_RULE` (0.85 x 0.96, 0.024 down) reproduces, on UTKFace chips, the crops the
  shipped models were *trained* on: on 2,100 test-split chips (each with a black border of
  half its side, as ``training/cache.py`` adds for the SSD) the SSD box clipped to the chip
  is 0.847 as wide and 0.964 as high as BlazeFace's box (medians), its centre 0.024 box
  sides lower (median IoU of the rule's crop with it 0.87), and the crop stays inside the
  chip, so a model trained on it sees no border. This is the rule for training on
  BlazeFace crops.
* :data:`SSD_VIDEO_RULE` (1.08 x 1.20, 0.07 up) reproduces the crops the shipped models
  were *served* with in video before BlazeFace: the SSD's video box widened to
  ``crop_aspect`` 0.883 is, relative to BlazeFace's box on the same face, 1.077 wide,
  1.197 high and 0.070 higher (medians over 494 faces of the walking, head-pose, 720p and
  classroom clips). The SSD's video boxes take in more forehead and hair than its boxes on
  chips (which the chip's edge cuts off), and the shipped ``compact`` model reads gender
  much better on those larger crops (walking clip: 23 of 41 frames all right vs 11 with
  :data:`CHIP_RULE`; the SSD path gave 25). It is therefore the default for models whose
  ``meta.json`` names no ``crop_rule`` (every model trained on SSD crops).

A model trained on BlazeFace crops writes its rule into ``meta.json`` as
``"crop_rule": {"width": .., "height": .., "shift_down": ..}`` (:meth:`CropRule.from_meta`).
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from common.geometry import eye_roll_degrees, widen_box
from common.images import check_bgr8


@dataclasses.dataclass(frozen=True)
class CropRule:
    """Crop size and place relative to a BlazeFace box of side ``s``.

    Attributes:
        width: crop width in ``s``.
        height: crop height in ``s``.
        shift_down: crop centre below the box centre in ``s`` (negative: above), along
            the face's own vertical axis.
    """

    width: float
    height: float
    shift_down: float

    def __post_init__(self):
        if not (0 < self.width <= 4 and 0 < self.height <= 4 and abs(self.shift_down) <= 2):
            raise ValueError(f"crop rule out of range: {self}")

    @classmethod
    def from_meta(cls, meta: dict, default: "CropRule | None" = None) -> "CropRule":
        """The rule of a model's ``meta.json`` (``"crop_rule"``), else ``default``
        (:data:`SSD_VIDEO_RULE` when ``None``).

        Raises:
            ValueError: a ``crop_rule`` with missing or out-of-range values.
        """
        rule = meta.get("crop_rule")
        if not rule:
            return default or SSD_VIDEO_RULE
        try:
            return cls(float(rule["width"]), float(rule["height"]), float(rule["shift_down"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"crop_rule needs width, height, shift_down: {rule!r}") from exc


#: Reproduces the shipped models' training crops on UTKFace chips (module docstring).
CHIP_RULE = CropRule(width=0.85, height=0.96, shift_down=0.024)
#: Reproduces the shipped models' served SSD crops in video (module docstring).
SSD_VIDEO_RULE = CropRule(width=1.08, height=1.20, shift_down=-0.07)
#: Rule for models whose ``meta.json`` names none.
DEFAULT_RULE = SSD_VIDEO_RULE


def crop_region(box, keypoints=None, rule: CropRule = DEFAULT_RULE
                ) -> tuple[float, float, float, float, float]:
    """The crop of one face as a rotated rectangle (see the module docstring).

    Args:
        box: ``(x1, y1, x2, y2)`` BlazeFace box, pixels (the larger side is the face size).
        keypoints: six ``(x, y)`` pixels in MediaPipe's order (right eye, left eye, nose
            tip, mouth centre, right ear, left ear), or ``None``; only the eyes are used.
        rule: crop size and place.

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
        angle = eye_roll_degrees(kp)
    t = math.radians(angle)
    # the face's "down" axis in image coordinates (y down) for a roll t (ccw positive)
    down = (math.sin(t), math.cos(t))
    shift = rule.shift_down * size
    cx = (x1 + x2) / 2 + shift * down[0]
    cy = (y1 + y2) / 2 + shift * down[1]
    return cx, cy, rule.width * size, rule.height * size, angle


def crop_box(box, keypoints, width: int, height: int, rule: CropRule = DEFAULT_RULE
             ) -> tuple[int, int, int, int] | None:
    """Axis-aligned bounding box of :func:`crop_region`, rounded outwards and clipped.

    What to cut from the frame so that the upright crop (:func:`cut_crop`) can be made from
    it: for an upright face this is the crop itself.

    Args:
        box, keypoints, rule: as :func:`crop_region`.
        width, height: frame size (pixels).

    Returns:
        ``(x1, y1, x2, y2)`` ints, ``0 <= x1 < x2 <= width`` and likewise for y, or
        ``None`` when nothing of it lies in the frame.

    Raises:
        ValueError: as :func:`crop_region`.
    """
    cx, cy, w, h, angle = crop_region(box, keypoints, rule)
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


def cut_crop(frame: np.ndarray, box, keypoints=None, rule: CropRule = DEFAULT_RULE
             ) -> np.ndarray:
    """The upright face crop of a frame by the rule (one affine warp from the frame).

    Args:
        frame: ``(H, W, 3)`` uint8 BGR.
        box, keypoints, rule: as :func:`crop_region`.

    Returns:
        ``(round(height), round(width), 3)`` uint8 BGR (at least 1x1), the face turned
        upright; pixels beyond the frame's edge repeat the edge (``BORDER_REPLICATE``).

    Raises:
        ValueError: a frame that is not ``(H, W, 3)`` uint8, or as :func:`crop_region`.
    """
    check_bgr8(frame)
    cx, cy, w, h, angle = crop_region(box, keypoints, rule)
    ow, oh = max(1, int(round(w))), max(1, int(round(h)))
    m = cv2.getRotationMatrix2D((cx, cy), -angle, 1.0)
    m[:, 2] += ((ow - 1) / 2.0 - cx, (oh - 1) / 2.0 - cy)
    return cv2.warpAffine(frame, m, (ow, oh), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def face_crop(frame: np.ndarray, box, keypoints=None, aspect: float | None = None,
              rule: CropRule = DEFAULT_RULE) -> np.ndarray:
    """The classifier's crop of one face (see the module docstring).

    Args:
        frame: ``(H, W, 3)`` uint8 BGR.
        box: ``(x1, y1, x2, y2)`` pixels, within the frame (``x2``/``y2`` exclusive).
        keypoints: six ``(x, y)`` pixels (BlazeFace) or ``None``.
        aspect: without keypoints, the width/height the box is widened to (the model's
            ``crop_aspect``; ``None``/0: the box as detected).
        rule: with keypoints, the model's crop rule (``AgeGenderModel.crop_rule``).

    Returns:
        ``(h, w, 3)`` uint8 BGR: with keypoints an upright copy (:func:`cut_crop`),
        without a view of ``frame``.

    Raises:
        ValueError: as :func:`cut_crop`.
    """
    if keypoints is not None:
        return cut_crop(frame, box, keypoints, rule)
    x1, y1, x2, y2 = widen_box(box, aspect, frame.shape[1])
    return frame[y1:y2, x1:x2]
