"""Drawing on frames: face boxes and labels (gender, age range)."""

from __future__ import annotations

import cv2
import numpy as np

from common import wire
from common.images import frame_image

#: Box colours (BGR) by gender.
COLOURS = {"female": (180, 105, 255), "male": (255, 160, 40)}
UNKNOWN_COLOUR = (0, 220, 0)


def face_label(face: dict) -> str:
    """Text shown above a box: gender and the age range as the seed's app showed it
    (``"female 26-31"``), or the rounded age in years when the model gives no range."""
    parts = []
    if face.get("gender"):
        parts.append(str(face["gender"]))
    rng = face.get("age_range")
    if rng:
        parts.append(f"{int(rng[0])}-{int(rng[1])}")
    elif face.get("age") is not None:
        parts.append(f"{float(face['age']):.0f}")
    return " ".join(parts) or f"{float(face.get('confidence', 0.0)):.2f}"


def annotate(image: np.ndarray, faces: list[dict]) -> np.ndarray:
    """Draw each face's bounding box and label on ``image`` in place.

    Args:
        image: ``(H, W, 3) uint8`` BGR frame (writable).
        faces: result face maps; ``box`` is ``[x1, y1, x2, y2]`` absolute pixels.

    Returns:
        ``image`` (same array).
    """
    h, w = image.shape[:2]
    scale = max(0.7, min(w, h) / 720.0)  # font 0.35 at 270p, 0.5 at 720p
    thick = max(1, int(round(2 * scale)))
    for face in faces:
        x1, y1, x2, y2 = (int(round(v)) for v in face["box"])
        colour = COLOURS.get(face.get("gender"), UNKNOWN_COLOUR)
        cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), colour, thick)
        text = face_label(face)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, thick)
        ty = y1 - 4 if y1 - th - base - 4 >= 0 else min(h - 1, y2 + th + 4)
        cv2.rectangle(image, (x1, ty - th - base), (x1 + tw + 2, ty + base // 2), colour, -1)
        cv2.putText(image, text, (x1 + 1, ty - base // 2), cv2.FONT_HERSHEY_SIMPLEX,
                    0.5 * scale, (0, 0, 0), thick, cv2.LINE_AA)
    return image


def message_image(msg: wire.Message) -> np.ndarray:
    """The message's frame as a writable ``(H, W, 3) uint8`` BGR array to draw on (JPEG
    payloads decoded by :func:`common.images.frame_image`, with its size check).

    Raises:
        common.images.BadFrame: a JPEG payload cannot be decoded or has another size
            than the header says.
    """
    image = frame_image(msg)
    return image if image.flags.writeable else image.copy()
