"""The smallest face a detector finds at a frame size, measured: a real face
(scikit-image's ``astronaut``, public domain) is pasted at decreasing sizes into a
face-free frame at six places (:data:`PASTE_PLACES`); a size counts as found when at least
:data:`FOUND_AT_LEAST` of the pastes are detected (:func:`found_face`). Used by the
detector study (:mod:`services.detector.compare`) and the tests.
"""

from __future__ import annotations

import numpy as np


#: Face patch cut from ``skimage.data.astronaut()`` (512x512 RGB): rows, columns, and the
#: face's box inside the patch (x1, y1, x2, y2), read off the image (cheek to cheek,
#: hairline to chin); the patch keeps hair and shoulders around it.
FACE_PATCH_ROWS = (0, 240)
FACE_PATCH_COLS = (115, 335)
FACE_BOX_IN_PATCH = (60, 65, 160, 175)
#: Where the face is pasted, as fractions of the frame (x, y of the face centre).
PASTE_PLACES = ((0.2, 0.35), (0.5, 0.35), (0.8, 0.35), (0.2, 0.65), (0.5, 0.65), (0.8, 0.65))
#: A size is "found" when this many of the pastes are detected.
FOUND_AT_LEAST = 5


def face_patch() -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The pasted face: ``(patch (240, 220, 3) uint8 BGR, face box in the patch)``."""
    import skimage.data

    rgb = skimage.data.astronaut()
    patch = rgb[FACE_PATCH_ROWS[0]:FACE_PATCH_ROWS[1], FACE_PATCH_COLS[0]:FACE_PATCH_COLS[1]]
    return np.ascontiguousarray(patch[:, :, ::-1]), FACE_BOX_IN_PATCH


def paste_face(background: np.ndarray, face_px: float, centre: tuple[float, float]
               ) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """``background`` with the astronaut's face pasted ``face_px`` pixels wide (cheek to
    cheek), its centre at ``centre`` (pixels, moved inside the frame if needed).

    Returns:
        ``(frame, face box (x1, y1, x2, y2) float pixels)``.
    """
    import cv2

    patch, (fx1, fy1, fx2, fy2) = face_patch()
    s = face_px / (fx2 - fx1)
    ph, pw = max(1, round(patch.shape[0] * s)), max(1, round(patch.shape[1] * s))
    small = cv2.resize(patch, (pw, ph), interpolation=cv2.INTER_AREA if s < 1
                       else cv2.INTER_LINEAR)
    h, w = background.shape[:2]
    if pw > w or ph > h:
        raise ValueError(f"a {face_px} px face does not fit a {w}x{h} frame")
    fcx, fcy = (fx1 + fx2) / 2 * s, (fy1 + fy2) / 2 * s  # face centre in the small patch
    x0 = int(round(min(max(centre[0] - fcx, 0), w - pw)))
    y0 = int(round(min(max(centre[1] - fcy, 0), h - ph)))
    frame = background.copy()
    frame[y0:y0 + ph, x0:x0 + pw] = small
    return frame, (x0 + fx1 * s, y0 + fy1 * s, x0 + fx2 * s, y0 + fy2 * s)


def found_face(detections, face_box) -> bool:
    """Whether a detection matches the pasted face: centre inside the face box, width
    0.4-2.5x the face's."""
    x1, y1, x2, y2 = face_box
    fw = x2 - x1
    for d in detections:
        bx1, by1, bx2, by2 = d.box
        cx, cy = (bx1 + bx2) / 2, (by1 + by2) / 2
        if x1 <= cx <= x2 and y1 <= cy <= y2 and 0.4 * fw <= bx2 - bx1 <= 2.5 * fw:
            return True
    return False


def face_sizes(start: float, stop: float = 4.0, factor: float = 0.85) -> list[float]:
    """Face widths to try, from ``start`` down to ``stop`` pixels, each ``factor`` times
    the one before (rounded to 0.5 px, no repeats)."""
    sizes, s = [], float(start)
    while s >= stop:
        v = round(s * 2) / 2
        if not sizes or v < sizes[-1]:
            sizes.append(v)
        s *= factor
    return sizes


def smallest_face(detector, width: int, height: int, background: np.ndarray | None = None,
                  start: float | None = None) -> float | None:
    """Smallest face width (pixels) ``detector`` finds in a ``width`` x ``height`` frame.

    Sizes shrink by 15 % steps from ``start`` (default: a third of the frame's short side,
    at most 160 px); the answer is the last size found at :data:`FOUND_AT_LEAST` of the
    :data:`PASTE_PLACES` before the first size that is not (``None``: not even the first).

    Args:
        detector: object with ``detect(frame) -> [detection with .box]``.
        width, height: frame size (pixels).
        background: face-free ``(h, w, 3)`` uint8 BGR frame (resized to the size); default
            mid-grey.
        start: first (largest) face width tried.
    """
    import cv2

    if background is None:
        bg = np.full((height, width, 3), 128, np.uint8)
    else:
        bg = cv2.resize(background, (width, height), interpolation=cv2.INTER_AREA)
    patch, (fx1, fy1, fx2, fy2) = face_patch()
    # the whole patch must fit: its height is 240/100 face widths
    fit = min(width * (fx2 - fx1) / patch.shape[1], height * (fx2 - fx1) / patch.shape[0])
    start = min(start or min(160.0, min(width, height) / 3), fit)
    best = None
    for size in face_sizes(start):
        hits = 0
        for fx, fy in PASTE_PLACES:
            frame, box = paste_face(bg, size, (fx * width, fy * height))
            hits += found_face(detector.detect(frame), box)
        if hits < FOUND_AT_LEAST:
            break
        best = size
    return best
