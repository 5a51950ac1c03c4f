"""Sink service: ``result`` messages in; latency, events, annotated video, live view out.

The receive path does only what must be timed or must not be lost: it measures each
frame's end-to-end latency (receive time minus ``t_capture_ns``) into
``agegender_e2e_latency_seconds``, fuses each face's track into a person
(:mod:`services.sink.people`: every face shows its person's fused age and gender),
writes the record outputs (events.jsonl, the trace: :mod:`services.sink.events`; MQTT
when on: :mod:`services.sink.mqtt_output`), writes a person event to them
(people.jsonl, MQTT) for each person that ended, and hands the frame to the
:class:`~services.sink.render.Renderer` thread, which draws it and writes the image
outputs (annotated video, MJPEG live view, window). Every output sits behind the small
interface of :mod:`services.sink.outputs`, so one failing output does not stop the others.
The service exits after end of stream on ``expected_streams`` streams (see
:mod:`services.sink.streams`; 0: runs until stopped).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram

from common.images import frame_image
from common.metrics import LATENCY_BUCKETS
from common.outdir import OutDirError, OutDirLock
from common.service import ServiceRuntime
from common.states import ServiceState
from services.sink.config import SinkConfig
from services.sink.display import DisplayOutput
from services.sink.events import (PeopleOutput, cut_torn_line, events_output, read_tail,
                                  trace_output)
from services.sink.mjpeg import MJPEGHub
from services.sink.mqtt import MqttMetrics
from services.sink.mqtt_output import MqttOutput
from services.sink.outputs import Output, OutputSet, SinkResult
from services.sink.render import Renderer
from services.sink.people import AGE_BAND_LABELS, GENDER_LABELS, People, age_band
from services.sink.stats import SinkStats, read_status, write_json_atomic
from services.sink.streams import StreamEnds
from services.sink.video import VideoOutput

log = logging.getLogger("sink")

#: Seconds between status file writes.
STATUS_EVERY_S = 0.5
#: Buckets of ``agegender_person_dwell_seconds`` (seconds: 1 s to 1 h).
DWELL_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)


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
        self.people = Counter("agegender_people_total",
                              "People counted (person events), by stream, fused gender "
                              "and age band (unknown: never classified).",
                              ["stream", "gender", "age_band"], registry=registry)
        self.dwell = Histogram("agegender_person_dwell_seconds",
                               "How long each counted person was seen (seconds), by "
                               "stream.", ["stream"], buckets=DWELL_BUCKETS,
                               registry=registry)
        self.in_view = Gauge("agegender_people_in_view",
                             "People whose track is open now, by stream.", ["stream"],
                             registry=registry)
        self._streams: set[str] = set()
        self.output_errors = Counter("agegender_sink_output_errors_total",
                                     "Errors raised by one sink output (open, write or "
                                     "close), by output; the other outputs go on.",
                                     ["output"], registry=registry)

    def stream(self, stream: str) -> None:
        """Create a new stream's person metrics at zero (every gender and age band)."""
        if stream in self._streams:
            return
        self._streams.add(stream)
        for g in GENDER_LABELS:
            for b in AGE_BAND_LABELS:
                self.people.labels(stream, g, b)
        self.dwell.labels(stream)
        self.in_view.labels(stream).set(0)

    def person(self, event: dict) -> None:
        """Count one person event."""
        self.stream(event["stream"])
        self.people.labels(event["stream"], event["gender"] or "unknown",
                           age_band(event["age"])).inc()
        self.dwell.labels(event["stream"]).observe(event["dwell_s"])


