"""Sink service configuration (environment prefix ``AGEGENDER_SINK_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.config import ServiceConfig


class SinkConfig(ServiceConfig):
    """Outputs: annotated video, JSON Lines events, MJPEG view, window, metrics."""

    model_config = SettingsConfigDict(env_prefix="AGEGENDER_SINK_", extra="forbid",
                                      validate_default=True)

    input: str = Field("bind:tcp://*:5557", description="Result input endpoint (PULL).")
    out_dir: Path | None = Field(None, description="Write annotated.mp4 (one "
                                 "annotated_<stream>.mp4 per extra stream) and events.jsonl "
                                 "here; none: no files.")
    video: bool = Field(True, description="Write the annotated MP4 when out_dir is set.")
    events: bool = Field(True, description="Write events.jsonl when out_dir is set.")
    mjpeg: bool = Field(True, description="Serve the live annotated view at / and "
                        "/stream.mjpg on the HTTP port.")
    display: bool = Field(False, description="Show a desktop window (needs a display).")
    metrics_only: bool = Field(False, description="Only measure latency and count; no "
                               "rendering or files.")
    expected_streams: int = Field(0, ge=0, le=1024, description="Exit after end of stream "
                                  "on this many streams; 0 runs until stopped.")
    http_port: int = Field(9104, ge=0, le=65535, description="HTTP port; 0 disables it.")
