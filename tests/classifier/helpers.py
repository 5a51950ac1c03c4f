"""Build ``faces`` messages the way the detector does (real wire encoding)."""

from __future__ import annotations

import time

import numpy as np

from common import wire


def tracked(box, track: int = 1, classify: bool = True, quality: float = 0.5,
            confidence: float = 0.9, **extra) -> dict:
    """A face map as the detector sends it (box, confidence, track, quality, classify)."""
    return {"box": box, "confidence": confidence, "track": track, "quality": quality,
            "classify": classify, **extra}


def faces_message(stream: str, seq: int, n_faces: int, width: int = 64, height: int = 48,
                  live: bool = False, value: int = 100, crops: bool = False,
                  skip: tuple[int, ...] = ()) -> list:
    """Encoded ``faces`` message: a ``height`` x ``width`` frame with ``n_faces`` boxes.

    Face ``i`` is box ``[i*10, 0, i*10 + 9 + i % 2, 12]``, track ``i + 1``; its pixels are
    filled with ``value + i`` so a stand-in model's age shows which crop it saw. Faces
    whose index is in ``skip`` are not to be classified (``classify`` false). The frame
    form (the detector's default payload) unless ``crops``: then the raw frame is followed
    by one crop per face to classify (the crops form with a raw frame).
    """
    image = np.full((height, width, 3), seq % 256, np.uint8)
    faces, cut, shapes = [], [], []
    for i in range(n_faces):
        box = [i * 10, 0, i * 10 + 9 + i % 2, 12]
        image[box[1]:box[3], box[0]:box[2], 0] = value + i
        crop = image[box[1]:box[3], box[0]:box[2]]
        faces.append(tracked(box, track=i + 1, classify=i not in skip))
        if i not in skip:
            cut.append(crop)
            shapes.append([crop.shape[0], crop.shape[1]])
    header = wire.frame_header(stream, seq, time.time_ns(), width, height, live=live,
                               t_detector_ns=time.time_ns())
    header.update(kind="faces", faces=faces)
    if not crops:
        return wire.encode(header, [image])
    header.update(crops=shapes)
    return wire.encode(header, [image] + cut)


def decode_message(frames) -> wire.Message:
    """Decode received multipart frames."""
    return wire.decode(frames)
