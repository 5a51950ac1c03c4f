"""Detector service: ``frame`` messages -> ``faces`` messages.

Per frame (:func:`process_frame`): decode the image (raw ``bgr8`` or JPEG,
:func:`common.images.frame_image`), run the face detector (a backend of
:mod:`common.detectors`, BlazeFace by default), and send a ``faces`` message whose header
keeps every upstream field, adds ``faces`` (``[{box: [x1, y1, x2, y2] absolute pixels
clipped to the frame, confidence: 0..1, keypoints: [[x, y] x 6] float pixels (BlazeFace
only)}]``) and stamps ``t_detector_ns``. The payload follows the ``payload`` setting
(:mod:`common.wire`): ``frame`` sends the raw ``(H, W, 3)`` uint8 BGR frame only;
``crops`` sends the frame as JPEG followed by one raw ``(h, w, 3)`` crop per face (cut by
:func:`common.crops.face_crop`: upright by the keypoints, or the box widened to
``crop_aspect``), their shapes in ``crops``.

What the detector cannot see: a backend that knows its smallest face
(``smallest_face_px``) gets a warning logged once per stream and frame size when that is
larger than ``expected_min_face_px`` (:class:`SmallFaceWarning`).

``eos`` messages pass through losslessly. When live frames queue up faster than the
detector runs, only the newest live frame per stream is processed and the older ones
are counted as dropped (``superseded``), so frame age stays bounded; file frames
(``live`` false) and ``eos`` are never dropped and keep their order.
"""

from __future__ import annotations

import logging
import threading
import time

import cv2
import numpy as np
import zmq
from prometheus_client import Counter

from common import wire
from common.detectors import make_detector
from common.eos import forward_eos
from common.crops import face_crop
from common.images import BadFrame, encode_jpeg, frame_image
from common.metrics import inference_seconds
from common.service import ServiceRuntime
from common.states import ServiceState

log = logging.getLogger("detector")

#: Most messages taken from the socket in one go when draining a backlog.
MAX_DRAIN = 64


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


def process_frame(msg: wire.Message, detector, now_ns=time.time_ns, info: dict | None = None,
                  payload: str = "frame", crop_aspect: float | None = None,
                  jpeg_quality: int = 90) -> list:
    """Turn one ``frame`` message into an encoded ``faces`` message.

    Args:
        msg: a decoded ``frame`` message.
        detector: an object with ``detect(image) -> list[Detection]``.
        now_ns: clock for the ``t_detector_ns`` stamp (ns since the Unix epoch).
        info: when given, gets ``detect_s`` (model time, seconds) and ``faces`` (count).
        payload: ``"frame"`` or ``"crops"`` (see the module docstring).
        crop_aspect: ``"crops"`` only: width/height the boxes are widened to.
        jpeg_quality: ``"crops"`` only: JPEG quality of a raw frame sent along.

    Returns:
        Multipart frames ready to send: ``[header, frame]`` or
        ``[header, frame JPEG, crop1, ...]``.

    Raises:
        BadFrame: the image cannot be decoded.
    """
    image = frame_image(msg)
    info = {} if info is None else info
    faces = detect_faces(image, detector, info)
    info["faces"] = len(faces)
    header = wire.stamp(dict(msg.header, kind="faces", faces=faces), "detector", now_ns())
    h, w = image.shape[:2]
    header.update(width=int(w), height=int(h), encoding="bgr8")
    if payload != "crops":
        return wire.encode(header, [image])
    crops = cut_crops(image, faces, crop_aspect)
    header.update(encoding="jpeg", crops=[[int(c.shape[0]), int(c.shape[1])] for c in crops])
    jpeg = msg.image_bytes if msg.image is None else encode_jpeg(image, jpeg_quality)
    return wire.encode(header, [jpeg, *crops])


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