def build_outputs(cfg: SinkConfig, hub: MJPEGHub | None, errors=None,
                  mqtt_metrics: MqttMetrics | None = None) -> tuple[OutputSet, OutputSet]:
    """The configured outputs, opened: ``(record outputs, image outputs)``.

    Record outputs (events.jsonl, people.jsonl, the trace, MQTT) are written on the
    receive path (person events go to each one's ``write_person``); image
    outputs (annotated video, the MJPEG ``hub``, a window) by the renderer thread.
    ``metrics_only`` leaves out everything but the trace.

    Args:
        cfg: the sink's configuration.
        hub: the live view, when served.
        errors: ``agegender_sink_output_errors_total`` counter (``output`` label).
        mqtt_metrics: the MQTT output's metrics (a registry of their own when ``None``).
    """
    outputs: list[Output] = []
    if cfg.out_dir is not None and not cfg.metrics_only:
        if cfg.events:
            outputs.append(events_output(events_path(cfg), cfg.append))
        if cfg.people:
            outputs.append(PeopleOutput(cfg.out_dir / "people.jsonl", cfg.append))
        if cfg.video:
            outputs.append(VideoOutput(cfg.out_dir, cfg.video_fps, append=cfg.append,
                                       threads=cfg.threads))
    if cfg.trace_path is not None:
        outputs.append(trace_output(cfg.trace_path, cfg.append))
    if not cfg.metrics_only:
        outputs += [MqttOutput(cfg.mqtt_config(), mqtt_metrics or MqttMetrics())] \
            if cfg.mqtt else []
        outputs += [hub] if hub is not None else []
        outputs += [DisplayOutput()] if cfg.display else []
    sets = (OutputSet([o for o in outputs if not o.needs_image], errors),
            OutputSet([o for o in outputs if o.needs_image], errors))
    for s in sets:
        s.open()
    return sets


def continued_stats(cfg: SinkConfig) -> SinkStats:
    """The counts an earlier sink process left (``append``: a restart), so this one
    continues them: its status file, plus the frames it wrote to events.jsonl after its
    last status (a torn last line is cut off first). The break is recorded
    (``breaks``: when, at which frame count and seqs)."""
    snap = read_status(cfg.status_path)
    stats = SinkStats.from_snapshot(snap) if snap else SinkStats()
    path = events_path(cfg)
    if path is not None:
        cut_torn_line(path)
        tail, stats.events_bytes = read_tail(path, stats.events_bytes)
        for rec in tail:
            faces = rec.get("faces") if isinstance(rec.get("faces"), list) else []
            stream, seq = rec.get("stream"), rec.get("seq")
            if not isinstance(stream, str) or not isinstance(seq, int):
                continue
            stats.add(stream, rec.get("latency_s"), len(faces), seq=seq,
                      now=rec.get("t_capture"))
    if snap is None and not stats.frames:
        return stats  # nothing to continue
    stats.breaks.append({"t": time.time(), "frames": stats.frames,
                         "next_seq": {k: v.next_seq for k, v in stats.per_stream.items()}})
    log.warning("continuing after an earlier sink process: %d frames counted so far "
                "(%s); its open people are continued from their next frames", stats.frames,
                ", ".join(f"{k} next seq {v.next_seq}" for k, v in stats.per_stream.items())
                or "no stream yet")
    return stats


def events_path(cfg: SinkConfig) -> Path | None:
    """Where events.jsonl is written (``None``: not written)."""
    if cfg.out_dir is None or cfg.metrics_only or not cfg.events:
        return None
    return cfg.out_dir / "events.jsonl"


def main(cfg: SinkConfig, *, stop: threading.Event | None = None, registry=None) -> int:
    """Run the sink until ``expected_streams`` streams ended or it is stopped.

    Args:
        cfg: configuration.
        stop: stop event (embedding and tests); a new one, set by SIGINT/SIGTERM, if None.
        registry: Prometheus registry (tests); a new one if None.

    Returns:
        0 (clean stop or all expected streams ended; frames that could not be rendered
        are counted as dropped ``bad_image`` and logged); 2 when ``out_dir`` cannot be
        created or written, or another process owns it (:mod:`common.outdir`), at start,
        or when a file output fails during the run (a full disk): written no more, the
        sink stops and says why (restarting cannot help).
    """
    stop = stop or threading.Event()
    hub = MJPEGHub(stop, cfg.jpeg_quality) \
        if cfg.mjpeg and not cfg.metrics_only and cfg.http_port else None
    with ServiceRuntime("sink", cfg, routes=hub.routes("agegender sink") if hub else None,
                        stop=stop, registry=registry) as rt:
        sm = SinkMetrics(rt.metrics.registry)
        mqtt_metrics = MqttMetrics(rt.metrics.registry)  # at zero even with MQTT off
        lock = None
        if cfg.out_dir is not None and not cfg.metrics_only:
            try:
                if cfg.lock_out_dir:
                    lock = OutDirLock(cfg.out_dir).acquire()
                else:
                    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                return rt.refuse(str(exc) if isinstance(exc, OutDirError) else
                                 f"cannot create the output folder {cfg.out_dir}: {exc}")
        try:
            return _serve(cfg, rt, sm, hub, mqtt_metrics)
        finally:
            if lock is not None:
                lock.release()


