"""A real RTSP server on 127.0.0.1 for tests, and the ``rtsp_server`` pytest fixture.

The server itself is the demo camera's ``deploy/rtsp/rtsp_demo_server.py`` (GStreamer
``gst-rtsp-server`` through PyGObject), one pipeline per client (``--shared false``). The project's venv has no PyGObject, so it runs as a subprocess of the system
Python (``/usr/bin/python3``, override with ``AGEGENDER_GI_PYTHON``). Debian packages:
``python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base
gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly
gstreamer1.0-libav``.
When they are missing, tests using the fixture are skipped with that reason.

Use from a test module or conftest::

    from tests.rtsp_server import rtsp_server  # noqa: F401  (registers the fixture)

    def test_x(rtsp_server, clip):
        server = rtsp_server(clip("face-demographics-walking-and-pause.mp4"), loop=True)
        url = server.url             # rtsp://127.0.0.1:PORT/stream
        server.pause()               # SIGSTOP: TCP stays open, no data (dead camera)
        server.resume()              # SIGCONT
        server.stop()                # also done by the fixture at teardown
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port

SERVE = Path(__file__).resolve().parents[1] / "deploy" / "rtsp" / "rtsp_demo_server.py"
GI_PYTHON = os.environ.get("AGEGENDER_GI_PYTHON", "/usr/bin/python3")
APT_PACKAGES = ("python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base "
                "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad "
                "gstreamer1.0-plugins-ugly gstreamer1.0-libav")


@functools.lru_cache(maxsize=1)
def rtsp_unavailable_reason() -> str | None:
    """``None`` when the RTSP server can run here, else why not (a skip reason)."""
    if not os.path.exists(GI_PYTHON):
        return f"{GI_PYTHON} not found (needs the system Python with PyGObject)"
    probe = ("import gi; gi.require_version('Gst', '1.0'); "
             "gi.require_version('GstRtspServer', '1.0'); "
             "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
             "import sys; missing = [e for e in ('x264enc', 'rtph264pay', 'appsrc', "
             "'decodebin', 'videoconvert') if Gst.ElementFactory.find(e) is None]; "
             "print(' '.join(missing)); sys.exit(1 if missing else 0)")
    try:
        res = subprocess.run([GI_PYTHON, "-c", probe], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {GI_PYTHON}: {exc}"
    if res.returncode != 0:
        if res.stdout.strip():
            detail = f"missing GStreamer elements: {res.stdout.strip()}"
        else:
            lines = res.stderr.strip().splitlines()
            detail = lines[-1] if lines else f"exit status {res.returncode}"
        return (f"RTSP test server unavailable ({detail}); "
                f"install: apt-get install {APT_PACKAGES}")
    return None


def serve_command(clip: str, port: int, path: str = "/stream", loop: bool = True,
                  max_frames: int = 0) -> list[str]:
    """The command line serving ``clip`` at ``rtsp://127.0.0.1:PORT/PATH`` (one pipeline
    per client; exits 1 when the clip cannot be decoded)."""
    return [GI_PYTHON, str(SERVE), "--clip", str(clip), "--host", "127.0.0.1",
            "--port", str(port), "--path", path, "--loop", str(loop).lower(),
            "--shared", "false", "--max-frames", str(max_frames), "--strict"]


def rtsp_answers(host: str, port: int, path: str = "/stream", timeout_s: float = 1.0) -> bool:
    """True when an RTSP ``OPTIONS`` request to ``host:port`` gets ``RTSP/1.0 200``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as s:
            s.settimeout(timeout_s)
            s.sendall(f"OPTIONS rtsp://{host}:{port}{path} RTSP/1.0\r\nCSeq: 1\r\n\r\n"
                      .encode())
            return s.recv(64).startswith(b"RTSP/1.0 200")
    except OSError:
        return False


class RTSPServer:
    """One server subprocess serving ``clip`` at ``rtsp://127.0.0.1:PORT/stream``.

    Args:
        clip: video file to serve.
        loop: repeat the clip forever.
        port: TCP port (a free one when ``None``).
        max_frames: decode at most this many frames of the clip (0 = all).
    """

    def __init__(self, clip: str | Path, loop: bool = True, port: int | None = None,
                 max_frames: int = 0, path: str = "/stream"):
        self.clip = str(clip)
        self.loop = loop
        self.port = port or free_port()
        self.path = path
        self.max_frames = max_frames
        self.proc: subprocess.Popen | None = None
        self.paused = False

    @property
    def url(self) -> str:
        """The stream's URL."""
        return f"rtsp://127.0.0.1:{self.port}{self.path}"

    def start(self, timeout_s: float = 30.0) -> "RTSPServer":
        """Start the server and wait until it answers RTSP ``OPTIONS``.

        Raises:
            RuntimeError: it exited or did not answer within ``timeout_s`` seconds.
        """
        cmd = serve_command(self.clip, self.port, self.path, self.loop, self.max_frames)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise RuntimeError(f"RTSP server exited with {self.proc.returncode}: "
                                   f"{err[-2000:]}")
            if rtsp_answers("127.0.0.1", self.port, self.path):
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"RTSP server on port {self.port} did not answer within "
                           f"{timeout_s} s")

    def pause(self) -> None:
        """SIGSTOP the server: connections stay open but no data flows (dead camera)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT a paused server."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        """Terminate the server (SIGCONT first if paused; SIGKILL after 3 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.paused:
            self.resume()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=3)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()


@pytest.fixture
def rtsp_server():
    """Factory fixture: ``rtsp_server(clip, loop=True, port=None, max_frames=0,
    start=True) -> RTSPServer``; every server it made is stopped at teardown. Skips the
    test when GStreamer's RTSP server is unavailable (the reason names the packages)."""
    reason = rtsp_unavailable_reason()
    if reason:
        pytest.skip(reason)
    servers: list[RTSPServer] = []

    def make(clip, loop: bool = True, port: int | None = None, max_frames: int = 0,
             start: bool = True) -> RTSPServer:
        server = RTSPServer(clip, loop=loop, port=port, max_frames=max_frames)
        servers.append(server)
        return server.start() if start else server

    yield make
    for server in servers:
        server.stop()


if __name__ == "__main__":  # manual use: python -m tests.rtsp_server CLIP [PORT]
    srv = RTSPServer(sys.argv[1], loop=True,
                     port=int(sys.argv[2]) if len(sys.argv) > 2 else None).start()
    print(srv.url, flush=True)

    def _quit(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _quit)    # SIGTERM stops the server too, no orphan
    try:
        srv.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
