"""Frame sources: video files, image folders, the built-in demo, RTSP, HTTP MJPEG, cameras.

A source is opened from a string ``[NAME=]URI`` (see :func:`common.streams.parse_spec`):

=====================  ======================================================  ======
URI                    source                                                  kind
=====================  ======================================================  ======
``demo`` (or empty)    built-in scene synthesized from scikit-image's          finite
                       public-domain astronaut photo, 15 fps, 8 s
``path/clip.mp4``      video file (anything FFmpeg reads: mp4, avi, gif, ...)  finite
``path/folder/``       image folder, files in sorted name order                finite
``rtsp://...``         RTSP camera over TCP (FFmpeg), open/read timeouts       live
``http(s)://...``      HTTP(S) MJPEG stream (FFmpeg)                           live
``0`` / ``/dev/video0`` local camera (V4L2)                                     live
=====================  ======================================================  ======

*Finite* sources (:mod:`.finite`, :mod:`.demo`) hand out frames one by one on request;
the capture service paces them (native frame rate by default) and sends them with
backpressure, so none is lost. ``loop`` restarts them at their end.

*Live* sources (:mod:`.live`) run a daemon reader thread that keeps ONLY the newest
frame, mark themselves down when frames stop and reconnect with backoff.
"""

from __future__ import annotations

import threading
from typing import Union

from services.capture.demo import DemoSource
from services.capture.finite import FiniteSource, ImageFolderSource, VideoFileSource
from services.capture.live import LiveSource
from services.capture.metrics import CaptureMetrics
from common.streams import parse_spec, source_kind, validate_stream_name
from services.capture.spec import LIVE_KINDS, SourceOptions

Source = Union[FiniteSource, LiveSource]


def open_source(spec: str, options: SourceOptions, metrics: CaptureMetrics | None = None,
                index: int = 0, notify: threading.Event | None = None,
                name: str | None = None) -> Source:
    """Open a source from ``[NAME=]URI`` (see :func:`common.streams.parse_spec`).

    Live sources never fail here: a camera or server that is down is retried in the
    background. Finite sources are opened at once.

    Args:
        spec: the source string.
        options: see :class:`services.capture.spec.SourceOptions`.
        metrics: capture metrics; the stream's labels are created at zero.
        index: position in the source list (default names of URLs).
        notify: event live sources set when a frame arrives.
        name: overrides the stream name (checked by
            :func:`common.streams.validate_stream_name`).

    Raises:
        FileNotFoundError: a file or folder that does not exist.
        ValueError: a file OpenCV cannot open, a folder without images, or a stream name
            that is not allowed. No message shows a credential.
    """
    default_name, uri = parse_spec(spec, index)
    name = validate_stream_name(name) if name else default_name
    if metrics:
        metrics.add_stream(name)
    kind = source_kind(uri)
    if kind in LIVE_KINDS:
        return LiveSource(name, uri, options, metrics, notify)
    if kind == "demo":
        source: FiniteSource = DemoSource(name, uri, options, metrics)
    elif kind == "folder":
        source = ImageFolderSource(name, uri, options, metrics)
    else:
        source = VideoFileSource(name, uri, options, metrics)
    if metrics:
        metrics.up.labels(name).set(1)
    return source
