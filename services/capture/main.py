"""Capture service: sources -> ``frame`` messages to the detector workers.

The output is a :class:`common.stream_router.StreamRouter`: each stream's frames go to one live
detector worker (stream affinity: the worker tracks faces, which needs all of a stream's
frames in order), with per-worker credit as flow control ("room downstream" below is
credit from the stream's worker).

* Finite sources (files, folders, the demo) are paced at their native frame rate
  (``realtime``, default) or sent as fast as downstream accepts, always with
  backpressure: a frame waits until downstream has room, so none is lost. At the end of a
  non-looping finite source an ``eos`` message is sent losslessly
  (:meth:`common.stream_router.StreamRouter.send_control`, which waits for a worker).
* Live sources (RTSP, HTTP MJPEG, cameras) are lossy: the reader thread keeps only the
  newest frame, and a frame waiting for its turn is replaced by a newer one
  (``superseded``), so a slow pipeline sees fresh frames, never a growing backlog.
* Streams take turns (round-robin, one frame each, while their worker has room), so when
  the stack cannot keep up every stream gets the same share.
* With ``position_file`` each stream's next seq and file position are written before a
  frame is sent, and a capture started again resumes from them (no ``(stream, seq)`` is
  sent twice: :mod:`services.capture.position`); ``status_path`` gets the streams' states
  and the image files skipped, with why (:func:`services.capture.playback.write_status`).

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

import logging
import os
import threading
import time

from common.process import MAX_FILE_PIXELS, image_decoding_limit
from common.redact import redact
from common.service import ServiceRuntime
from common.states import ServiceState
from services.capture.live import prefer_rtsp_over_tcp
from services.capture.messages import eos_message, frame_message
from services.capture.metrics import CaptureMetrics
from services.capture.playback import (Playback, close_sources, gap, open_sources, period,
                                       resume, write_status)
from services.capture.position import PositionFile, read_positions

log = logging.getLogger("capture")

#: Longest time the loop sleeps between ticks (seconds).
TICK_S = 0.05
#: Limit for all end-of-stream sends on shutdown together (seconds), so exit stays well
#: under 2 s even with no peer.
STOP_EOS_TIMEOUT_S = 0.7
#: Limit for the end-of-stream send at the end of a file (seconds).
EOS_TIMEOUT_S = 30.0
#: Seconds between two writes of the status file.
STATUS_EVERY_S = 0.5
#: At a normal end, how long queued frames and end of stream may take to reach the peer
#: before the process exits anyway (seconds).
FLUSH_LINGER_S = 10.0


class _Sender:
    """Sends the streams' frames in turn (round-robin) and keeps their records."""

    def __init__(self, tx, cm: CaptureMetrics, positions: PositionFile | None):
        self.tx = tx
        self.cm = cm
        self.positions = positions
        self.turn = 0  # index of the stream whose turn comes first

    def send_frame(self, p: Playback) -> bool:
        """Send ``p``'s pending frame (there is room downstream); record first."""
        frame, live = p.pending, p.source.live
        seq = p.seq_base + frame.index if live else p.sent
        if self.positions is not None:
            position, pass_, media = p.pending_at
            self.positions.record(p.name, seq + 1, position, pass_, media=media)
        p.pending = None
        msg = frame_message(p.name, seq, frame, live=live, fps=p.source.fps,
                            still=p.source.still)
        if not self.tx.send(msg, "frame", p.name, block=not live):
            return False
        p.sent = seq + 1
        self.cm.captured.labels(p.name).inc()
        return True

    def send_eos(self, p: Playback, reason: str = "end", timeout_s: float = EOS_TIMEOUT_S
                 ) -> bool:
        """Send ``p``'s end of stream losslessly (recorded as ended first)."""
        if self.positions is not None and reason == "end":
            src = p.source
            self.positions.record(p.name, p.sent, getattr(src, "position", 0),
                                  getattr(src, "loops", 0), ended=True)
        ok = self.tx.send_control(eos_message(p.name, p.sent, reason), "eos",
                                  stream=p.name, timeout_s=timeout_s)
        if not ok:
            log.error("stream %s: end of stream not delivered", p.name)
        return ok

    def send_in_turn(self, playbacks: list[Playback]) -> bool:
        """Give each stream with a pending frame its turn while its worker has room
        (credit), starting after the stream that sent last; ``True`` when something was
        sent."""
        n, sent = len(playbacks), False
        for k in range(n):
            i = (self.turn + k) % n
            p = playbacks[i]
            if p.pending is None:
                continue
            if not self.tx.ready(p.name):
                continue  # no room at its worker: streams of other workers may go
            self.send_frame(p)
            self.turn = (i + 1) % n
            sent = True
        return sent


