"""Detector service: ``frame`` messages -> ``faces`` messages, with face tracks.

Per frame: decode the image (raw ``bgr8`` or JPEG, :func:`common.images.frame_image`) and
run the face detector (a backend of :mod:`common.detectors`, BlazeFace by default) on one
of ``workers`` threads (:func:`services.detector.frames.detect_frame`); then, in the
order the frames arrived, track the faces (:mod:`services.detector.tracking`: norfair per
stream, the face's quality and the classification schedule) and send a ``faces`` message
(:func:`services.detector.frames.faces_message`) whose header keeps every upstream field,
adds ``faces``
(``[{box: [x1, y1, x2, y2] absolute pixels clipped to the frame, confidence: 0..1,
keypoints: [[x, y] x 6] float pixels (BlazeFace only), track: int, quality: 0..1,
classify: bool}]``), ``ended_tracks`` when tracks ended, and stamps ``t_detector_ns``.
The payload follows the ``payload`` setting (:mod:`common.wire`): ``frame`` sends the raw
``(H, W, 3)`` uint8 BGR frame only; ``crops`` sends the frame as JPEG followed by one raw
``(h, w, 3)`` crop per face to classify (cut by :func:`common.crops.face_crop`: upright
by the keypoints, or the box widened to ``crop_aspect``), their shapes in ``crops``.

Frames come from capture through :class:`common.stream_dealer.StreamDealer`: each stream goes to
one detector process (stream affinity), so its tracker sees all its frames in order; the
detector returns a credit for each frame it has finished.

What the detector cannot see: a backend that knows its smallest face
(``smallest_face_px``) gets a warning logged once per stream and frame size when that is
larger than ``expected_min_face_px`` (:class:`services.detector.frames.SmallFaceWarning`).

``eos`` messages pass through losslessly after the stream's frames (its tracker is then
forgotten). When live frames queue up faster than the detector runs, only the newest
live frame per stream is processed and the older ones are counted as dropped
(``superseded``; the tracker counts them as missed frames), so frame age stays bounded;
file frames (``live`` false) and ``eos`` are never dropped and keep their order.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait

import cv2
import zmq
from prometheus_client import Counter

from common import wire
from common.detectors import PHOTO_PAD, make_detector
from common.eos import forward_eos
from common.images import BadFrame
from common.metrics import inference_seconds
from common.service import ServiceRuntime
from common.states import ServiceState
from services.detector.frames import (SmallFaceWarning, detect_frame, faces_message,
                                      newest_live)
from services.detector.tracking import Schedule, Tracking

log = logging.getLogger("detector")

#: Most messages taken from the socket in one go when draining a backlog.
MAX_DRAIN = 64
#: Reasons of ``agegender_classify_decisions_total`` (see :mod:`.tracking`).
DECISIONS = ("new", "better", "periodic", "skip")


class _Detectors:
    """One detector per worker thread (backends are not all thread-safe), lent out for
    one frame at a time; still frames (photos of an image folder) go to one more
    detector, made at the first of them, that also reads the image inside a border of
    :data:`common.detectors.PHOTO_PAD` (close-ups, as ``agegender predict`` does).

    Args:
        make: ``(**settings) -> detector``; called with ``pad`` for the still one.
        n: worker threads.
    """

    def __init__(self, make, n: int):
        self.make = make
        self.free: queue.SimpleQueue = queue.SimpleQueue()
        self.first = make()
        self.free.put(self.first)
        for _ in range(n - 1):
            self.free.put(make())
        self.still = None
        self.still_lock = threading.Lock()

    def detect(self, msg: wire.Message, info: dict):
        """:func:`detect_frame` with a free detector (the photo one for still frames)."""
        if msg.header.get("still"):
            with self.still_lock:
                if self.still is None:
                    self.still = self.make(pad=PHOTO_PAD)
                return detect_frame(msg, self.still, info)
        det = self.free.get()
        try:
            return detect_frame(msg, det, info)
        finally:
            self.free.put(det)


class _Work:
    """One received message in the in-order queue: a frame being detected (``future``)
    or an eos (``future`` None)."""

    def __init__(self, msg: wire.Message, future: Future | None = None):
        self.msg = msg
        self.future = future
        self.info: dict = {}
        self.t0 = time.perf_counter()

    def ready(self) -> bool:
        """True when it can be finished now."""
        return self.future is None or self.future.done()


class DetectorMetrics:
    """Detector-specific metrics (labels created at zero)."""

    def __init__(self, registry):
        self.faces = Counter("agegender_faces_detected_total",
                             "Faces found by the detector.", registry=registry)
        self.decisions = Counter("agegender_classify_decisions_total",
                                 "Faces marked for classification by the detector's "
                                 "schedule, by reason: new (a track's first face), better "
                                 "(clearly better than its best classified face), periodic "
                                 "(classify_every frames since the last), skip (not "
                                 "classified).", ["reason"], registry=registry)
        for r in DECISIONS:
            self.decisions.labels(r)
        self.tracks = Counter("agegender_tracks_started_total",
                              "Face tracks started by the detector's tracker.",
                              registry=registry)

    def on_frame(self, reasons: list) -> None:
        """Count one tracked frame's faces and decisions."""
        self.faces.inc(len(reasons))
        for r in reasons:
            self.decisions.labels(r or "skip").inc()
            if r == "new":
                self.tracks.inc()


