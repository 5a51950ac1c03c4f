"""The capture service's own metrics (the shared stage metrics are ``StageMetrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class CaptureMetrics:
    """Capture-specific metrics (the shared stage metrics live in ``StageMetrics``).

    * ``agegender_frames_captured_total{stream}``: frames sent downstream;
    * ``agegender_source_up{stream}``: 1 while a live source delivers frames (finite
      sources: 1 while playing), 0 when down;
    * ``agegender_source_reconnects_total{stream}``: reopen attempts of live sources;
    * ``agegender_frames_downscaled_total{stream}``: frames over the wire's size limit
      sent downscaled (large photos).

    Args:
        registry: the service's registry (a new one when ``None``).
        stage_metrics: the stage's ``StageMetrics`` to count dropped frames in
            (``superseded``, ``bad_image``); optional.
    """

    def __init__(self, registry: CollectorRegistry | None = None, stage_metrics=None):
        r = registry or CollectorRegistry()
        self.registry = r
        self.stage_metrics = stage_metrics
        self.captured = Counter("agegender_frames_captured_total",
                                "Frames captured and sent downstream, by stream.",
                                ["stream"], registry=r)
        self.up = Gauge("agegender_source_up", "1 while the source delivers frames, "
                        "0 while it is down (live sources) or ended.", ["stream"], registry=r)
        self.downscaled = Counter("agegender_frames_downscaled_total",
                                  "Frames larger than the wire allows (common.wire.MAX_SIDE "
                                  "pixels a side: large photos in image folders) sent "
                                  "downscaled to fit, by stream.", ["stream"], registry=r)
        self.reconnects = Counter("agegender_source_reconnects_total",
                                  "Attempts to reopen a live source after it went down "
                                  "or failed to open, by stream.", ["stream"], registry=r)

    def add_stream(self, stream: str) -> None:
        """Create the stream's labels at zero."""
        self.captured.labels(stream)
        self.downscaled.labels(stream)
        self.up.labels(stream).set(0)
        self.reconnects.labels(stream)

    def drop(self, reason: str, n: int = 1) -> None:
        """Count dropped frames in the stage metrics (no-op without them)."""
        if self.stage_metrics is not None:
            self.stage_metrics.drop(reason, n)
