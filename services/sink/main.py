"""Sink service: ``result`` messages in; latency, events, annotated video, live view out.

The receive path does only what must be timed or must not be lost: it measures each
frame's end-to-end latency (receive time minus ``t_capture_ns``) into
``agegender_e2e_latency_seconds``, assigns face tracks and smooths age and gender over
them (median, :mod:`services.sink.tracking`), writes the events.jsonl line (see
:mod:`services.sink.events`) and hands the frame to the :class:`~services.sink.render.Renderer`
thread, which draws, encodes and shows it. The service exits after end of stream on
``expected_streams`` streams (0: runs until stopped).
"""

from __future__ import annotations

import logging
import threading
import time

from prometheus_client import Counter, Histogram

from common.metrics import LATENCY_BUCKETS
from common.service import ServiceRuntime
from services.sink.config import SinkConfig
from services.sink.events import JsonLines, SinkStats, event_record, trace_record, \
    write_json_atomic
from services.sink.render import MJPEGHub, Renderer, VideoOutputs
from services.sink.tracking import FaceTracker

log = logging.getLogger("sink")

#: Seconds between status file writes.
STATUS_EVERY_S = 0.5


class SinkMetrics:
    """Sink-specific metrics in the service's registry."""

    def __init__(self, registry):
        self.e2e = Histogram("agegender_e2e_latency_seconds",
                             "End-to-end latency of a frame: sink receive time minus "
                             "capture time (seconds).", buckets=LATENCY_BUCKETS,
                             registry=registry)
        self.frames = Counter("agegender_sink_frames_total", "Result frames received.",
                              registry=registry)
        self.faces = Counter("agegender_sink_faces_total", "Faces in received result frames.",
                             registry=registry)
        self.eos = Counter("agegender_sink_streams_ended_total",
                           "End-of-stream messages received.", registry=registry)
        self.tracks = Counter("agegender_sink_face_tracks_total",
                              "Face tracks started (about the number of people seen; a "
                              "face lost for longer than track_max_gap_s counts again).",
                              registry=registry)


class StreamEnds:
    """When a stream counts as ended at the sink.

    An ``eos`` message overtakes frames that other detector or classifier workers still
    hold (with one capture PUSHing round-robin to several workers, the eos goes through
    one of them). The eos says how many frames capture sent (``frames``); the stream ends
    once that many results arrived, or when ``grace_s`` seconds pass without another
    result of that stream (frames dropped upstream never come; their drops are counted
    where they happen). An eos without ``frames``, or ``grace_s`` 0, ends the stream at
    once.

    Args:
        grace_s: seconds to wait for a stream's missing results after its eos.
        clock: monotonic clock (seconds), replaceable in tests.
    """

    def __init__(self, grace_s: float, clock=time.monotonic):
        self.grace_s = grace_s
        self.clock = clock
        self.results: dict[str, int] = {}
        self.waiting: dict[str, tuple[int, float]] = {}  # stream -> (frames, deadline)
        self.ended: list[str] = []

    def _end(self, stream: str, how: str) -> list[str]:
        self.waiting.pop(stream, None)
        if stream in self.ended:
            return []
        self.ended.append(stream)
        log.info("end of stream %r (%s; %d result frame(s))", stream, how,
                 self.results.get(stream, 0))
        return [stream]

    def eos(self, stream: str, frames) -> list[str]:
        """An eos for ``stream`` after ``frames`` sent frames; returns the streams that
        ended now."""
        have = self.results.get(stream, 0)
        if not isinstance(frames, int) or isinstance(frames, bool) or self.grace_s <= 0 \
                or have >= frames or stream in self.ended:
            return self._end(stream, "eos")
        self.waiting[stream] = (frames, self.clock() + self.grace_s)
        log.info("eos of %r after %d frames; %d result(s) so far, waiting up to %.1f s "
                 "for the rest", stream, frames, have, self.grace_s)
        return []

    def result(self, stream: str) -> list[str]:
        """A result frame of ``stream`` arrived; returns the streams that ended now."""
        self.results[stream] = self.results.get(stream, 0) + 1
        if stream not in self.waiting:
            return []
        frames, _ = self.waiting[stream]
        if self.results[stream] >= frames:
            return self._end(stream, "all frames in")
        self.waiting[stream] = (frames, self.clock() + self.grace_s)
        return []

    def expire(self) -> list[str]:
        """End the waiting streams whose grace period ran out; returns them."""
        now = self.clock()
        done = []
        for stream, (frames, deadline) in list(self.waiting.items()):
            if now >= deadline:
                log.warning("stream %r: %d of %d frames arrived; no more for %.1f s, "
                            "ending it", stream, self.results.get(stream, 0), frames,
                            self.grace_s)
                done += self._end(stream, "grace period over")
        return done


