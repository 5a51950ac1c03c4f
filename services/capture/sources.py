"""Frame sources: video files, image folders, the built-in demo, RTSP, HTTP MJPEG, cameras.

A source is opened from a string ``[NAME=]URI`` (see :func:`parse_spec`):

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

*Finite* sources (:class:`FiniteSource`) hand out frames one by one on request; the
capture service paces them (native frame rate by default) and sends them with
backpressure, so none is lost. ``loop`` restarts them at their end.

*Live* sources (:class:`LiveSource`) run a daemon reader thread that keeps ONLY the newest
frame: a frame the consumer did not take before the next one arrived is counted as
dropped (``superseded``), so latency cannot grow with a slow consumer. FFmpeg ignores
``CAP_PROP_BUFFERSIZE``, so this does not rely on it; the reader drains the connection at
the source's own rate. A source that delivers no frame for ``read_timeout_s`` seconds is
marked down (``agegender_source_up{stream}`` = 0) and reopened with exponential backoff
(``reconnect_min_s`` doubling up to ``reconnect_max_s``), each attempt counted in
``agegender_source_reconnects_total{stream}``. A source that is down at start is retried
the same way. A ``cap.read()`` that hangs past its timeout never hangs the service: the
reader is a daemon thread, and :meth:`LiveSource.check` (called from the consumer's loop)
abandons a reader that is stuck and starts a fresh one.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Union

import cv2
import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from services.capture.images import IMAGE_SUFFIXES, BadImage, read_image, to_bgr8

log = logging.getLogger(__name__)

# RTSP over TCP: UDP loses packets (grey smears) on busy networks and through NAT. OpenCV
# reads this variable when it opens an FFmpeg capture; a user's own value wins.
os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")

#: Frame rate (frames/s) of image folders when the config gives none.
DEFAULT_FOLDER_FPS = 10.0
#: Demo scene: frame rate (frames/s), duration (s) and frame size (pixels, w x h).
DEMO_FPS = 15.0
DEMO_SECONDS = 8.0
DEMO_SIZE = (640, 360)
#: Extra seconds a reader may sit inside one open()/read() call beyond its timeout before
#: the watchdog abandons it (FFmpeg's own interrupt normally fires first).
STUCK_GRACE_S = 2.0

_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class CaptureMetrics:
    """Capture-specific metrics (the shared stage metrics live in ``StageMetrics``).

    * ``agegender_frames_captured_total{stream}``: frames sent downstream;
    * ``agegender_source_up{stream}``: 1 while a live source delivers frames (finite
      sources: 1 while playing), 0 when down;
    * ``agegender_source_reconnects_total{stream}``: reopen attempts of live sources.

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
        self.reconnects = Counter("agegender_source_reconnects_total",
                                  "Attempts to reopen a live source after it went down "
                                  "or failed to open, by stream.", ["stream"], registry=r)

    def add_stream(self, stream: str) -> None:
        """Create the stream's labels at zero."""
        self.captured.labels(stream)
        self.up.labels(stream).set(0)
        self.reconnects.labels(stream)

    def drop(self, reason: str, n: int = 1) -> None:
        """Count dropped frames in the stage metrics (no-op without them)."""
        if self.stage_metrics is not None:
            self.stage_metrics.drop(reason, n)


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


# --------------------------------------------------------------------------- finite


