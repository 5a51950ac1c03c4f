"""OpenCV's Haar cascade face detector (``haarcascade_frontalface_default.xml``)."""

from __future__ import annotations

import logging
import os

import cv2
import numpy as np

from common.geometry import Detection, clip_box
from common.images import check_bgr8

log = logging.getLogger(__name__)


class HaarDetector:
    """OpenCV Haar cascade (``haarcascade_frontalface_default.xml``), the weaker
    alternative of the seed thesis. ``confidence`` of every detection is 1.0 (the cascade
    gives no calibrated score).

    Args:
        min_face_px: minimum face size (pixels).
        scale_factor: image pyramid step of ``detectMultiScale``.
        min_neighbors: neighbour rectangles needed to keep a detection.
        threads: OpenCV thread budget; ``None`` leaves it.
    """

    name = "haar"
    backend = "cpu"

    def __init__(self, min_face_px: int = 12, scale_factor: float = 1.1, min_neighbors: int = 5,
                 threads: int | None = None):
        if threads is not None:
            cv2.setNumThreads(threads)
        path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise FileNotFoundError(f"cannot load Haar cascade {path}")
        self.min_face_px = min_face_px
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        log.info("Haar cascade face detector on cpu")

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """Find faces in a ``(H, W, 3)`` uint8 BGR frame.

        Raises:
            ValueError: the frame is not a non-empty ``(H, W, 3)`` uint8 array.
        """
        check_bgr8(frame)
        h, w = frame.shape[:2]
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        rects = self.cascade.detectMultiScale(gray, scaleFactor=self.scale_factor,
                                              minNeighbors=self.min_neighbors,
                                              minSize=(self.min_face_px, self.min_face_px))
        dets = []
        for x, y, rw, rh in (rects if len(rects) else []):
            box = clip_box(x, y, x + rw, y + rh, w, h, self.min_face_px)
            if box is not None:
                dets.append(Detection(box, 1.0))
        return dets