def main(cfg: SinkConfig, *, stop: threading.Event | None = None, registry=None) -> int:
    """Run the sink until ``expected_streams`` streams ended or it is stopped.

    Args:
        cfg: configuration.
        stop: stop event (embedding and tests); a new one, set by SIGINT/SIGTERM, if None.
        registry: Prometheus registry (tests); a new one if None.

    Returns:
        0 (clean stop or all expected streams ended; frames that could not be rendered
        are counted as dropped ``bad_image`` and logged).
    """
    stop = stop or threading.Event()
    hub = MJPEGHub(stop, cfg.jpeg_quality) \
        if cfg.mjpeg and not cfg.metrics_only and cfg.http_port else None
    with ServiceRuntime("sink", cfg, routes=hub.routes("agegender sink") if hub else None,
                        stop=stop, registry=registry) as rt:
        sm = SinkMetrics(rt.metrics.registry)
        stats = SinkStats()
        events = trace = None
        videos = None
        if cfg.out_dir is not None and not cfg.metrics_only:
            if cfg.events:
                events = JsonLines(cfg.out_dir / "events.jsonl", append=cfg.append)
            if cfg.video:
                videos = VideoOutputs(cfg.out_dir, cfg.video_fps, append=cfg.append)
        if cfg.trace_path is not None:
            trace = JsonLines(cfg.trace_path, append=cfg.append)
        renderer = None
        if not cfg.metrics_only and (videos or hub or cfg.display):
            renderer = Renderer(videos, hub, cfg.display, on_drop=rt.metrics.drop)
        rx = rt.receiver(cfg.input, kinds=("result", "eos"))
        rt.health.set_ready()
        ends = StreamEnds(cfg.eos_grace_s)
        stats.ended = ends.ended  # one list: the status file shows what StreamEnds decided
        tracker = FaceTracker(cfg.track_window, cfg.track_iou, cfg.track_max_gap_s,
                              on_new_track=lambda _stream: sm.tracks.inc())
        finished = False
        next_status = 0.0
        log.info("sink ready: out_dir=%s, live view %s, expected streams %s",
                 cfg.out_dir, f"http://localhost:{rt.http.port}/" if hub else "off",
                 cfg.expected_streams or "unlimited")
        try:
            while not rt.stop.is_set():
                rt.health.beat()
                now = time.monotonic()
                if cfg.status_path is not None and now >= next_status:
                    write_json_atomic(cfg.status_path, stats.snapshot())
                    next_status = now + STATUS_EVERY_S
                msg = rx.recv(cfg.recv_timeout_ms)
                newly_ended = ends.expire()
                if msg is not None and msg.kind == "eos":
                    sm.eos.inc()
                    newly_ended += ends.eos(msg.stream, msg.header.get("frames"))
                for stream in newly_ended:
                    tracker.end(stream)
                if cfg.expected_streams and len(ends.ended) >= cfg.expected_streams:
                    finished = True
                    break
                if msg is None or msg.kind == "eos":
                    continue
                if msg.kind != "result":
                    log.warning("ignored a %r message on the result input", msg.kind)
                    continue
                t_ns = time.time_ns()
                latency = (t_ns - msg.header["t_capture_ns"]) / 1e9
                t0 = time.monotonic()
                faces = tracker.update(msg.stream, msg.header["t_capture_ns"] / 1e9,
                                       msg.header.get("faces", []))
                msg.header["faces"] = faces  # smoothed: events and video show the same
                n_faces = len(faces)
                sm.e2e.observe(max(latency, 0.0))
                sm.frames.inc()
                sm.faces.inc(n_faces)
                stats.add(msg.stream, latency, n_faces)
                for stream in ends.result(msg.stream):
                    tracker.end(stream)
                if events is not None:
                    events.write(event_record(msg.header, latency))
                if trace is not None:
                    trace.write(trace_record(msg.header, t_ns))
                if renderer is not None:
                    renderer.submit(msg, block=not msg.header.get("live", False), stop=rt.stop)
                rt.metrics.stage_seconds.labels("sink").observe(time.monotonic() - t0)
        finally:
            if renderer is not None:
                renderer.close(drain=finished)
            for f in (events, trace):
                if f is not None:
                    f.close()
            if cfg.status_path is not None:
                write_json_atomic(cfg.status_path, stats.snapshot(done=finished))
            snap = stats.snapshot()
            log.info("sink done: %d frames, %d faces, %.1f fps, latency p50 %s p95 %s s",
                     snap["frames"], snap["faces"], snap["fps"], snap["latency_s"]["p50"],
                     snap["latency_s"]["p95"])
    if renderer is not None and renderer.error is not None:
        log.warning("some frames could not be rendered (last error: %s)", renderer.error)
    return 0