class FiniteSource:
    """Base of sources that end (files, folders, the demo).

    Attributes:
        name: stream name. uri: what was opened. kind: see :func:`source_kind`.
        fps: native frame rate (frames/s) used for pacing. live: always ``False``.
        index: number of frames handed out so far in the current run.
    """

    live = False
    kind = "file"

    def __init__(self, name: str, uri: str, options: SourceOptions,
                 metrics: CaptureMetrics | None = None):
        self.name = name
        self.uri = uri
        self.options = options
        self.metrics = metrics
        self.fps = DEFAULT_FOLDER_FPS
        self.index = 0
        self.loops = 0

    def read(self) -> SourceFrame | None:
        """The next frame, or ``None`` at the end (after the last loop when looping).

        With ``loop`` the source restarts transparently; a source that yields no frame at
        all in a whole pass ends instead of spinning.
        """
        image = self._next()
        if image is None and self.options.loop and self.index > 0:
            self.loops += 1
            log.info("stream %s: end of %s, looping (pass %d)", self.name, self.uri,
                     self.loops + 1)
            self._rewind()
            self.index = 0
            image = self._next()
        if image is None:
            return None
        frame = SourceFrame(image, time.time_ns(), self.index)
        self.index += 1
        return frame

    def _next(self) -> np.ndarray | None:
        raise NotImplementedError

    def _rewind(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release the underlying file or decoder."""


class VideoFileSource(FiniteSource):
    """A video file read with OpenCV (FFmpeg): mp4, avi, mkv, gif, ...

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: OpenCV cannot open or decode it.
    """

    kind = "file"

    def __init__(self, name, uri, options, metrics=None):
        super().__init__(name, uri, options, metrics)
        if not os.path.isfile(uri):
            raise FileNotFoundError(f"source {name}: no such file or folder: {uri}")
        self.cap = self._open()
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        if not (fps and np.isfinite(fps) and 0.1 <= fps <= 240):
            fps = options.fps or DEFAULT_FOLDER_FPS
            log.warning("stream %s: %s reports no usable frame rate; pacing at %.1f fps",
                        name, uri, fps)
        self.fps = float(fps)
        log.info("stream %s: video file %s (%dx%d, %.2f fps, %d frames)", name, uri,
                 int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                 int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), self.fps,
                 int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT)))

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(self.uri)
        if not cap.isOpened():
            cap.release()
            raise ValueError(f"source {self.name}: OpenCV cannot open video file {self.uri}")
        return cap

    def _next(self):
        while True:
            ok, image = self.cap.read()
            if not ok or image is None:
                return None
            if image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
                return image
            try:
                return to_bgr8(image)
            except BadImage as exc:
                log.warning("stream %s: frame %d skipped: %s", self.name, self.index, exc)
                if self.metrics:
                    self.metrics.drop("bad_image")

    def _rewind(self):
        self.cap.release()
        self.cap = self._open()

    def close(self):
        """Release the underlying ``cv2.VideoCapture`` (idempotent)."""
        self.cap.release()


class ImageFolderSource(FiniteSource):
    """Images of a folder in sorted file-name order, one frame each.

    Odd images (RGBA, gray, gray + alpha, 16-bit, 1x1) are normalised to
    ``(H, W, 3) uint8`` BGR; files that cannot be decoded are skipped with a warning and
    counted as dropped (``bad_image``). Frames may differ in size. Files whose suffix is
    not an image suffix (:data:`IMAGE_SUFFIXES`) are ignored.

    Raises:
        ValueError: the folder holds no image file.
    """

    kind = "folder"

    def __init__(self, name, uri, options, metrics=None):
        super().__init__(name, uri, options, metrics)
        self.paths = sorted(p for p in Path(uri).iterdir()
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise ValueError(f"source {name}: folder {uri} holds no image files "
                             f"({', '.join(IMAGE_SUFFIXES)})")
        self.fps = float(options.fps or DEFAULT_FOLDER_FPS)
        self._pos = 0
        self.skipped = 0
        log.info("stream %s: image folder %s (%d images, %.1f fps)", name, uri,
                 len(self.paths), self.fps)

    def _next(self):
        while self._pos < len(self.paths):
            path = self.paths[self._pos]
            self._pos += 1
            try:
                return read_image(path)
            except BadImage as exc:
                self.skipped += 1
                log.warning("stream %s: image skipped (dropped, reason bad_image): %s",
                            self.name, exc)
                if self.metrics:
                    self.metrics.drop("bad_image")
        return None

    def _rewind(self):
        self._pos = 0


class DemoSource(FiniteSource):
    """The built-in demo: a scene synthesized at run time, no download needed.

    scikit-image's public-domain astronaut photo (``skimage.data.astronaut()``, Eileen
    Collins, NASA) pans from left to right over a dim background while zooming in and
    out; ``DEMO_SECONDS`` s at ``DEMO_FPS`` fps, ``DEMO_SIZE`` pixels. One face per frame.
    """

    kind = "demo"

    def __init__(self, name, uri, options, metrics=None):
        super().__init__(name, uri, options, metrics)
        from skimage import data as skdata
        rgb = skdata.astronaut()  # (512, 512, 3) uint8 RGB
        self.photo = np.ascontiguousarray(rgb[:, :, ::-1])
        w, h = DEMO_SIZE
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        bg = np.stack([40 + 60 * xx / w, 50 + 40 * yy / h, 70 + 30 * (1 - xx / w)], axis=2)
        self.background = bg.astype(np.uint8)
        self.fps = DEMO_FPS
        self.n_frames = int(DEMO_SECONDS * DEMO_FPS)
        log.info("stream %s: built-in DEMO source (no --source given): scikit-image's "
                 "astronaut photo panning over a synthetic background, %dx%d, %.0f fps, "
                 "%d frames", name, w, h, self.fps, self.n_frames)

    def render(self, i: int) -> np.ndarray:
        """Frame ``i`` of the scene as ``(360, 640, 3) uint8`` BGR (deterministic)."""
        w, h = DEMO_SIZE
        t = i / max(self.n_frames - 1, 1)                       # 0..1 over the clip
        scale = (0.55 + 0.2 * np.sin(2 * np.pi * t)) * h / 512  # photo height ~ 0.35-0.75 h
        size = 512 * scale
        x0 = (w - size) * t
        y0 = (h - size) * (0.5 + 0.3 * np.sin(4 * np.pi * t))
        m = np.array([[scale, 0, x0], [0, scale, y0]], dtype=np.float32)
        frame = self.background.copy()
        cv2.warpAffine(self.photo, m, (w, h), dst=frame, flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_TRANSPARENT)
        return frame

    def _next(self):
        if self.index >= self.n_frames:
            return None
        return self.render(self.index)

    def _rewind(self):
        pass


# --------------------------------------------------------------------------- live


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
        up: ``True`` while frames arrive (set by the reader, cleared by :meth:`check`).
        frames_read: frames read from the device so far.
        superseded: frames replaced before the consumer took them (dropped).
        reconnects: reopen attempts so far.
    """

    live = True

    def __init__(self, name: str, uri: str, options: SourceOptions,
                 metrics: CaptureMetrics | None = None, notify: threading.Event | None = None):
        self.name = name
        self.uri = uri
        self.kind = source_kind(uri)
        self.options = options
        self.metrics = metrics
        self.notify = notify or threading.Event()
        self.fps = 0.0
        self.up = False
        self.frames_read = 0
        self.superseded = 0
        self.reconnects = 0
        self._lock = threading.Lock()
        self._latest: SourceFrame | None = None
        self._last_frame = time.monotonic()
        self._closed = threading.Event()
        self._generation = 0
        log.info("stream %s: live %s source %s (open timeout %.1f s, read timeout %.1f s, "
                 "reconnect %.1f..%.1f s)", name, self.kind, _redact(uri),
                 options.open_timeout_s, options.read_timeout_s, options.reconnect_min_s,
                 options.reconnect_max_s)
        self._reader = self._start_reader(first=True)

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
            log.warning("stream %s: open failed: %s", self.name, exc)
            return None
        finally:
            reader.busy_since = None
        if not cap.isOpened():
            cap.release()
            return None
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and np.isfinite(fps) and fps <= 240 else 0.0
        return cap

    def _set_up(self, up: bool, why: str = "") -> None:
        if up == self.up:
            return
        self.up = up
        if self.metrics:
            self.metrics.up.labels(self.name).set(1 if up else 0)
        if up:
            log.info("stream %s: source UP (%s)", self.name, why or "frames arriving")
        else:
            log.warning("stream %s: source DOWN (%s)", self.name, why)
            with self._lock:  # a frame left from before the outage is no longer live
                stale, self._latest = self._latest, None
            if stale is not None and self.metrics:
                self.metrics.drop("stale")

    def _run(self, reader: _Reader, first: bool) -> None:
        o = self.options
        delay = o.reconnect_min_s
        while self._current(reader):
            if not first:
                self.reconnects += 1
                if self.metrics:
                    self.metrics.reconnects.labels(self.name).inc()
                log.info("stream %s: reconnecting to %s (attempt %d)", self.name,
                         _redact(self.uri), self.reconnects)
            first = False
            cap = self._open(reader)
            if cap is None:
                self._set_up(False, f"cannot open {_redact(self.uri)}")
            else:
                try:
                    before = self.frames_read
                    self._read_loop(reader, cap)
                    if self.frames_read > before:  # it worked for a while: start over
                        delay = o.reconnect_min_s
                    if self._current(reader):
                        self._set_up(False, "read failed, timed out or stream ended")
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
            with self._lock:
                if self._latest is not None:
                    self.superseded += 1
                    if self.metrics:
                        self.metrics.drop("superseded")
                self._latest = SourceFrame(image, t_ns, self.frames_read)
                self.frames_read += 1
                self._last_frame = time.monotonic()
            self._set_up(True)
            self.notify.set()

    # -- consumer side ---------------------------------------------------------------

    def check(self) -> None:
        """Watchdog, called from the consumer's loop: mark the source down when no frame
        arrived for ``read_timeout_s`` seconds, and abandon a reader stuck in one
        open/read call for longer than its timeout plus :data:`STUCK_GRACE_S` (a fresh
        reader thread takes over; the stuck one exits when its call returns)."""
        now = time.monotonic()
        if self.up and now - self._last_frame > self.options.read_timeout_s:
            self._set_up(False, f"no frame for {now - self._last_frame:.1f} s "
                                f"(read timeout {self.options.read_timeout_s:.1f} s)")
        reader = self._reader
        since = reader.busy_since
        if since is not None and now - since > reader.busy_limit_s + STUCK_GRACE_S \
                and not self._closed.is_set():
            log.error("stream %s: reader stuck in open/read for %.1f s; abandoning it and "
                      "starting a new one", self.name, now - since)
            self._set_up(False, "reader stuck")
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


def _redact(uri: str) -> str:
    """Hide a password in ``scheme://user:password@host`` for logs."""
    return re.sub(r"(://[^:/@]+:)[^@/]*@", r"\1***@", uri)


Source = Union[FiniteSource, LiveSource]


def open_source(spec: str, options: SourceOptions, metrics: CaptureMetrics | None = None,
                index: int = 0, notify: threading.Event | None = None,
                name: str | None = None) -> Source:
    """Open a source from ``[NAME=]URI`` (see :func:`parse_spec`).

    Live sources never fail here: a camera or server that is down is retried in the
    background. Finite sources are opened at once.

    Args:
        spec: the source string.
        options: see :class:`SourceOptions`.
        metrics: capture metrics; the stream's labels are created at zero.
        index: position in the source list (default names of URLs).
        notify: event live sources set when a frame arrives.
        name: overrides the stream name.

    Raises:
        FileNotFoundError: a file or folder that does not exist.
        ValueError: a file OpenCV cannot open, or a folder without images.
    """
    default_name, uri = parse_spec(spec, index)
    name = name or default_name
    if metrics:
        metrics.add_stream(name)
    kind = source_kind(uri)
    if kind in ("rtsp", "http", "camera"):
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