def run_loop(rt: ServiceRuntime, tx, playbacks: list[Playback], cm: CaptureMetrics,
             notify: threading.Event, positions: PositionFile | None = None,
             on_tick=None) -> int:
    """The send loop (see the module docstring). Returns the exit code.

    Every stream takes its next frame when it is due (files: paced; live: the newest
    frame, an older one still waiting is dropped as ``superseded``), then the streams
    send in turn, one frame each, starting after the one that sent last, while
    downstream has room: when the stack cannot keep up every stream gets the same share.

    Args:
        positions: the position file, written before each frame is sent.
        on_tick: called once per loop pass (the status file).
    """
    sender = _Sender(tx, cm, positions)
    start = time.monotonic()
    for p in playbacks:
        p.due = start
        if p.ended:  # ended in an earlier capture: its eos again
            sender.send_eos(p)
            cm.up.labels(p.name).set(0)
    while not rt.stop.is_set():
        rt.health.beat()
        if on_tick is not None:
            on_tick()
        wait_s = TICK_S
        now = time.monotonic()
        for p in playbacks:
            if p.ended:
                continue
            src = p.source
            if src.live:
                src.check()
                if now < p.due:
                    wait_s = min(wait_s, p.due - now)
                    continue
                frame = src.poll()
                if frame is not None:
                    if p.pending is not None:
                        cm.drop("superseded")  # a newer frame replaces one not sent yet
                    p.pending = frame
                    p.due = now + p.period_s
                continue
            if p.pending is not None:
                continue
            if now < p.due:
                wait_s = min(wait_s, p.due - now)
                continue
            frame = src.read()
            if frame is None:
                log.info("stream %s: end of source after %d frames; sending end of "
                         "stream", p.name, p.sent)
                sender.send_eos(p)
                p.ended = True
                cm.up.labels(p.name).set(0)
                continue
            p.pending, p.pending_at = frame, (src.position, src.loops, src.resume_point)
            p.due = max(p.due + gap(rt.cfg, frame), now)
        sent = sender.send_in_turn(playbacks)
        if all(p.ended for p in playbacks):
            log.info("all sources ended: %s", ", ".join(
                f"{p.name}={p.sent} frames" for p in playbacks))
            return 0
        if sent and any(p.pending is None and not p.ended and not p.source.live
                        and p.due <= time.monotonic() for p in playbacks):
            continue  # a file is due again at once
        if any(p.pending is not None for p in playbacks):
            # frames wait for room downstream: wake when a worker returns credit (or a
            # tick passes)
            tx.wait(max(1, int(min(wait_s, TICK_S) * 1000)))
        elif wait_s > 0:
            notify.wait(wait_s)
            notify.clear()
    log.info("stopping: sending end of stream for %d open stream(s)",
             sum(1 for p in playbacks if not p.ended))
    deadline = time.monotonic() + STOP_EOS_TIMEOUT_S
    for p in playbacks:
        if not p.ended:
            sender.send_eos(p, "stopped", timeout_s=max(0.05, deadline - time.monotonic()))
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
    with image_decoding_limit(MAX_FILE_PIXELS), \
            ServiceRuntime("capture", cfg, stop=stop, registry=registry) as rt:
        cm = CaptureMetrics(rt.metrics.registry, rt.metrics)
        notify = threading.Event()
        rt.health.enter(ServiceState.LOADING)
        try:
            sources = open_sources(cfg, cm, notify)
        except (FileNotFoundError, ValueError) as exc:
            return rt.refuse(f"cannot open source: {redact(exc)}")
        try:
            tx = rt.stream_router(cfg.output)
            playbacks = [Playback(s, period(cfg, s)) for s in sources]
            for p in playbacks:
                log.info("stream %s: %s source, %s", p.source.name, p.source.kind,
                         "unpaced" if not p.period_s else
                         f"one frame per {p.period_s * 1000:.0f} ms at most" if p.source.live
                         else "paced by the frames' media time (nominal one per "
                              f"{p.period_s * 1000:.0f} ms)" if cfg.realtime
                         else f"one frame per {p.period_s * 1000:.0f} ms at most")
            next_status = [0.0]

            def on_tick() -> None:
                """Write the status file every STATUS_EVERY_S seconds."""
                if cfg.status_path is not None and time.monotonic() >= next_status[0]:
                    write_status(cfg.status_path, playbacks)
                    next_status[0] = time.monotonic() + STATUS_EVERY_S

            positions = None
            if cfg.position_file is not None:
                resume(playbacks, read_positions(cfg.position_file))
                positions = PositionFile(cfg.position_file,
                                         read_positions(cfg.position_file))
            rt.health.enter(ServiceState.RUNNING)
            log.info("capture ready: %d source(s) -> %s", len(sources), cfg.output)
            try:
                rc = run_loop(rt, tx, playbacks, cm, notify, positions, on_tick)
            finally:
                if positions is not None:
                    positions.close()
                if cfg.status_path is not None:
                    write_status(cfg.status_path, playbacks, done=True)
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
