"""The live view output: the newest annotated frame as an MJPEG stream and a snapshot,
served on the sink's HTTP port (``/``, ``/stream.mjpg``, ``/snapshot.jpg``), and the
people now in view and counted so far per stream (``/people.json``, shown on the page)."""

from __future__ import annotations

import html
import json
import threading
from http.server import BaseHTTPRequestHandler

import cv2
import numpy as np

from common.http_server import reply
from services.sink.outputs import Output, SinkResult

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>agegender live view</title>
<style>body{{font-family:sans-serif;background:#111;color:#eee;margin:1em}}
img{{max-width:100%;border:1px solid #444}}</style></head>
<body><h1>agegender: live annotated view</h1>
<p>{info} &middot; <a href="/metrics" style="color:#8cf">/metrics</a></p>
<p id="people">people: &hellip;</p>
<img src="/stream.mjpg" alt="live annotated stream">
<script>
function show(s){{var p=[];for(var k in s){{p.push(k+": "+s[k].in_view+" in view, "+
s[k].counted+" counted so far");}}
document.getElementById("people").textContent="people: "+(p.join(" \u00b7 ")||"none yet");}}
function poll(){{fetch("/people.json",{{cache:"no-store"}}).then(function(r){{return r.json();}})
.then(show).catch(function(){{}});}}
poll();setInterval(poll,1000);
</script></body></html>
"""


class MJPEGHub(Output):
    """Newest annotated frame, served as a live MJPEG stream and a snapshot.

    The frame is JPEG-encoded lazily, once per new frame, only when someone asks for it,
    so an unwatched view costs nothing.

    Args:
        stop: set at shutdown; streaming responses end within 0.5 s.
        quality: JPEG quality (10-100).
    """

    name = "mjpeg"
    needs_image = True

    def __init__(self, stop: threading.Event, quality: int = 80):
        self.stop = stop
        self.quality = quality
        self._cond = threading.Condition()
        self._image: np.ndarray | None = None
        self._seq = 0
        self._jpeg: tuple[int, bytes] | None = None
        self.clients = 0
        #: ``{stream: {"in_view": int, "counted": int}}``, replaced (never changed in
        #: place) by the sink's receive path.
        self.people: dict = {}

    def write(self, result: SinkResult) -> None:
        """Publish the annotated frame (see :meth:`publish`)."""
        self.publish(result.image)

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
        """HTTP routes for :class:`common.http_server.HTTPServer`: ``/``, ``/stream.mjpg``,
        ``/snapshot.jpg``, ``/people.json``."""
        return {"/": lambda req: self._page(req, info), "/index.html":
                lambda req: self._page(req, info), "/stream.mjpg": self._stream,
                "/snapshot.jpg": self._snapshot, "/people.json": self._people}

    def _people(self, req: BaseHTTPRequestHandler) -> None:
        reply(req, 200, "application/json", json.dumps(self.people).encode(),
              {"Cache-Control": "no-store"})

    @staticmethod
    def _page(req: BaseHTTPRequestHandler, info: str) -> None:
        body = PAGE.format(info=html.escape(info or "end-to-end face age and gender")).encode()
        reply(req, 200, "text/html; charset=utf-8", body)

    def _snapshot(self, req: BaseHTTPRequestHandler) -> None:
        _, data = self.jpeg()
        if data is None:
            reply(req, 503, "text/plain", b"no frame yet\n", {"Cache-Control": "no-store"})
        else:
            reply(req, 200, "image/jpeg", data, {"Cache-Control": "no-store"})

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
