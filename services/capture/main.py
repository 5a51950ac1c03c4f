"""Capture service: sources -> ``frame`` messages on a PUSH socket.

* Finite sources (files, folders, the demo) are paced at their native frame rate
  (``realtime``, default) or sent as fast as downstream accepts, always with
  backpressure: a frame waits until downstream has room, so none is lost. At the end of a
  non-looping finite source an ``eos`` message is sent losslessly
  (:meth:`common.sockets.Sender.send_control`, which rides out the slow-joiner window).
* Live sources (RTSP, HTTP MJPEG, cameras) are sent lossily: when downstream is full the
  frame is dropped (``queue_full``); the reader thread keeps only the newest frame
  (``superseded``), so a slow pipeline sees fresh frames, never a growing backlog.

Every ``frame`` header carries ``stream``, ``seq`` (per stream, from 0; for live sources
the reader's frame count, so gaps are dropped frames), ``t_capture_ns`` (wall clock when
the frame was read), ``width``, ``height``, ``encoding="bgr8"``, ``live`` (bool) and,
when the source reports one, ``fps`` (its native frame rate, frames/s).
An ``eos`` header carries ``stream``, ``seq`` (= number of frames sent), ``frames`` (the
same) and ``reason`` (``"end"`` at the end of a file, ``"stopped"`` on shutdown).

The service exits 0 once every finite source ended (and there is no live source), 2 when a
source cannot be opened, and 0 on SIGINT/SIGTERM.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

import zmq

from common import wire
from common.images import fit_within
from common.process import MAX_FILE_PIXELS, limit_image_decoding
from common.redact import redact
from common.service import ServiceRuntime
from common.states import ServiceState
from common.streams import MAX_STREAM_NAME, parse_spec
from services.capture.finite import FiniteSource
from services.capture.live import LiveSource, prefer_rtsp_over_tcp
from services.capture.metrics import CaptureMetrics
from services.capture.sources import open_source
from services.capture.spec import SourceOptions

log = logging.getLogger("capture")

#: Longest time the loop sleeps between ticks (seconds).
TICK_S = 0.05
#: Limit for all end-of-stream sends on shutdown together (seconds), so exit stays well
#: under 2 s even with no peer.
STOP_EOS_TIMEOUT_S = 0.7
#: Limit for the end-of-stream send at the end of a file (seconds).
EOS_TIMEOUT_S = 30.0
#: At a normal end, how long queued frames and end of stream may take to reach the peer
#: before the process exits anyway (seconds).
FLUSH_LINGER_S = 10.0


@dataclasses.dataclass
class _Playback:
    """Per-stream state of the send loop."""

    source: FiniteSource | LiveSource
    period_s: float             # minimum seconds between two sent frames (0 = no pacing;
                                # finite sources: the nominal rate, see _gap)
    due: float = 0.0            # monotonic time the next frame may be sent
    pending: list | None = None  # encoded frame waiting for room downstream (finite)
    sent: int = 0
    ended: bool = False


def frame_message(stream: str, seq: int, frame, live: bool, fps: float = 0.0) -> list:
    """Encode one captured frame (:class:`services.capture.spec.SourceFrame`) as a
    ``frame`` message (``frame_header`` fields plus ``live``, ``t_media_ns`` (the frame's
    media time) and, when known, ``fps``: the source's frame rate in frames/s).

    A frame larger than the wire takes is downscaled to fit first (:func:`fit_frame`;
    finite sources did so already, counted)."""
    image = fit_frame(frame.image)
    h, w = image.shape[:2]
    extra = {"fps": round(float(fps), 3)} if 0 < fps <= 1000 else {}
    header = wire.frame_header(stream, seq, frame.t_capture_ns, w, h, live=live,
                               t_media_ns=max(int(frame.t_media_ns), 0), **extra)
    return wire.encode_frame(header, image)


def fit_frame(image):
    """``image`` downscaled to fit the wire (:data:`common.wire.MAX_SIDE` a side,
    :data:`common.wire.MAX_FRAME_PIXELS` in all), logged once per size; the same array
    when it fits."""
    small = fit_within(image, wire.MAX_SIDE, wire.MAX_FRAME_PIXELS)
    size = image.shape[1], image.shape[0]
    if small is not image and size not in _DOWNSCALED_SIZES:
        _DOWNSCALED_SIZES.add(size)
        log.warning("frames of %dx%d are larger than the wire allows: sent downscaled to "
                    "%dx%d", *size, small.shape[1], small.shape[0])
    return small


_DOWNSCALED_SIZES: set = set()


def eos_message(stream: str, frames_sent: int, reason: str = "end") -> list:
    """Encode an ``eos`` message for ``stream`` after ``frames_sent`` frames."""
    return wire.encode({"kind": "eos", "stream": stream, "seq": frames_sent,
                        "t_capture_ns": time.time_ns(), "frames": frames_sent,
                        "reason": reason, "live": False})


def open_sources(cfg, metrics: CaptureMetrics, notify: threading.Event) -> list:
    """Open every configured source (the demo when none is configured).

    Stream names are made unique by appending ``_2``, ``_3``... to repeats.

    Raises:
        FileNotFoundError, ValueError: a finite source cannot be opened.
    """
    options = SourceOptions.from_config(cfg)
    specs = list(cfg.sources) or ["demo"]
    if not cfg.sources:
        log.info("no --sources given: playing the built-in DEMO scene")
    sources, names = [], set()
    try:
        for i, spec in enumerate(specs):
            name, _ = parse_spec(spec, i)
            base, n = name, 1
            while name in names:
                n += 1
                name = f"{base[:MAX_STREAM_NAME - len(str(n)) - 1]}_{n}"
            names.add(name)
            sources.append(open_source(spec, options, metrics, index=i, notify=notify,
                                       name=name))
    except Exception:
        close_sources(sources)
        raise
    return sources


def close_sources(sources: list, wait_s: float = 1.0) -> None:
    """Close all sources; live readers get ``wait_s`` seconds in total to finish."""
    for s in sources:
        if isinstance(s, LiveSource):
            s.request_close()  # signal all first, then join with a shared deadline
    deadline = time.monotonic() + wait_s
    for s in sources:
        if isinstance(s, LiveSource):
            if not s.join(deadline - time.monotonic()):
                log.warning("stream %s: reader still inside a read; left behind (daemon)",
                            s.name)
        else:
            s.close()


def _period(cfg, source) -> float:
    cap = 1.0 / cfg.max_fps if cfg.max_fps else 0.0
    if isinstance(source, LiveSource):
        return cap
    native = 1.0 / source.fps if cfg.realtime and source.fps else 0.0
    return max(native, cap)


def _gap(cfg, frame) -> float:
    """Seconds from a finite source's frame to its next one: the frame's own media
    duration in real-time mode (variable frame rates are kept), at least ``1 / max_fps``."""
    cap = 1.0 / cfg.max_fps if cfg.max_fps else 0.0
    media = frame.duration_ns / 1e9 if cfg.realtime else 0.0
    return max(media, cap)


def run_loop(rt: ServiceRuntime, tx, playbacks: list[_Playback], cm: CaptureMetrics,
             notify: threading.Event) -> int:
    """The send loop (see the module docstring). Returns the exit code."""
    finite = [p for p in playbacks if not p.source.live]
    live = [p for p in playbacks if p.source.live]
    start = time.monotonic()
    for p in finite:
        p.due = start
    while not rt.stop.is_set():
        rt.health.beat()
        wait_s = TICK_S
        now = time.monotonic()
        for p in finite:
            if p.ended:
                continue
            if p.pending is None:
                if now < p.due:
                    wait_s = min(wait_s, p.due - now)
                    continue
                frame = p.source.read()
                if frame is None:
                    log.info("stream %s: end of source after %d frames; sending end of "
                             "stream", p.source.name, p.sent)
                    ok = tx.send_control(
                        eos_message(p.source.name, p.sent), "eos", timeout_s=EOS_TIMEOUT_S)
                    if not ok:
                        log.error("stream %s: end of stream not delivered", p.source.name)
                    p.ended = True
                    cm.up.labels(p.source.name).set(0)
                    continue
                p.pending = frame_message(p.source.name, p.sent, frame, live=False,
                                          fps=p.source.fps)
                p.due = max(p.due + _gap(rt.cfg, frame), now)
            # Room downstream (POLLOUT) means the blocking send returns at once; otherwise
            # keep the frame and come back: backpressure without blocking other streams.
            if tx.sock.poll(0, zmq.POLLOUT) and tx.send(p.pending, "frame", block=True):
                p.pending = None
                p.sent += 1
                cm.captured.labels(p.source.name).inc()
                if p.due <= time.monotonic():
                    wait_s = 0.0
            else:
                wait_s = min(wait_s, 0.005)
        for p in live:
            src = p.source
            src.check()
            if now < p.due:
                wait_s = min(wait_s, p.due - now)
                continue
            frame = src.poll()
            if frame is None:
                continue
            if tx.send(frame_message(src.name, frame.index, frame, live=True, fps=src.fps),
                       "frame", block=False):
                p.sent += 1
                cm.captured.labels(src.name).inc()
            p.due = now + p.period_s
        if live == [] and all(p.ended for p in finite):
            log.info("all sources ended: %s", ", ".join(
                f"{p.source.name}={p.sent} frames" for p in finite))
            return 0
        if wait_s > 0:
            notify.wait(wait_s)
            notify.clear()
    log.info("stopping: sending end of stream for %d open stream(s)",
             sum(1 for p in playbacks if not p.ended))
    deadline = time.monotonic() + STOP_EOS_TIMEOUT_S
    for p in playbacks:
        if not p.ended:
            tx.send_control(eos_message(p.source.name, p.sent, reason="stopped"), "eos",
                            timeout_s=max(0.05, deadline - time.monotonic()))
    return 0


def main(cfg, *, stop: threading.Event | None = None, registry=None) -> int:
    """Run the capture service until its finite sources end or it is stopped.

    Args:
        cfg: :class:`services.capture.config.CaptureConfig`.
        stop: stop event (tests running the service in a thread); SIGINT/SIGTERM set it.
        registry: Prometheus registry to use (tests); a new one when ``None``.

    Returns:
        0 after all finite sources ended or on stop; 2 when a source cannot be opened.
    """
    prefer_rtsp_over_tcp()
    # Image folders may hold phone photos larger than a message takes (sent downscaled):
    # decode files up to MAX_FILE_PIXELS.
    limit_image_decoding(MAX_FILE_PIXELS)
    with ServiceRuntime("capture", cfg, stop=stop, registry=registry) as rt:
        cm = CaptureMetrics(rt.metrics.registry, rt.metrics)
        notify = threading.Event()
        rt.health.enter(ServiceState.LOADING)
        try:
            sources = open_sources(cfg, cm, notify)
        except (FileNotFoundError, ValueError) as exc:
            return rt.refuse(f"cannot open source: {redact(exc)}")
        try:
            tx = rt.sender(cfg.output)
            playbacks = [_Playback(s, _period(cfg, s)) for s in sources]
            for p in playbacks:
                log.info("stream %s: %s source, %s", p.source.name, p.source.kind,
                         "unpaced" if not p.period_s else
                         f"one frame per {p.period_s * 1000:.0f} ms at most" if p.source.live
                         else "paced by the frames' media time (nominal one per "
                              f"{p.period_s * 1000:.0f} ms)" if cfg.realtime
                         else f"one frame per {p.period_s * 1000:.0f} ms at most")
            rt.health.enter(ServiceState.RUNNING)
            log.info("capture ready: %d source(s) -> %s", len(sources), cfg.output)
            rc = run_loop(rt, tx, playbacks, cm, notify)
            if not rt.stop.is_set():
                rt.health.enter(ServiceState.DRAINING)
                # Normal end: frames and end of stream may still sit in ZeroMQ's queue; the
                # runtime closes sockets with LINGER=0, which would discard them. Close this
                # one with a linger: the context's term() then waits until they are
                # delivered (or FLUSH_LINGER_S passes when the peer is gone).
                tx.sock.close(linger=int(FLUSH_LINGER_S * 1000))
            return rc
        finally:
            close_sources(sources)
