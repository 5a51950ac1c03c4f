"""Sink rendering, off the receive path: annotation, MP4 files, the MJPEG view, a window.

The receive loop hands each ``result`` message to :class:`Renderer`, whose own thread
draws the boxes, writes the annotated MP4 of the message's stream, publishes the newest
annotated frame to :class:`MJPEGHub` (served at ``/``, ``/stream.mjpg``,
``/snapshot.jpg``) and shows a desktop window when one was asked for and a display exists.
"""

from __future__ import annotations

import html
import logging
import os
import queue
import re
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import cv2
import numpy as np

from common import wire

log = logging.getLogger("sink.render")

#: Box colours (BGR) by gender.
COLOURS = {"female": (180, 105, 255), "male": (255, 160, 40)}
UNKNOWN_COLOUR = (0, 220, 0)


def face_label(face: dict) -> str:
    """Text shown above a box: gender and the age range as the seed's app showed it
    (``"female 26-31"``), or the rounded age in years when the model gives no range."""
    parts = []
    if face.get("gender"):
        parts.append(str(face["gender"]))
    rng = face.get("age_range")
    if rng:
        parts.append(f"{int(rng[0])}-{int(rng[1])}")
    elif face.get("age") is not None:
        parts.append(f"{float(face['age']):.0f}")
    return " ".join(parts) or f"{float(face.get('confidence', 0.0)):.2f}"