def main(cfg, *, stop: threading.Event | None = None, registry=None) -> int:
    """Run the detector service until stopped (SIGINT/SIGTERM or ``stop``).

    Args:
        cfg: :class:`services.detector.config.DetectorConfig`.
        stop: stop event (tests running the service in a thread).
        registry: Prometheus registry (tests); a new one when ``None``.

    Returns:
        0 on a clean stop; 2 when the detector model cannot be loaded.
    """
    with ServiceRuntime("detector", cfg, stop=stop, registry=registry) as rt:
        faces_total = Counter("agegender_faces_detected_total",
                              "Faces found by the detector.", registry=rt.metrics.registry)
        try:
            detector = make_detector(cfg.backend, confidence=cfg.confidence,
                                     input_size=cfg.input_size, min_face_px=cfg.min_face_px,
                                     threads=cfg.threads, tiles=cfg.tiles,
                                     max_tile_side=cfg.max_tile_side,
                                     refine_roll_degrees=cfg.refine_roll_degrees)
        except (FileNotFoundError, ValueError, ImportError, cv2.error) as exc:
            return rt.refuse(f"cannot load the {cfg.backend} face detector: {exc}")
        infer = inference_seconds(rt.metrics.registry, "detector", detector.name)
        small_faces = SmallFaceWarning(detector, cfg.expected_min_face_px,
                                       cfg.tiles if cfg.backend == "blazeface" else None)
        small_warnings = Counter("agegender_detector_small_face_warnings_total",
                                 "Warnings that the smallest face the detector finds at a "
                                 "stream's frame size is larger than expected_min_face_px "
                                 "(one per stream and frame size), by stream.", ["stream"],
                                 registry=rt.metrics.registry)
        log.info("detector %s on DNN backend %s, payload %s; %s -> %s", detector.name,
                 getattr(detector, "backend", "cpu"), cfg.payload, cfg.input, cfg.output)
        rx = rt.receiver(cfg.input, kinds=("frame", "eos"))
        tx = rt.sender(cfg.output)
        rt.health.enter(ServiceState.RUNNING)
        m = rt.metrics
        while not rt.stop.is_set():
            rt.health.beat()
            first = rx.recv(cfg.recv_timeout_ms)
            if first is None:
                continue
            batch = [first]
            while len(batch) < MAX_DRAIN:  # take what is already queued, without waiting
                more = rx.recv(0)
                if more is None:
                    break
                batch.append(more)
            batch, superseded = newest_live(batch)
            if superseded:
                m.drop("superseded", superseded)
            m.queue_depth.labels("detector").set(len(batch))
            for msg in batch:
                if msg.kind == "eos":
                    forward_eos(tx, msg, "detector")
                    continue
                if msg.kind != "frame":
                    log.debug("ignoring %s message on the frame input", msg.kind)
                    continue
                t0 = time.perf_counter()
                info: dict = {}
                try:
                    out = process_frame(msg, detector, info=info, payload=cfg.payload,
                                        crop_aspect=cfg.crop_aspect,
                                        jpeg_quality=cfg.jpeg_quality)
                except BadFrame as exc:
                    log.warning("frame dropped (bad_image): %s", exc)
                    m.drop("bad_image")
                    continue
                infer.observe(info.get("detect_s", 0.0))
                if small_faces.check(msg.stream, int(msg.header["width"]),
                                     int(msg.header["height"])):
                    small_warnings.labels(msg.stream).inc()
                m.stage_seconds.labels("detector").observe(time.perf_counter() - t0)
                faces_total.inc(info["faces"])
                # File frames wait for room downstream (nothing lost); live ones are lossy.
                live = bool(msg.header.get("live", False))
                while not live and not rt.stop.is_set() and not tx.sock.poll(500, zmq.POLLOUT):
                    rt.health.beat()    # waiting on a slow consumer is not a hang
                tx.send(out, "faces", block=not live)
                rt.health.beat()
            m.queue_depth.labels("detector").set(0)
        return 0
