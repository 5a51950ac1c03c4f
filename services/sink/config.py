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
    eos_grace_s: float = Field(5.0, ge=0.0, le=600.0, description="After a stream's eos, "
                               "wait up to this many seconds (since its last result) for "
                               "results still in flight through other detector or "
                               "classifier workers; the stream ends early once as many "
                               "results as frames sent arrived. 0 ends it at the eos.")
    track_window: int = Field(5, ge=1, le=1000, description="Frames over which each "
                              "face track's age and gender are smoothed (median; 1: "
                              "per-frame values; tracks are assigned either way).")
    track_iou: float = Field(0.3, gt=0.0, le=1.0, description="Least intersection over "
                             "union of boxes in consecutive frames for the same track.")
    track_max_gap_s: float = Field(1.0, gt=0.0, le=60.0, description="A track unseen for "
                                   "longer than this (capture time, seconds) ends.")
    http_port: int = Field(9104, ge=0, le=65535, description="HTTP port; 0 disables it.")
    video_fps: float = Field(0.0, ge=0.0, le=240.0, description="Frame rate written into "
                             "the annotated MP4 (frames/s); 0 = the frame header's 'fps' "
                             "when capture sends one, else 25.")
    jpeg_quality: int = Field(80, ge=10, le=100, description="JPEG quality of the live "
                              "MJPEG view.")
    status_path: Path | None = Field(None, description="Write a JSON status (frames, faces, "
                                     "fps, end-to-end latency percentiles, streams ended) "
                                     "here every 0.5 s and at exit; 'agegender run' reads "
                                     "it for progress and the summary.")
    trace_path: Path | None = Field(None, description="Write one JSON line per frame with "
                                    "every per-stage timestamp (t_*_ns) plus t_sink_ns "
                                    "(benchmarks); none: off.")
    lock_out_dir: bool = Field(True, description="Own out_dir while running: take its "
                               "lock file (.agegender.lock), so a second sink or run "
                               "cannot write the same folder ('agegender run' holds the "
                               "lock itself and sets false).")
    append: bool = Field(False, description="Continue an earlier sink's outputs: append to "
                         "events.jsonl (a torn last line cut off), continue its counts, seqs "
                         "and track ids (status_path and events.jsonl's tail), write video "
                         "to a new annotated*.partN.mp4 ('agegender run' sets it when it "
                         "restarts a crashed sink).")
