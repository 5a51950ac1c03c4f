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
  and the image files skipped, with why (:func:`write_status`).

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
import json
import logging
import os
import threading
import time

from common import wire
from common.images import fit_within
from common.process import MAX_FILE_PIXELS, image_decoding_limit
from common.redact import redact
from common.service import ServiceRuntime
from common.states import ServiceState
from common.streams import MAX_STREAM_NAME, parse_spec
from services.capture.finite import FiniteSource
from services.capture.live import LiveSource, prefer_rtsp_over_tcp
from services.capture.metrics import CaptureMetrics
from services.capture.position import PositionFile, read_positions
from services.capture.sources import open_source
from services.capture.spec import SourceFrame, SourceOptions

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


@dataclasses.dataclass
class _Playback:
    """Per-stream state of the send loop."""

    source: FiniteSource | LiveSource
    period_s: float             # minimum seconds between two sent frames (0 = no pacing;
                                # finite sources: the nominal rate, see _gap)
    due: float = 0.0            # monotonic time the next frame may be taken
    pending: SourceFrame | None = None  # frame waiting for its turn and room downstream
    pending_at: tuple = (0, 0, None)  # (position, pass, media) of the source after it
    sent: int = 0               # next seq (frames sent or lost before it)
    seq_base: int = 0           # live sources: seq = seq_base + the reader's frame index
    ended: bool = False

    @property
    def name(self) -> str:
        """The stream name."""
        return self.source.name


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


def resume(playbacks: list[_Playback], records: dict[str, dict]) -> None:
    """Continue each stream where an earlier capture left it (its position file's
    records, :mod:`services.capture.position`): files at their next frame, every stream
    numbered from its next seq. Streams that had ended stay ended (their end of stream
    is sent again: the one before may have been lost with the process)."""
    for p in playbacks:
        rec = records.get(p.name)
        if rec is None:
            continue
        p.sent = rec["seq"]
        if p.source.live:
            p.seq_base = rec["seq"]
            log.info("stream %s: resuming live numbering at seq %d (position file)",
                     p.name, p.sent)
            continue
        if rec["ended"]:
            p.ended = True
            log.info("stream %s: had ended after seq %d (position file)", p.name, p.sent - 1)
            continue
        p.source.seek(rec["position"], rec["pass"], rec.get("media"))
        log.info("stream %s: resuming at position %d of pass %d, seq %d (position file)",
                 p.name, rec["position"], rec["pass"] + 1, p.sent)


class _Sender:
    """Sends the streams' frames in turn (round-robin) and keeps their records."""

    def __init__(self, tx, cm: CaptureMetrics, positions: PositionFile | None):
        self.tx = tx
        self.cm = cm
        self.positions = positions
        self.turn = 0  # index of the stream whose turn comes first

    def send_frame(self, p: _Playback) -> bool:
        """Send ``p``'s pending frame (there is room downstream); record first."""
        frame, live = p.pending, p.source.live
        seq = p.seq_base + frame.index if live else p.sent
        if self.positions is not None:
            position, pass_, media = p.pending_at
            self.positions.record(p.name, seq + 1, position, pass_, media=media)
        p.pending = None
        msg = frame_message(p.name, seq, frame, live=live, fps=p.source.fps)
        if not self.tx.send(msg, "frame", p.name, block=not live):
            return False
        p.sent = seq + 1
        self.cm.captured.labels(p.name).inc()
        return True

    def send_eos(self, p: _Playback, reason: str = "end", timeout_s: float = EOS_TIMEOUT_S
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

    def send_in_turn(self, playbacks: list[_Playback]) -> bool:
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


def stream_status(p: _Playback) -> dict:
    """One stream's entry of the status file (see :func:`write_status`)."""
    src = p.source
    entry = {"kind": src.kind, "live": src.live, "sent": p.sent}
    if src.live:
        entry.update(state=src.state.value, since=src.since, reconnects=src.reconnects,
                     last_error=src.last_error, frames_read=src.frames_read)
    else:
        entry.update(state="ended" if p.ended else "playing",
                     skipped=getattr(src, "skipped", 0))
        if getattr(src, "ended_early", 0):  # a video file shorter than it states
            entry.update(stated_frames=src.stated_frames, short=src.ended_early,
                         damaged=src.decoder.decode_errors)
    return entry


def write_status(path, playbacks: list[_Playback], done: bool = False) -> None:
    """Write capture's status file (atomic replace; a failure is logged)::

        {"streams": {"<stream>": {"kind": str, "live": bool, "sent": int,
                                  "state": "playing" | "ended" (files) or the live
                                      source's state ("connecting", "up", "down",
                                      "reconnecting", "closed"),
                                  "since": float (Unix s, live), "reconnects": int (live),
                                  "last_error": str | null (live, URI redacted),
                                  "frames_read": int (live), "skipped": int (files),
                                  "stated_frames": int, "short": int, "damaged": int
                                      (a video file that ended short of the frame
                                      count it states: by how many, and how many
                                      damaged frames were skipped)}},
         "skipped": [{"stream": str, "file": str, "reason": str}] (files of image folders
             that could not be read, the first 1000 per folder),
         "done": bool, "time": float (Unix s)}

    ``agegender run`` reads it for the console (each live source's state) and the
    summary (sources down, files skipped and why).
    """
    skipped = [{"stream": p.name, "file": f, "reason": r} for p in playbacks
               for f, r in getattr(p.source, "skipped_files", [])]
    data = {"streams": {p.name: stream_status(p) for p in playbacks}, "skipped": skipped,
            "done": done, "time": time.time()}
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError as exc:
        log.error("cannot write the status file %s: %s", path, exc)


def run_loop(rt: ServiceRuntime, tx, playbacks: list[_Playback], cm: CaptureMetrics,
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
            p.due = max(p.due + _gap(rt.cfg, frame), now)
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
            playbacks = [_Playback(s, _period(cfg, s)) for s in sources]
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
