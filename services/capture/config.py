"""Capture service configuration (environment prefix ``AGEGENDER_CAPTURE_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from common.config import ServiceConfig


class CaptureConfig(ServiceConfig, service="capture", http_port=9101):
    """Where frames come from and where they go."""

    sources: list[str] = Field(default_factory=list, description="Sources, each "
                               "'[NAME=]URI': a video file (mp4/avi/gif), an image folder, "
                               "rtsp://..., http(s)://... MJPEG, a camera index ('0') or "
                               "/dev/videoN. NAME is the stream name: letters, digits, "
                               "'_', '-', '.', no spaces (default: file stem, or camN). "
                               "Empty: the built-in demo scene. Credentials in a URL are "
                               "never shown (logs, errors, status).")
    output: str = Field("bind:tcp://*:5555", description="Frame output endpoint (ROUTER: "
                        "each stream goes to one live detector worker, docs/pipeline.md).")

    @field_validator("sources")
    @classmethod
    def _parse_sources(cls, sources: list[str]) -> list[str]:
        """Each source must parse (:func:`common.streams.parse_spec`): an empty
        string is a mistake (an unset shell variable), not the demo; a NAME that is not
        allowed is refused with the rule."""
        from common.streams import parse_spec
        for i, spec in enumerate(sources):
            parse_spec(spec, i)
        return sources

    realtime: bool = Field(True, description="Pace files at their native frame rate; false "
                           "sends as fast as downstream accepts (backpressure, no drops).")
    loop: bool = Field(False, description="Restart files and folders at their end.")
    fps: float = Field(0.0, ge=0.0, le=240.0, description="Frame rate for image folders and "
                       "sources that report none (frames/s); 0 = 10 for folders.")
    max_fps: float = Field(0.0, ge=0.0, le=240.0, description="Cap on frames sent per "
                           "second per stream (frames/s); 0 = no cap.")
    open_timeout_s: float = Field(5.0, gt=0.0, le=120.0, description="Limit for opening a "
                                  "network source (seconds).")
    read_timeout_s: float = Field(5.0, gt=0.0, le=120.0, description="A live source that "
                                  "delivers no frame for this long is marked down and "
                                  "reopened (seconds).")
    reconnect_min_s: float = Field(0.5, gt=0.0, le=60.0, description="First reconnect "
                                   "delay (seconds); doubles up to reconnect_max_s.")
    reconnect_max_s: float = Field(10.0, gt=0.0, le=600.0, description="Largest reconnect "
                                   "delay (seconds).")
    status_path: Path | None = Field(None, description="Write a JSON status here every "
                                     "0.5 s and at exit: each stream's state (live sources: "
                                     "up/down since, reconnect attempts, last error), frames "
                                     "sent, image files skipped and why. 'agegender run' "
                                     "reads it for its console and summary.")
    position_file: Path | None = Field(None, description="Keep each stream's next seq and "
                                       "file position here (written before every frame is "
                                       "sent); a capture started with an existing file "
                                       "resumes from it: files continue at their next "
                                       "frame and no (stream, seq) is sent twice. "
                                       "'agegender run' sets it; none: always start over.")