def main(cfg, *, stop: threading.Event | None = None, registry=None) -> int:
    """Run the detector service until stopped (SIGINT/SIGTERM or ``stop``).

    Frames are detected on ``cfg.workers`` threads (one detector each) and tracked and
    sent in the order they arrived (a stream's frames arrive in seq order: capture sends
    each stream to one detector process, :class:`common.stream_router.StreamRouter`).

    Args:
        cfg: :class:`services.detector.config.DetectorConfig`.
        stop: stop event (tests running the service in a thread).
        registry: Prometheus registry (tests); a new one when ``None``.

    Returns:
        0 on a clean stop; 2 when the detector model cannot be loaded.
    """
    with ServiceRuntime("detector", cfg, stop=stop, registry=registry) as rt:
        dm = DetectorMetrics(rt.metrics.registry)
        threads = max(1, cfg.threads // cfg.workers)
        try:
            detectors = _Detectors(lambda **extra: make_detector(
                cfg.backend, confidence=cfg.confidence, input_size=cfg.input_size,
                min_face_px=cfg.min_face_px, threads=threads, tiles=cfg.tiles,
                max_tile_side=cfg.max_tile_side,
                refine_roll_degrees=cfg.refine_roll_degrees, **extra), cfg.workers)
        except (FileNotFoundError, ValueError, ImportError, cv2.error) as exc:
            return rt.refuse(f"cannot load the {cfg.backend} face detector: {exc}")
        detector = detectors.first
        infer = inference_seconds(rt.metrics.registry, "detector", detector.name)
        small_faces = SmallFaceWarning(detector, cfg.expected_min_face_px,
                                       cfg.tiles if cfg.backend == "blazeface" else None)
        small_warnings = Counter("agegender_detector_small_face_warnings_total",
                                 "Warnings that the smallest face the detector finds at a "
                                 "stream's frame size is larger than expected_min_face_px "
                                 "(one per stream and frame size), by stream.", ["stream"],
                                 registry=rt.metrics.registry)
        tracking = Tracking(Schedule(cfg.classify_every, cfg.classify_margin),
                            cfg.track_memory_s, cfg.track_max_distance, cfg.quality_ref_px)
        log.info("detector %s on DNN backend %s, %d worker thread(s), payload %s; %s -> %s",
                 detector.name, getattr(detector, "backend", "cpu"), cfg.workers,
                 cfg.payload, cfg.input, cfg.output)
        rx = rt.stream_dealer(cfg.input, window=cfg.hwm + cfg.workers)
        worker = rx.identity.decode()
        log.info("detector worker %s", worker)
        tx = rt.sender(cfg.output)
        rt.health.enter(ServiceState.RUNNING)
        m = rt.metrics
        pool = ThreadPoolExecutor(cfg.workers, thread_name_prefix="detect")
        work: deque[_Work] = deque()

        def finish(item: _Work) -> None:
            """Track, encode and send one frame (or pass an eos on), in arrival order."""
            msg = item.msg
            if msg.kind == "eos":
                tracking.end(msg.stream)
                forward_eos(tx, msg, "detector")
                return
            try:
                image, faces = item.future.result()
            except BadFrame as exc:
                log.warning("frame dropped (bad_image): %s", exc)
                m.drop("bad_image")
                rx.done(msg)
                return
            infer.observe(item.info.get("detect_s", 0.0))
            if small_faces.check(msg.stream, int(msg.header["width"]),
                                 int(msg.header["height"])):
                small_warnings.labels(msg.stream).inc()
            ended, reasons = tracking.update(msg.stream, msg.seq, faces, image,
                                             msg.header.get("fps"),
                                             bool(msg.header.get("still", False)))
            out = faces_message(msg, image, faces, ended, payload=cfg.payload,
                                crop_aspect=cfg.crop_aspect, jpeg_quality=cfg.jpeg_quality,
                                worker=worker)
            m.stage_seconds.labels("detector").observe(time.perf_counter() - item.t0)
            dm.on_frame(reasons)
            # File frames wait for room downstream (nothing lost); live ones are lossy.
            live = bool(msg.header.get("live", False))
            while not live and not rt.stop.is_set() and not tx.sock.poll(200, zmq.POLLOUT):
                rt.health.beat()    # waiting on a slow consumer is not a hang
                rx.heartbeat()
            tx.send(out, "faces", block=not live)
            rx.done(msg)

        try:
            while not rt.stop.is_set():
                rt.health.beat()
                room = cfg.workers + 1 - len(work)
                if room > 0:
                    first = rx.recv(cfg.recv_timeout_ms if not work else 0)
                    batch = [first] if first is not None else []
                    while batch and len(batch) < MAX_DRAIN:  # what is queued, no waiting
                        more = rx.recv(0)
                        if more is None:
                            break
                        batch.append(more)
                    kept, superseded = newest_live(batch)
                    if superseded:
                        m.drop("superseded", superseded)
                        for old in batch:
                            if not any(old is k for k in kept):
                                rx.done(old)
                    for msg in kept:
                        if msg.kind == "frame":
                            item = _Work(msg)
                            item.future = pool.submit(detectors.detect, msg, item.info)
                            work.append(item)
                        elif msg.kind == "eos":
                            work.append(_Work(msg))
                        else:
                            log.debug("ignoring %s message on the frame input", msg.kind)
                            rx.done(msg)
                m.queue_depth.labels("detector").set(len(work))
                while work and work[0].ready():
                    finish(work.popleft())
                    rt.health.beat()
                if work and (room <= 0 or not work[0].ready()):
                    wait([work[0].future], timeout=0.01)
                    rx.heartbeat()
            m.queue_depth.labels("detector").set(0)
        finally:
            if work:
                log.info("stopping (%d frame(s) in progress are dropped)", len(work))
                m.drop("shutdown", sum(1 for w in work if w.msg.kind == "frame"))
            pool.shutdown(wait=False, cancel_futures=True)
        return 0
