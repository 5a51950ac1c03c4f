"""What a source is: its string ``[NAME=]URI``, its kind, its options, its frames and the
states of a live source."""

from __future__ import annotations

import dataclasses
import enum
import os
import re
from pathlib import Path

import numpy as np

_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
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
    """

    image: np.ndarray
    t_capture_ns: int
    index: int


def parse_spec(spec: str, index: int = 0) -> tuple[str, str]:
    """Split a source string ``[NAME=]URI`` into ``(stream_name, uri)``.

    ``NAME`` is taken only when the text before the first ``=`` is a plain name
    (letters, digits, ``_.-``; no ``/`` or ``:``), so URLs with query strings stay whole.
    Default names: ``demo`` for ``"demo"``, the file or folder name without suffix, ``camN``
    for cameras and network URLs (``N`` = ``index`` for URLs, the device number for
    cameras).

    Raises:
        ValueError: the URI part is empty.
    """
    given, spec = spec, spec.strip()
    name = ""
    head, sep, rest = spec.partition("=")
    if sep and _NAME_RE.match(head):
        name, spec = head, rest.strip()
    uri = spec
    if not uri:
        raise ValueError(f"empty source {given!r}: give a file, folder, URL or camera, or no "
                         "source at all for the demo")
    if not name:
        kind = source_kind(uri)
        if kind == "demo":
            name = "demo"
        elif kind == "camera":
            name = f"cam{uri.removeprefix('/dev/video')}"
        elif kind in ("rtsp", "http"):
            name = f"cam{index}"
        else:
            name = Path(uri.rstrip("/")).stem or f"src{index}"
            name = re.sub(r"[^A-Za-z0-9_.\-]", "_", name)[:64]
    return name, uri


def source_kind(uri: str) -> str:
    """Classify a URI: ``demo``, ``rtsp``, ``http``, ``camera``, ``folder`` or ``file``."""
    low = uri.lower()
    if low == "demo":
        return "demo"
    if low.startswith(("rtsp://", "rtsps://")):
        return "rtsp"
    if low.startswith(("http://", "https://")):
        return "http"
    if uri.isdigit() or re.fullmatch(r"/dev/video\d+", uri):
        return "camera"
    if os.path.isdir(uri):
        return "folder"
    return "file"


def redact(uri: str) -> str:
    """Hide a password in ``scheme://user:password@host`` for logs."""
    return re.sub(r"(://[^:/@]+:)[^@/]*@", r"\1***@", uri)