def _serve(cfg: SinkConfig, rt: ServiceRuntime, sm: SinkMetrics, hub,
           mqtt_metrics: MqttMetrics) -> int:
    """The sink's receive loop (see :func:`main`)."""
    stats = continued_stats(cfg) if cfg.append else SinkStats()
    records, images = build_outputs(cfg, hub, sm.output_errors, mqtt_metrics)
    events = next((o for o in records.outputs if o.name == "events"), None)
    renderer = Renderer(images, on_drop=rt.metrics.drop) if images else None
    rx = rt.receiver(cfg.input, kinds=("result", "eos"))
    rt.health.enter(ServiceState.RUNNING)
    ends = StreamEnds(cfg.eos_grace_s)
    ends.ended = stats.ended  # one list: the status file shows what StreamEnds decided
    ends.results = dict(stats.streams)
    people = People(cfg.person_min_frames, cfg.person_timeout_s,
                    cfg.person_thumbnails_dir, cfg.fusion_rho)
    if cfg.append and cfg.people and cfg.out_dir is not None and not cfg.metrics_only:
        # an earlier sink's person events: the live counts continue them
        for rec in read_tail(cfg.out_dir / "people.jsonl", 0)[0]:
            if isinstance(rec.get("stream"), str):
                people.counted[rec["stream"]] = people.counted.get(rec["stream"], 0) + 1

    def persons(events: list[dict]) -> None:
        """Write and count person events; update the people counts shown."""
        for event in events:
            records.write_person(event)
            sm.person(event)
        for stream in {e["stream"] for e in events}:
            sm.in_view.labels(stream).set(people.in_view(stream))
        if hub is not None:  # a new dict each time: the HTTP thread reads it
            hub.people = {s: {"in_view": people.in_view(s),
                              "counted": people.counted.get(s, 0)}
                          for s in people.streams()}

    def status(done: bool = False) -> None:
        """Write the status file (counts, and how much of events.jsonl they cover)."""
        if events is not None and events.file is not None:
            stats.events_bytes = events.file.bytes
        write_json_atomic(cfg.status_path, stats.snapshot(done=done))
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
                status()
                next_status = now + STATUS_EVERY_S
            if records.fatal or images.fatal:
                break  # a file cannot be written: see below
            msg = rx.recv(cfg.recv_timeout_ms)
            newly_ended = ends.expire()
            if msg is not None and msg.kind == "eos":
                sm.eos.inc()
                frames = msg.header.get("frames")
                if isinstance(frames, int) and not isinstance(frames, bool):
                    stats.stream(msg.stream).ended(frames)
                newly_ended += ends.eos(msg.stream, frames)
            for stream in newly_ended:
                persons(people.end_stream(stream))
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
            sm.stream(msg.stream)
            faces, ended = people.observe(msg.header, lambda: frame_image(msg))
            msg.header["faces"] = faces  # fused: events and video show the same
            n_faces = len(faces)
            sm.e2e.observe(max(latency, 0.0))
            sm.frames.inc()
            sm.faces.inc(n_faces)
            stats.add(msg.stream, latency, n_faces, seq=msg.seq,
                      live=bool(msg.header.get("live", False)))
            result = SinkResult(msg, latency, t_ns)
            records.write(result)
            sm.in_view.labels(msg.stream).set(people.in_view(msg.stream))
            persons(ended)
            for stream in ends.result(msg.stream):
                persons(people.end_stream(stream))
            if renderer is not None:
                renderer.submit(result, block=not msg.header.get("live", False),
                                stop=rt.stop)
            rt.metrics.stage_seconds.labels("sink").observe(time.monotonic() - t0)
    finally:
        if finished:
            rt.health.enter(ServiceState.DRAINING)
        if renderer is not None:
            renderer.close(drain=finished)
        persons(people.end_all())
        records.close()
        if cfg.status_path is not None:
            status(done=finished)
        snap = stats.snapshot()
        log.info("sink done: %d frames, %d faces, %.1f fps, latency p50 %s p95 %s s",
                 snap["frames"], snap["faces"], snap["fps"], snap["latency_s"]["p50"],
                 snap["latency_s"]["p95"])
    if renderer is not None and renderer.error is not None:
        log.warning("some frames could not be rendered (last error: %s)", renderer.error)
    fatal = records.fatal or images.fatal
    if fatal:
        return rt.refuse(f"the output folder {cfg.out_dir} cannot be written ({fatal}); "
                         "stopping: restarting cannot help (free space, or choose another "
                         "output folder)")
    return 0
