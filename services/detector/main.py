"""Detector service: ``frame`` messages -> ``faces`` messages (boxes + crops).

Per frame (:func:`process_frame`): decode the image (raw ``bgr8`` or JPEG), run the face
detector (``ssd`` or ``haar``, see :mod:`services.detector.backends`), and send a
``faces`` message whose header keeps every upstream field, adds ``faces``
(``[{box: [x1, y1, x2, y2] absolute pixels clipped to the frame, confidence: 0..1}]``)
and ``crops`` (``[[h, w], ...]``) and stamps ``t_detector_ns``; the payload is
``[frame, crop1, crop2, ...]`` (``(H, W, 3)`` / ``(h, w, 3)`` uint8 BGR raw bytes).

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
from prometheus_client import Counter, Histogram

from common import wire
from common.metrics import LATENCY_BUCKETS
from common.service import ServiceRuntime
from services.detector.backends import make_detector

log = logging.getLogger("detector")

#: Most messages taken from the socket in one go when draining a backlog.
MAX_DRAIN = 64


class BadFrame(ValueError):
    """A frame message whose image cannot be used (undecodable JPEG, wrong layout)."""


def frame_image(msg: wire.Message) -> np.ndarray:
    """The message's image as ``(H, W, 3) uint8`` BGR (JPEG payloads are decoded).

    Raises:
        BadFrame: the JPEG cannot be decoded or its size disagrees with the header.
    """
    if msg.image is not None:
        return msg.image
    data = np.frombuffer(msg.image_bytes or b"", dtype=np.uint8)
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except cv2.error as exc:  # e.g. a header announcing more pixels than the decode limit
        raise BadFrame(f"stream {msg.stream} seq {msg.seq}: JPEG refused by OpenCV "
                       f"({exc.err or exc})") from None
    if image is None:
        raise BadFrame(f"stream {msg.stream} seq {msg.seq}: undecodable "
                       f"{msg.header.get('encoding')} image ({data.size} bytes)")
    h, w = image.shape[:2]
    if (w, h) != (msg.header["width"], msg.header["height"]):
        raise BadFrame(f"stream {msg.stream} seq {msg.seq}: JPEG is {w}x{h}, header says "
                       f"{msg.header['width']}x{msg.header['height']}")
    return image


def detect_faces(image: np.ndarray, detector, timings: dict | None = None
                 ) -> tuple[list[dict], list[np.ndarray]]:
    """Run ``detector`` on a ``(H, W, 3) uint8`` BGR image.

    Returns:
        ``(faces, crops)``: ``faces`` = ``[{"box": [x1, y1, x2, y2], "confidence": c}]``
        (absolute pixels, clipped, non-empty), ``crops`` = matching ``(h, w, 3)`` views.
        Detections whose crop would be empty are dropped (defence in depth: the backends
        already clip and enforce a minimum size). ``timings["detect_s"]`` gets the model
        time (seconds) when ``timings`` is given.
    """
    faces, crops = [], []
    h, w = image.shape[:2]
    t0 = time.perf_counter()
    detections = detector.detect(image)
    if timings is not None:
        timings["detect_s"] = time.perf_counter() - t0
    for det in detections:
        x1, y1, x2, y2 = (int(v) for v in det.box)
        if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
            log.warning("detector returned an empty or outside box %s for %dx%d; dropped",
                        det.box, w, h)
            continue
        crop = det.crop(image)
        if crop.size == 0:
            continue
        faces.append({"box": [x1, y1, x2, y2], "confidence": round(float(det.confidence), 4)})
        crops.append(crop)
    return faces, crops


def process_frame(msg: wire.Message, detector, now_ns=time.time_ns,
                  timings: dict | None = None) -> list:
    """Turn one ``frame`` message into an encoded ``faces`` message.

    Args:
        msg: a decoded ``frame`` message.
        detector: an object with ``detect(image) -> list[Detection]``.
        now_ns: clock for the ``t_detector_ns`` stamp (ns since the Unix epoch).
        timings: when given, ``timings["detect_s"]`` gets the model time (seconds).

    Returns:
        Multipart frames ready to send: ``[header, frame, crop1, ...]``.

    Raises:
        BadFrame: the image cannot be decoded.
    """
    image = frame_image(msg)
    faces, crops = detect_faces(image, detector, timings)
    header = dict(msg.header, kind="faces", faces=faces,
                  crops=[[int(c.shape[0]), int(c.shape[1])] for c in crops])
    header = wire.stamp(header, "detector", now_ns())
    h, w = image.shape[:2]
    header.update(width=int(w), height=int(h), encoding="bgr8")
    return wire.encode(header, [image, *crops])


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
        r = rt.metrics.registry
        faces_total = Counter("agegender_faces_detected_total",
                              "Faces found by the detector.", registry=r)
        inference = Histogram("agegender_inference_seconds",
                              "Model inference time per call (seconds), by stage and model.",
                              ["stage", "model"], buckets=LATENCY_BUCKETS, registry=r)
        try:
            detector = make_detector(cfg.backend, confidence=cfg.confidence,
                                     input_size=cfg.input_size, min_face_px=cfg.min_face_px,
                                     threads=cfg.threads)
        except (FileNotFoundError, ValueError, cv2.error) as exc:
            log.error("cannot load the %s face detector: %s", cfg.backend, exc)
            return 2
        infer = inference.labels("detector", detector.name)
        log.info("detector %s on DNN backend %s; %s -> %s", detector.name,
                 getattr(detector, "backend", "cpu"), cfg.input, cfg.output)
        rx = rt.receiver(cfg.input)
        tx = rt.sender(cfg.output)
        rt.health.set_ready(True, "detecting")
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
                    log.info("stream %s: end of stream passed on", msg.stream)
                    tx.send_control(wire.encode(wire.stamp(msg.header, "detector",
                                                           time.time_ns())), "eos")
                    continue
                if msg.kind != "frame":
                    log.debug("ignoring %s message on the frame input", msg.kind)
                    continue
                t0 = time.perf_counter()
                timings: dict = {}
                try:
                    out = process_frame(msg, detector, timings=timings)
                except BadFrame as exc:
                    log.warning("frame dropped (bad_image): %s", exc)
                    m.drop("bad_image")
                    continue
                infer.observe(timings.get("detect_s", 0.0))
                m.stage_seconds.labels("detector").observe(time.perf_counter() - t0)
                faces_total.inc(len(out) - 2)
                # File frames wait for room downstream (nothing lost); live ones are lossy.
                live = bool(msg.header.get("live", False))
                while not live and not rt.stop.is_set() and not tx.sock.poll(500, zmq.POLLOUT):
                    rt.health.beat()    # waiting on a slow consumer is not a hang
                tx.send(out, "faces", block=not live)
                rt.health.beat()
            m.queue_depth.labels("detector").set(0)
        return 0
