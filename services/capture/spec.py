"""What a source is: its options, its frames and the states of a live source.

Its string ``[NAME=]URI``, its stream name and its kind are :mod:`common.streams`'
(:func:`~common.streams.parse_spec`, :func:`~common.streams.source_kind`); anything
that shows a URI shows it through :func:`common.redact.redact`.
"""

from __future__ import annotations

import dataclasses
import enum

import numpy as np

#: Source kinds read by a reader thread that keeps only the newest frame.
LIVE_KINDS = ("rtsp", "http", "camera")


class SourceState(str, enum.Enum):
    """Where a live source is."""

    CONNECTING = "connecting"      # first open attempt in progress
    UP = "up"                      # frames arriving
    DOWN = "down"                  # open failed, read failed or timed out; waiting to retry
    RECONNECTING = "reconnecting"  # a reopen attempt in progress
    CLOSED = "closed"              # closed by the consumer; final


#: Allowed moves between :class:`SourceState` values: nothing goes back to
#: ``connecting`` (only the first attempt is that) and nothing leaves ``closed``. A reader
#: abandoned while stuck is replaced by one that starts with ``reconnecting``, from
#: whatever state the stuck one left.
SOURCE_TRANSITIONS = {
    SourceState.CONNECTING: {SourceState.UP, SourceState.DOWN, SourceState.RECONNECTING,
                             SourceState.CLOSED},
    SourceState.UP: {SourceState.DOWN, SourceState.RECONNECTING, SourceState.CLOSED},
    SourceState.DOWN: {SourceState.UP, SourceState.RECONNECTING, SourceState.CLOSED},
    SourceState.RECONNECTING: {SourceState.UP, SourceState.DOWN, SourceState.CLOSED},
    SourceState.CLOSED: set(),
}


@dataclasses.dataclass
class SourceOptions:
    """How sources behave (the capture config's fields of the same names).

    Attributes:
        loop: restart finite sources at their end.
        fps: frame rate (frames/s) for image folders and files that report none; 0 = 10
            for folders, the file's own rate otherwise.
        open_timeout_s: limit for opening a network source (seconds).
        read_timeout_s: a live source that delivers nothing for this long is marked down
            and reopened (seconds).
        reconnect_min_s: first reconnect delay (seconds), doubled per failed attempt...
        reconnect_max_s: ...up to this (seconds).
    """

    loop: bool = False
    fps: float = 0.0
    open_timeout_s: float = 5.0
    read_timeout_s: float = 5.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 10.0

    @classmethod
    def from_config(cls, cfg) -> "SourceOptions":
        """Take the fields from a :class:`services.capture.config.CaptureConfig`."""
        return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)})


@dataclasses.dataclass
class SourceFrame:
    """One captured frame.

    Attributes:
        image: ``(H, W, 3) uint8`` BGR.
        t_capture_ns: wall clock when the frame was read (ns since the Unix epoch).
        index: frame number within the source's current run (0-based).
        t_media_ns: media time of the frame, ns since the stream's first frame
            (non-decreasing; loops continue it): files the container's presentation
            time, live sources the time since their first frame (monotonic clock), image
            folders and the demo ``index / fps``.
        duration_ns: how long the frame is shown (media ns until the next frame; 0 when
            unknown, as for live sources): what real-time pacing waits after it.
    """

    image: np.ndarray
    t_capture_ns: int
    index: int
    t_media_ns: int = 0
    duration_ns: int = 0
