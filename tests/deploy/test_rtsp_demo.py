"""The demo profile's RTSP camera: a real GStreamer RTSP server on 127.0.0.1 looping a clip,
read with OpenCV's FFmpeg backend like the capture service reads cameras."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time

import pytest

from tests.conftest import free_port
from tests.deploy import helpers as h

SERVER = h.DEPLOY / "rtsp" / "rtsp_demo_server.py"
CLIP = "face-demographics-walking-and-pause.mp4"
CLIP_FRAMES = 41  # frames in the clip (ffprobe nb_frames)


def system_python_with_gst_rtsp() -> str:
    """/usr/bin/python3 when it has GStreamer's RTSP server bindings, else skip."""
    py = shutil.which("python3", path="/usr/bin")
    if py is None:
        pytest.skip("no /usr/bin/python3")
    probe = subprocess.run([py, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
                            "from gi.repository import GstRtspServer"],
                           capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip("python3-gi + gir1.2-gst-rtsp-server-1.0 are not installed")
    return py


@pytest.fixture
def rtsp_server(tmp_path):
    """Start the server with ``args``; yield ``(url, process)``; stop it afterwards."""
    py = system_python_with_gst_rtsp()
    procs = []

    def start(*args: str):
        port = free_port()
        log = open(tmp_path / f"rtsp-{port}.log", "wb")
        p = subprocess.Popen([py, str(SERVER), "--host", "127.0.0.1", "--port", str(port),
                              *args], stdout=log, stderr=subprocess.STDOUT)
        procs.append(p)
        deadline = time.monotonic() + 30
        text = ""
        while "serving rtsp://" not in text:
            text = (tmp_path / f"rtsp-{port}.log").read_text()
            assert p.poll() is None, text
            assert time.monotonic() < deadline, text
            time.sleep(0.1)
        return f"rtsp://127.0.0.1:{port}/demo", p, text

    yield start
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)


def read_frames(url: str, n: int, timeout_s: float = 30.0):
    import cv2
    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
    try:
        assert cap.isOpened(), f"cannot open {url}"
        frames, deadline = [], time.monotonic() + timeout_s
        while len(frames) < n and time.monotonic() < deadline:
            ok, frame = cap.read()
            if ok:
                frames.append(frame)
        return frames
    finally:
        cap.release()


@pytest.mark.slow
def test_demo_camera_loops_the_clip_past_its_end(rtsp_server, clip):
    # Given the server looping a 41-frame clip, when a client reads 1.5x that many frames,
    # then they all arrive as 480x270 BGR frames: the stream never ends.
    url, proc, log = rtsp_server("--clip", str(clip(CLIP)))
    assert f"{CLIP_FRAMES} frames 480x270" in log
    frames = read_frames(url, int(CLIP_FRAMES * 1.5))
    assert len(frames) == int(CLIP_FRAMES * 1.5)
    assert all(f.shape == (270, 480, 3) for f in frames)
    assert proc.poll() is None


@pytest.mark.slow
def test_demo_camera_serves_a_test_pattern_without_a_clip(rtsp_server, tmp_path):
    # Given no clip, when a client connects, then it still gets frames (the test pattern).
    url, _, log = rtsp_server("--clip", str(tmp_path / "missing.mp4"))
    assert "test pattern" in log
    frames = read_frames(url, 10)
    assert len(frames) == 10 and frames[0].shape == (360, 640, 3)


def test_demo_camera_rejects_bad_options():
    py = system_python_with_gst_rtsp()
    res = subprocess.run([py, str(SERVER), "--path", "demo"], capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 2 and "--path must start with '/'" in res.stderr
