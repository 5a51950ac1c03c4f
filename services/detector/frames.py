"""The detector's work on one frame: find the faces (:func:`detect_faces`,
:func:`detect_frame`), warn when faces may be too small to find
(:class:`SmallFaceWarning`), encode the ``faces`` message (:func:`faces_message`, the
payload forms of :mod:`common.wire`), and keep only the newest live frame per stream in a
backlog (:func:`newest_live`). The service loop is :mod:`services.detector.main`.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from common import wire
from common.crops import face_crop
from common.images import encode_jpeg, frame_image
from services.detector.tracking import Tracking

log = logging.getLogger("detector")


def detect_faces(image: np.ndarray, detector, info: dict | None = None) -> list[dict]:
    """Run ``detector`` on a ``(H, W, 3) uint8`` BGR image.

    Returns:
        ``[{"box": [x1, y1, x2, y2], "confidence": c, "keypoints": [[x, y] x 6]}]``
        (absolute pixels, clipped, non-empty; confidence rounded to 4 decimals, keypoints
        to 0.01 px, only for backends that give them). Detections whose box is empty or
        outside are dropped (defence in depth: the backends already clip and enforce a
        minimum size). ``info["detect_s"]`` gets the model time (seconds) when ``info``
        is given.
    """
    faces = []
    h, w = image.shape[:2]
    t0 = time.perf_counter()
    detections = detector.detect(image)
    if info is not None:
        info["detect_s"] = time.perf_counter() - t0
    for det in detections:
        x1, y1, x2, y2 = (int(v) for v in det.box)
        if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
            log.warning("detector returned an empty or outside box %s for %dx%d; dropped",
                        det.box, w, h)
            continue
        face = {"box": [x1, y1, x2, y2], "confidence": round(float(det.confidence), 4)}
        kps = getattr(det, "keypoints", None)
        if kps is not None:
            face["keypoints"] = [[round(min(max(float(x), 0.0), w), 2),
                                  round(min(max(float(y), 0.0), h), 2)] for x, y in kps]
        faces.append(face)
    return faces


def cut_crops(image: np.ndarray, faces: list[dict], aspect: float | None = None
              ) -> list[np.ndarray]:
    """One ``(h, w, 3)`` crop of ``image`` per face (:func:`common.crops.face_crop`):
    upright by its keypoints when it has them, else its box widened to ``aspect``
    (width/height; ``None``/0: the box as detected)."""
    return [face_crop(image, f["box"], f.get("keypoints"), aspect) for f in faces]


class SmallFaceWarning:
    """Logs once per stream and frame size when faces the cameras show may be too small
    for the detector.

    Args:
        detector: a backend; only one with ``smallest_face_px(width, height)`` is checked.
        expected_min_face_px: smallest face width (pixels) expected in the frames; 0: off.
        tiles: the BlazeFace ``tiles`` setting (the message says when tiling is off).
    """

    def __init__(self, detector, expected_min_face_px: float, tiles: bool | None = None):
        self.smallest = getattr(detector, "smallest_face_px", None)
        self.expected = float(expected_min_face_px)
        self.tiles = tiles
        self.name = getattr(detector, "name", "detector")
        self._seen: set[tuple[str, int, int]] = set()

    def check(self, stream: str, width: int, height: int) -> str | None:
        """The warning for a ``width`` x ``height`` frame of ``stream`` the first time it
        applies (also logged), else ``None``."""
        if self.smallest is None or not self.expected or (stream, width, height) in self._seen:
            return None
        self._seen.add((stream, width, height))
        px = float(self.smallest(width, height))
        if px <= self.expected:
            return None
        hint = (" (tiling is off: set tiles true)" if self.tiles is False else
                " (a smaller max_tile_side finds smaller faces with more tiles, at more "
                "cost; a lower-resolution stream does not)" if self.tiles else "")
        msg = (f"stream {stream}: at {width}x{height} the {self.name} detector finds faces "
               f"from about {px:.0f} px wide, larger than expected_min_face_px "
               f"{self.expected:g}; smaller faces are missed{hint}")
        log.warning("%s", msg)
        return msg


def detect_frame(msg: wire.Message, detector, info: dict | None = None
                 ) -> tuple[np.ndarray, list[dict]]:
    """Decode one ``frame`` message and find its faces (thread-safe for a detector used
    by one thread at a time).

    Returns:
        ``(image, faces)``: the frame ``(H, W, 3) uint8`` BGR and :func:`detect_faces`'s
        faces.

    Raises:
        BadFrame: the image cannot be decoded.
    """
    image = frame_image(msg)
    info = {} if info is None else info
    faces = detect_faces(image, detector, info)
    info["faces"] = len(faces)
    return image, faces


def faces_message(msg: wire.Message, image: np.ndarray, faces: list[dict],
                  ended_tracks: list[int] = (), now_ns=time.time_ns, payload: str = "frame",
                  crop_aspect: float | None = None, jpeg_quality: int = 90,
                  worker: str | None = None) -> list:
    """Encode the ``faces`` message of one tracked frame.

    Args:
        msg: the decoded ``frame`` message (its header fields are kept).
        image: its frame, ``(H, W, 3) uint8`` BGR.
        faces: tracked faces (``track``, ``quality``, ``classify`` set).
        ended_tracks: track ids ended at this frame (header ``ended_tracks``).
        now_ns: clock for the ``t_detector_ns`` stamp (ns since the Unix epoch).
        payload: ``"frame"`` or ``"crops"`` (see the module docstring).
        crop_aspect: ``"crops"`` only: width/height the boxes are widened to.
        jpeg_quality: ``"crops"`` only: JPEG quality of a raw frame sent along.
        worker: this detector worker's name, put in the header as ``detector_worker``
            (which process tracked the frame: logs, traces, tests).

    Returns:
        Multipart frames ready to send: ``[header, frame]`` or
        ``[header, frame JPEG, crop1, ...]`` (one crop per face with ``classify``).
    """
    header = wire.stamp(dict(msg.header, kind="faces", faces=faces), "detector", now_ns())
    if worker:
        header["detector_worker"] = worker
    if ended_tracks:
        header["ended_tracks"] = [int(t) for t in ended_tracks]
    h, w = image.shape[:2]
    header.update(width=int(w), height=int(h), encoding="bgr8")
    if payload != "crops":
        return wire.encode(header, [image])
    crops = cut_crops(image, [f for f in faces if f["classify"]], crop_aspect)
    header.update(encoding="jpeg", crops=[[int(c.shape[0]), int(c.shape[1])] for c in crops])
    jpeg = msg.image_bytes if msg.image is None else encode_jpeg(image, jpeg_quality)
    return wire.encode(header, [jpeg, *crops])


def process_frame(msg: wire.Message, detector, now_ns=time.time_ns, info: dict | None = None,
                  payload: str = "frame", crop_aspect: float | None = None,
                  jpeg_quality: int = 90, tracking: Tracking | None = None) -> list:
    """Turn one ``frame`` message into an encoded ``faces`` message: detect, track
    (``tracking``; ``None``: a tracker of its own, so every face starts a track and is
    classified), encode (:func:`faces_message`).

    Raises:
        BadFrame: the image cannot be decoded.
    """
    info = {} if info is None else info
    image, faces = detect_frame(msg, detector, info)
    tracking = tracking or Tracking()
    ended, info["reasons"] = tracking.update(msg.stream, msg.seq, faces, image,
                                             msg.header.get("fps"),
                                             bool(msg.header.get("still", False)))
    return faces_message(msg, image, faces, ended, now_ns, payload, crop_aspect, jpeg_quality)


def newest_live(messages: list[wire.Message]) -> tuple[list[wire.Message], int]:
    """Keep only the newest live frame per stream, everything else in order.

    Args:
        messages: messages in arrival order.

    Returns:
        ``(kept, superseded)``: the messages to process, in order, and how many older
        live frames were dropped. File frames (``live`` false) and ``eos`` are kept.
    """
    last_live: dict[str, int] = {}
    for i, m in enumerate(messages):
        if m.kind == "frame" and m.header.get("live"):
            last_live[m.stream] = i
    kept = [m for i, m in enumerate(messages)
            if not (m.kind == "frame" and m.header.get("live")) or last_live[m.stream] == i]
    return kept, len(messages) - len(kept)
