"""Live sources (RTSP, HTTP MJPEG, cameras): a reader thread that keeps only the newest
frame, marks the source down when frames stop, and reconnects with backoff.

A frame the consumer did not take before the next one arrived is counted as dropped
(``superseded``), so latency cannot grow with a slow consumer. FFmpeg ignores
``CAP_PROP_BUFFERSIZE``, so this does not rely on it; the reader drains the connection at
the source's own rate. A source that delivers no frame for ``read_timeout_s`` seconds is
marked down (``agegender_source_up{stream}`` = 0) and reopened with exponential backoff
(``reconnect_min_s`` doubling up to ``reconnect_max_s``), each attempt counted in
``agegender_source_reconnects_total{stream}``. A source that is down at start is retried
the same way. A ``cap.read()`` that hangs past its timeout never hangs the service: the
reader is a daemon thread, and :meth:`LiveSource.check` (called from the consumer's loop)
abandons a reader that is stuck and starts a fresh one.

The source's state is a :class:`services.capture.spec.SourceState` (``connecting`` ->
``up`` <-> ``down`` -> ``reconnecting`` -> ...; ``closed`` at the end).
"""

from __future__ import annotations

import logging
import os
import threading
import time

import cv2
import numpy as np

from common.images import BadImage, to_bgr8
from common.redact import redact
from common.states import InvalidTransition, check_transition
from common.streams import source_kind
from services.capture.metrics import CaptureMetrics
from services.capture.spec import SOURCE_TRANSITIONS, SourceFrame, SourceOptions, SourceState

log = logging.getLogger(__name__)

#: Extra seconds a reader may sit inside one open()/read() call beyond its timeout before
#: the watchdog abandons it (FFmpeg's own interrupt normally fires first).
STUCK_GRACE_S = 2.0


def prefer_rtsp_over_tcp() -> None:
    """Make OpenCV's FFmpeg backend read RTSP over TCP, unless the user set
    ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` already.

    UDP loses packets (grey smears) on busy networks and through NAT. OpenCV reads the
    variable when it opens an FFmpeg capture, so call this at start-up, before the first
    source is opened.
    """
    os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")


class _Reader:
    """State of one reader thread generation (a stuck one is abandoned, not reused)."""

    def __init__(self, generation: int):
        self.generation = generation
        self.busy_since: float | None = None   # monotonic start of the current open/read
        self.busy_limit_s = 0.0
        self.thread: threading.Thread | None = None