def annotate(image: np.ndarray, faces: list[dict]) -> np.ndarray:
    """Draw each face's bounding box and label on ``image`` in place.

    Args:
        image: ``(H, W, 3) uint8`` BGR frame (writable).
        faces: result face maps; ``box`` is ``[x1, y1, x2, y2]`` absolute pixels.

    Returns:
        ``image`` (same array).
    """
    h, w = image.shape[:2]
    scale = max(0.7, min(w, h) / 720.0)  # font 0.35 at 270p, 0.5 at 720p
    thick = max(1, int(round(2 * scale)))
    for face in faces:
        x1, y1, x2, y2 = (int(round(v)) for v in face["box"])
        colour = COLOURS.get(face.get("gender"), UNKNOWN_COLOUR)
        cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), colour, thick)
        text = face_label(face)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, thick)
        ty = y1 - 4 if y1 - th - base - 4 >= 0 else min(h - 1, y2 + th + 4)
        cv2.rectangle(image, (x1, ty - th - base), (x1 + tw + 2, ty + base // 2), colour, -1)
        cv2.putText(image, text, (x1 + 1, ty - base // 2), cv2.FONT_HERSHEY_SIMPLEX,
                    0.5 * scale, (0, 0, 0), thick, cv2.LINE_AA)
    return image


def message_image(msg: wire.Message) -> np.ndarray | None:
    """The message's frame as a writable ``(H, W, 3) uint8`` BGR array (JPEG decoded);
    ``None`` when a JPEG payload cannot be decoded."""
    if msg.image is not None:
        return msg.image.copy()
    img = cv2.imdecode(np.frombuffer(msg.image_bytes, np.uint8), cv2.IMREAD_COLOR)
    return img


def safe_name(stream: str) -> str:
    """A file-name-safe version of a stream name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stream).strip("._") or "stream"


#: Most streams written to MP4 files at once; later new streams are not recorded (logged
#: once each) so a flood of stream names cannot exhaust file descriptors.
MAX_VIDEO_STREAMS = 16


class VideoOutputs:
    """One ``cv2.VideoWriter`` (mp4v) per stream: the first stream seen writes
    ``out_dir/annotated.mp4``, later ones ``out_dir/annotated_<stream>.mp4``.

    Args:
        out_dir: output folder (created).
        fps: frame rate written into the files (frames/s); 0 = the header's ``fps`` or 25.
        append: keep existing files: write ``<name>.partN.mp4`` instead (after a restart).
    """

    def __init__(self, out_dir: Path, fps: float = 0.0, append: bool = False):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.fps = fps
        self.append = append
        self.writers: dict[str, tuple[cv2.VideoWriter, tuple[int, int], Path]] = {}
        self.frames: dict[str, int] = {}
        self.skipped: set[str] = set()  # streams not recorded (cap reached or open failed)

    def path_for(self, stream: str) -> Path:
        """File the stream is (or will be) written to."""
        if stream in self.writers:
            return self.writers[stream][2]
        stem = "annotated" if not self.writers else f"annotated_{safe_name(stream)}"
        path = self.out_dir / f"{stem}.mp4"
        part = 1
        while self.append and path.exists():
            path = self.out_dir / f"{stem}.part{part}.mp4"
            part += 1
        return path

    def write(self, stream: str, image: np.ndarray, header_fps: float | None = None) -> bool:
        """Append a ``(H, W, 3) uint8`` BGR frame to the stream's file (resized to the
        file's size when the stream changes resolution).

        Returns:
            ``False`` when the stream is not recorded: more than :data:`MAX_VIDEO_STREAMS`
            streams, or its file could not be opened (both logged once per stream).
        """
        if stream in self.skipped:
            return False
        if stream not in self.writers and len(self.writers) >= MAX_VIDEO_STREAMS:
            self.skipped.add(stream)
            log.warning("stream %r not recorded to MP4: already %d video files open "
                        "(MAX_VIDEO_STREAMS)", stream, MAX_VIDEO_STREAMS)
            return False
        if stream not in self.writers:
            path = self.path_for(stream)
            fps = self.fps or (header_fps if header_fps and header_fps > 0 else 25.0)
            size = (image.shape[1], image.shape[0])
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), size)
            if not writer.isOpened():
                self.skipped.add(stream)
                log.error("stream %r not recorded: cannot open a video writer for %s",
                          stream, path)
                return False
            self.writers[stream] = (writer, size, path)
            self.frames[stream] = 0
            log.info("writing stream %r to %s (%dx%d, %.2f fps)", stream, path, *size, fps)
        writer, size, _ = self.writers[stream]
        if (image.shape[1], image.shape[0]) != size:
            image = cv2.resize(image, size)
        writer.write(image)
        self.frames[stream] += 1
        return True

    def close(self) -> None:
        """Finish every file (writes the MP4 index)."""
        for writer, _, path in self.writers.values():
            writer.release()
            log.info("closed %s", path)
        self.writers.clear()


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>agegender live view</title>
<style>body{{font-family:sans-serif;background:#111;color:#eee;margin:1em}}
img{{max-width:100%;border:1px solid #444}}</style></head>
<body><h1>agegender: live annotated view</h1>
<p>{info} &middot; <a href="/metrics" style="color:#8cf">/metrics</a></p>
<img src="/stream.mjpg" alt="live annotated stream"></body></html>
"""


class MJPEGHub:
    """Newest annotated frame, served as a live MJPEG stream and a snapshot.

    The frame is JPEG-encoded lazily, once per new frame, only when someone asks for it,
    so an unwatched view costs nothing.

    Args:
        stop: set at shutdown; streaming responses end within 0.5 s.
        quality: JPEG quality (10-100).
    """

    def __init__(self, stop: threading.Event, quality: int = 80):
        self.stop = stop
        self.quality = quality
        self._cond = threading.Condition()
        self._image: np.ndarray | None = None
        self._seq = 0
        self._jpeg: tuple[int, bytes] | None = None
        self.clients = 0

    def publish(self, image: np.ndarray) -> None:
        """Make ``image`` (``(H, W, 3) uint8`` BGR, not modified afterwards) the newest."""
        with self._cond:
            self._image = image
            self._seq += 1
            self._cond.notify_all()

    def jpeg(self) -> tuple[int, bytes | None]:
        """``(seq, JPEG bytes)`` of the newest frame; ``(0, None)`` before the first."""
        with self._cond:
            seq, image, cached = self._seq, self._image, self._jpeg
        if image is None:
            return 0, None
        if cached is not None and cached[0] == seq:
            return cached
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            return seq, None
        self._jpeg = (seq, buf.tobytes())
        return self._jpeg

    def routes(self, info: str = "") -> dict:
        """HTTP routes for :class:`common.service.HTTPServer`: ``/``, ``/stream.mjpg``,
        ``/snapshot.jpg``."""
        return {"/": lambda req: self._page(req, info), "/index.html":
                lambda req: self._page(req, info), "/stream.mjpg": self._stream,
                "/snapshot.jpg": self._snapshot}

    @staticmethod
    def _page(req: BaseHTTPRequestHandler, info: str) -> None:
        body = PAGE.format(info=html.escape(info or "end-to-end face age and gender")).encode()
        req.send_response(200)
        req.send_header("Content-Type", "text/html; charset=utf-8")
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)

    def _snapshot(self, req: BaseHTTPRequestHandler) -> None:
        _, data = self.jpeg()
        if data is None:
            body = b"no frame yet\n"
            req.send_response(503)
            req.send_header("Content-Type", "text/plain")
        else:
            body = data
            req.send_response(200)
            req.send_header("Content-Type", "image/jpeg")
        req.send_header("Content-Length", str(len(body)))
        req.send_header("Cache-Control", "no-store")
        req.end_headers()
        req.wfile.write(body)

    def _stream(self, req: BaseHTTPRequestHandler) -> None:
        req.send_response(200)
        req.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        req.send_header("Cache-Control", "no-store")
        req.send_header("Connection", "close")
        req.end_headers()
        with self._cond:
            self.clients += 1
        last = -1
        try:
            while not self.stop.is_set():
                with self._cond:
                    self._cond.wait_for(lambda: self._seq != last or self.stop.is_set(), 0.5)
                seq, data = self.jpeg()
                if data is None or seq == last:
                    continue
                last = seq
                req.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                + str(len(data)).encode() + b"\r\n\r\n" + data + b"\r\n")
                req.wfile.flush()
        finally:
            with self._cond:
                self.clients -= 1


def display_available() -> tuple[bool, str]:
    """Whether a desktop window can be opened: ``(ok, reason when not)``."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False, "no display found (DISPLAY and WAYLAND_DISPLAY are unset)"
    info = cv2.getBuildInformation()
    gui = re.search(r"GUI:\s*(\S+)", info)
    if gui and gui.group(1).upper() in ("NONE", "NO"):
        return False, ("this OpenCV has no GUI support (opencv-python-headless); install "
                       "opencv-python for a window")
    return True, ""


class Renderer:
    """A thread that annotates frames and feeds the MP4 files, the MJPEG hub and a window.

    Args:
        videos: MP4 outputs, or ``None`` for no files.
        hub: MJPEG hub, or ``None`` for no live view.
        display: open a desktop window (checked with :func:`display_available`).
        on_drop: called with a reason when a frame is not rendered
            (``"queue_full"`` for live frames when rendering falls behind, ``"bad_image"``).
        queue_size: frames waiting for rendering at most.
    """

    def __init__(self, videos: VideoOutputs | None, hub: MJPEGHub | None, display: bool,
                 on_drop=lambda reason: None, queue_size: int = 32):
        self.videos = videos
        self.hub = hub
        self.display = display
        if display:
            ok, why = display_available()
            if not ok:
                log.warning("--display asked for a window but %s; continuing without one "
                            "(the live view is on the HTTP port at /)", why)
                self.display = False
        self.on_drop = on_drop
        self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._abort = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="render", daemon=True)
        self._thread.start()

    @property
    def active(self) -> bool:
        """True when there is anything to render to."""
        return bool(self.videos or self.hub or self.display)

    def submit(self, msg: wire.Message, block: bool, stop: threading.Event) -> bool:
        """Queue a ``result`` message for rendering.

        ``block=True`` (files) waits for room until ``stop`` is set, so every frame reaches
        the MP4; ``block=False`` (live) drops the frame when rendering falls behind.
        """
        while True:
            try:
                self.queue.put(msg, block=block, timeout=0.1)
                return True
            except queue.Full:
                if not block or stop.is_set() or not self._thread.is_alive():
                    self.on_drop("queue_full")
                    return False

    def _run(self) -> None:
        while True:
            msg = self.queue.get()
            if msg is None or self._abort.is_set():
                return
            try:
                self._render(msg)
            except Exception as exc:  # one bad frame or output must not stop the others
                if self.error is None:
                    log.exception("rendering frame %s/%s failed; going on", msg.stream,
                                  msg.seq)
                self.error = exc
                self.on_drop("bad_image")

    def _render(self, msg: wire.Message) -> None:
        image = message_image(msg)
        if image is None:
            self.on_drop("bad_image")
            return
        annotate(image, msg.header.get("faces", []))
        if self.videos is not None:
            self.videos.write(msg.stream, image, msg.header.get("fps"))
        if self.hub is not None:
            self.hub.publish(image)
        if self.display:
            self._show(msg.stream, image)

    def _show(self, stream: str, image: np.ndarray) -> None:
        try:
            cv2.imshow(f"agegender {stream}", image)
            cv2.waitKey(1)
        except cv2.error as exc:
            log.warning("cannot show a window (%s); continuing without one", exc)
            self.display = False

    def close(self, drain: bool, timeout_s: float = 30.0) -> None:
        """Stop the thread: ``drain=True`` renders what is queued first (end of stream),
        ``False`` discards it (shutdown); then finishes the MP4 files."""
        if not drain:
            self._abort.set()
            try:
                while True:
                    self.queue.get_nowait()
            except queue.Empty:
                pass
        deadline = time.monotonic() + (timeout_s if drain else 1.0)
        while self._thread.is_alive() and time.monotonic() < deadline:
            try:
                self.queue.put(None, timeout=0.1)
                break
            except queue.Full:
                continue
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            log.warning("renderer still busy at shutdown; the MP4 files may be incomplete")
        elif self.videos is not None:
            self.videos.close()
        if self.display:
            try:
                cv2.destroyAllWindows()
            except cv2.error:
                log.debug("no windows to close")
