"""Prometheus metrics shared by all stages (see docs/metrics.md for the catalogue).

Conventions (../shared/DESIGN.md): prefix ``agegender_``, units in names, counters end in
``_total``, labels few and bounded and created at zero at start. Each service owns one
:class:`prometheus_client.CollectorRegistry` so several services can live in one test
process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from common.wire import KINDS
from common.wire_checks import DROP_REASONS

#: Latency buckets (seconds): 1 ms .. 10 s, dense around the 0.5 s budget.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
                   0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
#: Why a frame was dropped on purpose (never an error): labels created at zero.
FRAME_DROP_REASONS = (
    "queue_full",      # downstream high-water mark reached on a lossy send
    "stale",           # live frame older than max_frame_age_s at receive
    "superseded",      # live reader replaced a frame nobody consumed yet
    "send_timeout",    # a blocking send gave up
    "bad_image",       # undecodable or unusable image
    "decode_error",    # a damaged frame of a video file the decoder refused (skipped)
    "shutdown",        # still queued inside the stage when it stopped
    "worker_lost",     # sent to a detector worker that vanished before finishing it
)
STAGES = ("capture", "detector", "classifier", "sink")


def inference_seconds(registry: CollectorRegistry, stage: str, model: str):
    """Declare ``agegender_inference_seconds{stage, model}`` in ``registry`` and return the
    child of ``stage`` and ``model`` (created at zero).

    One observation is one model call: one frame in the detector, one batch of crops in
    the classifier (seconds, :data:`LATENCY_BUCKETS`).
    """
    hist = Histogram("agegender_inference_seconds",
                     "Model inference time per call (seconds), by stage and model.",
                     ["stage", "model"], buckets=LATENCY_BUCKETS, registry=registry)
    return hist.labels(stage, model)


class StageMetrics:
    """The metrics every stage exports, in its own registry.

    Args:
        stage: one of :data:`STAGES` (label value).
        registry: registry to register in; a new one when ``None``.
    """

    def __init__(self, stage: str, registry: CollectorRegistry | None = None):
        self.stage = stage
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.received = Counter("agegender_messages_received_total",
                                "Valid messages received, by stage and kind.",
                                ["stage", "kind"], registry=r)
        self.sent = Counter("agegender_messages_sent_total",
                            "Messages sent downstream, by stage and kind.",
                            ["stage", "kind"], registry=r)
        self.dropped = Counter("agegender_frames_dropped_total",
                               "Frames dropped on purpose (lossy by design), by stage and reason.",
                               ["stage", "reason"], registry=r)
        self.malformed = Counter("agegender_messages_malformed_total",
                                 "Received messages rejected by validation, by stage and reason.",
                                 ["stage", "reason"], registry=r)
        self.stage_seconds = Histogram("agegender_stage_seconds",
                                       "Processing time of one message in a stage (seconds).",
                                       ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.frame_age = Histogram("agegender_frame_age_seconds",
                                   "Age of a frame when a stage receives it: receive time "
                                   "minus t_capture (seconds).",
                                   ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("agegender_queue_depth",
                                 "Messages waiting inside the stage (its own buffers).",
                                 ["stage"], registry=r)
        self.heartbeat = Gauge("agegender_heartbeat_timestamp_seconds",
                               "Unix time of the main loop's last tick.", ["stage"], registry=r)
        for kind in KINDS:
            self.received.labels(stage, kind)
            self.sent.labels(stage, kind)
        for reason in FRAME_DROP_REASONS:
            self.dropped.labels(stage, reason)
        for reason in DROP_REASONS:
            self.malformed.labels(stage, reason)
        self.stage_seconds.labels(stage)
        self.frame_age.labels(stage)
        self.queue_depth.labels(stage).set(0)
        self.heartbeat.labels(stage).set(0)

    def drop(self, reason: str, n: int = 1) -> None:
        """Count ``n`` frames dropped for ``reason`` (one of :data:`FRAME_DROP_REASONS`)."""
        self.dropped.labels(self.stage, reason).inc(n)