class LiveSource:
    """A live source (RTSP, HTTP MJPEG, camera) read by a daemon thread that keeps only
    the newest frame.

    Args:
        name: stream name.
        uri: ``rtsp://``, ``http(s)://`` URL, camera index string or ``/dev/videoN``.
        options: timeouts and backoff (see :class:`SourceOptions`).
        metrics: capture metrics (source_up, reconnects, superseded drops); optional.
        notify: event set whenever a new frame arrives (lets a consumer sleep).

    Attributes:
        state: the :class:`SourceState`.
        since: wall clock (Unix seconds) when it last came up or went down (the start,
            before it was ever up); reconnect attempts do not move it.
        last_error: why it last went down or failed to open (its URI redacted), or
            ``None``.
        frames_read: frames read from the device so far.
        superseded: frames replaced before the consumer took them (dropped).
        reconnects: reopen attempts so far.
    """

    live = True
    still = False

    def __init__(self, name: str, uri: str, options: SourceOptions,
                 metrics: CaptureMetrics | None = None, notify: threading.Event | None = None):
        self.name = name
        self.uri = uri
        self.kind = source_kind(uri)
        self.options = options
        self.metrics = metrics
        self.notify = notify or threading.Event()
        self.fps = 0.0
        self.state = SourceState.CONNECTING
        self.since = time.time()
        self.last_error: str | None = None
        self.frames_read = 0
        self.superseded = 0
        self.reconnects = 0
        self._lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._latest: SourceFrame | None = None
        self._last_frame = time.monotonic()
        #: Monotonic clock (ns) of the first frame: media time is measured from it, on
        #: through outages and reconnects, so a recording lasts as long as the run.
        self._media_origin_ns: int | None = None
        self._closed = threading.Event()
        self._generation = 0
        log.info("stream %s: live %s source %s (open timeout %.1f s, read timeout %.1f s, "
                 "reconnect %.1f..%.1f s)", name, self.kind, redact(uri),
                 options.open_timeout_s, options.read_timeout_s, options.reconnect_min_s,
                 options.reconnect_max_s)
        self._reader = self._start_reader(first=True)

    @property
    def up(self) -> bool:
        """True while frames arrive (state ``up``)."""
        return self.state is SourceState.UP

    # -- state -----------------------------------------------------------------------

    def _enter(self, state: SourceState, why: str = "") -> None:
        """Move to ``state``: logged when the source comes up or goes down, reflected in
        ``agegender_source_up``; a frame left from before an outage is dropped
        (``stale``). A move :data:`SOURCE_TRANSITIONS` does not allow is logged as an
        error and ignored (a reader thread must never die of it)."""
        with self._state_lock:
            old = self.state
            if old is state or old is SourceState.CLOSED:
                return
            try:
                self.state = check_transition(SOURCE_TRANSITIONS, old, state)
            except InvalidTransition as exc:
                log.error("stream %s: %s", self.name, exc)
                return
            if SourceState.UP in (old, state):  # came up, or went down: not each retry
                self.since = time.time()
            if state is SourceState.DOWN and why:
                self.last_error = why
        if state is SourceState.CLOSED:
            return
        if self.metrics and SourceState.UP in (old, state):
            self.metrics.up.labels(self.name).set(1 if state is SourceState.UP else 0)
        if state is SourceState.UP:
            log.info("stream %s: source UP (%s)", self.name, why or "frames arriving")
        elif old is SourceState.UP:
            log.warning("stream %s: source DOWN (%s)", self.name, why or state.value)
            with self._lock:  # a frame left from before the outage is no longer live
                stale, self._latest = self._latest, None
            if stale is not None and self.metrics:
                self.metrics.drop("stale")

    # -- reader thread ---------------------------------------------------------------

    def _start_reader(self, first: bool) -> _Reader:
        self._generation += 1
        reader = _Reader(self._generation)
        reader.thread = threading.Thread(target=self._run, args=(reader, first),
                                         name=f"reader-{self.name}-{reader.generation}",
                                         daemon=True)
        reader.thread.start()
        return reader

    def _current(self, reader: _Reader) -> bool:
        return reader.generation == self._generation and not self._closed.is_set()

    def _open(self, reader: _Reader) -> cv2.VideoCapture | None:
        o = self.options
        reader.busy_limit_s = o.open_timeout_s
        reader.busy_since = time.monotonic()
        try:
            if self.kind == "camera":
                index = int(self.uri.removeprefix("/dev/video"))
                cap = cv2.VideoCapture(index, cv2.CAP_V4L2)
            else:
                cap = cv2.VideoCapture(self.uri, cv2.CAP_FFMPEG, [
                    cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(o.open_timeout_s * 1000),
                    cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(o.read_timeout_s * 1000)])
        except cv2.error as exc:
            log.warning("stream %s: open failed: %s", self.name, redact(exc))
            return None
        finally:
            reader.busy_since = None
        if not cap.isOpened():
            cap.release()
            return None
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and np.isfinite(fps) and fps <= 240 else 0.0
        return cap

    def _run(self, reader: _Reader, first: bool) -> None:
        o = self.options
        delay = o.reconnect_min_s
        while self._current(reader):
            if not first:
                self.reconnects += 1
                if self.metrics:
                    self.metrics.reconnects.labels(self.name).inc()
                log.info("stream %s: reconnecting to %s (attempt %d)", self.name,
                         redact(self.uri), self.reconnects)
                self._enter(SourceState.RECONNECTING, "reconnecting")
            first = False
            cap = self._open(reader)
            if cap is None:
                self._enter(SourceState.DOWN, f"cannot open {redact(self.uri)}")
            else:
                try:
                    before = self.frames_read
                    self._read_loop(reader, cap)
                    if self.frames_read > before:  # it worked for a while: start over
                        delay = o.reconnect_min_s
                    if self._current(reader):
                        self._enter(SourceState.DOWN,
                                    "read failed, timed out or stream ended")
                finally:
                    cap.release()
            if not self._current(reader):
                break
            log.info("stream %s: next reconnect in %.1f s", self.name, delay)
            if self._closed.wait(delay):
                break
            delay = min(delay * 2, o.reconnect_max_s)
        log.debug("stream %s: reader generation %d exits", self.name, reader.generation)

    def _read_loop(self, reader: _Reader, cap: cv2.VideoCapture) -> None:
        reader.busy_limit_s = self.options.read_timeout_s
        while self._current(reader):
            t0 = reader.busy_since = time.monotonic()
            ok, image = cap.read()
            reader.busy_since = None
            if not self._current(reader):
                return
            if not ok or image is None or image.size == 0:
                return
            took = time.monotonic() - t0
            if took >= 0.95 * self.options.read_timeout_s:
                # FFmpeg's read timeout fired; it may still hand back a frame flushed from
                # the decoder, which is stale: the source is dead, reopen it.
                log.warning("stream %s: a read took %.1f s (read timeout %.1f s): "
                            "reopening", self.name, took, self.options.read_timeout_s)
                return
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                try:
                    image = to_bgr8(image)
                except BadImage as exc:
                    log.warning("stream %s: frame skipped: %s", self.name, exc)
                    if self.metrics:
                        self.metrics.drop("bad_image")
                    continue
            t_ns = time.time_ns()
            t_mono = time.monotonic_ns()
            if self._media_origin_ns is None:
                self._media_origin_ns = t_mono
            with self._lock:
                if self._latest is not None:
                    self.superseded += 1
                    if self.metrics:
                        self.metrics.drop("superseded")
                self._latest = SourceFrame(image, t_ns, self.frames_read,
                                           t_mono - self._media_origin_ns)
                self.frames_read += 1
                self._last_frame = time.monotonic()
            self._enter(SourceState.UP)
            self.notify.set()

    # -- consumer side ---------------------------------------------------------------

    def check(self) -> None:
        """Watchdog, called from the consumer's loop: mark the source down when no frame
        arrived for ``read_timeout_s`` seconds, and abandon a reader stuck in one
        open/read call for longer than its timeout plus :data:`STUCK_GRACE_S` (a fresh
        reader thread takes over; the stuck one exits when its call returns)."""
        now = time.monotonic()
        if self.up and now - self._last_frame > self.options.read_timeout_s:
            self._enter(SourceState.DOWN, f"no frame for {now - self._last_frame:.1f} s "
                       f"(read timeout {self.options.read_timeout_s:.1f} s)")
        reader = self._reader
        since = reader.busy_since
        if since is not None and now - since > reader.busy_limit_s + STUCK_GRACE_S \
                and not self._closed.is_set():
            log.error("stream %s: reader stuck in open/read for %.1f s; abandoning it and "
                      "starting a new one", self.name, now - since)
            self._enter(SourceState.DOWN, "reader stuck")
            self._reader = self._start_reader(first=False)

    def poll(self) -> SourceFrame | None:
        """Take the newest frame not taken yet (``None`` when there is none); runs
        :meth:`check` first."""
        self.check()
        with self._lock:
            frame, self._latest = self._latest, None
        return frame

    def read(self, timeout_s: float) -> SourceFrame | None:
        """Wait up to ``timeout_s`` seconds for a new frame (``None`` on timeout)."""
        deadline = time.monotonic() + timeout_s
        while True:
            frame = self.poll()
            if frame is not None:
                return frame
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.notify.wait(min(left, 0.05))
            self.notify.clear()

    def request_close(self) -> None:
        """Tell the reader to stop (returns at once; see :meth:`join`)."""
        self._closed.set()
        self._enter(SourceState.CLOSED)

    def join(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds for the current reader to exit; ``True`` if it
        did (a reader stuck in a read is a daemon and is left behind)."""
        thread = self._reader.thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout=max(0.0, timeout_s))
        return not thread.is_alive()

    def close(self) -> None:
        """Stop the reader (daemon: never waited for more than a second)."""
        self.request_close()
        self.join(1.0)
