"""Face quality: how much a face crop can tell about age and gender (0..1).

The detector scores every face so that it can classify a track's better faces only
(docs/pipeline.md, Classification schedule) and the sink weights each classified face by
its score when it fuses a person's answers (:mod:`common.fusion`). The score is the
product of four sub-scores, each 0..1, so any one weakness (tiny, unsure, blurred,
turned away) pulls the whole score down:

``size``
    ``min(1, short side of the box / ref_px)``. ``ref_px`` 64 is the compact model's input
    side (``models/compact/meta.json``): a larger face gives the model no more pixels.
``confidence``
    the detector's confidence as it is.
``sharpness``
    ``v / (v + sharpness_ref)`` where ``v`` is the variance of the Laplacian (Pech-Pacheco
    et al., "Diatom autofocusing in brightfield microscopy: a comparative study", ICPR
    2000) of the face region in gray, resized to 32 x 32 pixels first (cheap, and the
    same measure for every face size); ``sharpness_ref`` 200 is about the median over
    the faces of the walking clips (206 at 480x270, 231 at 1280x720; head-pose clip 302),
    so a typical face scores 0.5, a blurred one near 0.
``frontal``
    from the six BlazeFace keypoints: ``nose = clip(1 - 2 d, 0, 1)`` with ``d`` the
    nose tip's offset from the eye midpoint along the eye line divided by the eye
    distance (0 for a frontal face; 0.5 when the nose is over an eye, a head turned by
    about 45 degrees), times ``0.5 + 0.5 r`` with ``r`` the ratio of the shorter to the
    longer ear-tragion-to-eye distance (1 frontal, towards 0 as the head turns and one ear
    hides behind the face). Without keypoints (SSD, Haar) it is 1: unknown, not
    penalised.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

#: Face side (pixels) from which size scores 1: the compact model's input side.
REF_PX = 64.0
#: Variance of the Laplacian (32 x 32 gray face) that scores 0.5 in sharpness.
SHARPNESS_REF = 200.0
#: Side (pixels) the face region is resized to before its sharpness is measured.
SHARPNESS_SIDE = 32


@dataclasses.dataclass(frozen=True)
class Quality:
    """A face's quality and its sub-scores (each 0..1; see the module docstring)."""

    size: float
    confidence: float
    sharpness: float
    frontal: float

    @property
    def value(self) -> float:
        """The quality: the product of the sub-scores, 0..1."""
        return self.size * self.confidence * self.sharpness * self.frontal


def sharpness(image: np.ndarray, box, ref: float = SHARPNESS_REF) -> float:
    """Sharpness sub-score of the face ``box`` (``[x1, y1, x2, y2]`` int pixels) in
    ``image`` (``(H, W, 3) uint8`` BGR): ``v / (v + ref)``, ``v`` the variance of the
    Laplacian of the region in gray at 32 x 32 pixels. 0 for an empty region."""
    x1, y1, x2, y2 = (int(v) for v in box)
    region = image[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)]
    if region.size == 0:
        return 0.0
    gray = cv2.cvtColor(region, cv2.COLOR_BGR2GRAY)
    gray = cv2.resize(gray, (SHARPNESS_SIDE, SHARPNESS_SIDE), interpolation=cv2.INTER_AREA)
    v = float(cv2.Laplacian(gray, cv2.CV_32F).var())
    return v / (v + ref) if v > 0 else 0.0


def frontal(keypoints) -> float:
    """Frontal sub-score from six keypoints (:data:`common.geometry.KEYPOINT_NAMES`
    order, pixels); 1 when ``keypoints`` is ``None``."""
    if keypoints is None:
        return 1.0
    kp = np.asarray(keypoints, np.float64)
    right_eye, left_eye, nose, _, right_ear, left_ear = kp[:6]
    eye = left_eye - right_eye
    dist = math.hypot(*eye)
    if dist < 1e-6:
        return 0.0
    axis = eye / dist
    mid = (right_eye + left_eye) / 2.0
    d = abs(float(np.dot(nose - mid, axis))) / dist
    nose_score = min(max(1.0 - 2.0 * d, 0.0), 1.0)
    a = abs(float(np.dot(right_eye - right_ear, axis)))
    b = abs(float(np.dot(left_ear - left_eye, axis)))
    ears = min(a, b) / max(a, b) if max(a, b) > 1e-6 else 1.0
    return nose_score * (0.5 + 0.5 * ears)


def face_quality(image: np.ndarray | None, box, confidence: float, keypoints=None,
                 ref_px: float = REF_PX, sharpness_ref: float = SHARPNESS_REF) -> Quality:
    """The :class:`Quality` of one detected face.

    Args:
        image: the frame, ``(H, W, 3) uint8`` BGR; ``None`` scores sharpness 1 (unknown).
        box: ``[x1, y1, x2, y2]`` int pixels, clipped to the frame.
        confidence: detector confidence, 0..1.
        keypoints: six ``[x, y]`` pixels or ``None``.
        ref_px: face side (pixels) from which size scores 1.
        sharpness_ref: Laplacian variance that scores 0.5.
    """
    x1, y1, x2, y2 = box
    size = min(1.0, max(0.0, min(x2 - x1, y2 - y1)) / ref_px)
    sharp = 1.0 if image is None else sharpness(image, box, sharpness_ref)
    conf = min(max(float(confidence), 0.0), 1.0)
    return Quality(size, conf, sharp, frontal(keypoints))
