"""Finite sources: source strings, video files (mp4/avi/gif), image folders with odd
images, the built-in demo, looping."""

from __future__ import annotations

import logging
import time

import cv2
import numpy as np
import pytest
from PIL import Image
from prometheus_client import CollectorRegistry

from common.images import BadImage, to_bgr8
from common.metrics import StageMetrics
from services.capture.demo import DemoSource
from services.capture.finite import ImageFolderSource, VideoFileSource
from services.capture.live import LiveSource
from services.capture.metrics import CaptureMetrics
from services.capture.sources import open_source
from services.capture.spec import SourceOptions, SourceState
from tests.waits import wait_for


def _metrics():
    reg = CollectorRegistry()
    return CaptureMetrics(reg, StageMetrics("capture", reg)), reg


def _drain(source, limit=10_000):
    frames = []
    while len(frames) < limit:
        f = source.read()
        if f is None:
            break
        frames.append(f)
    return frames


def test_video_file_reads_every_frame_of_a_real_clip(clip):
    # given the 41-frame shared clip / when read to the end / then 41 BGR frames, 12 fps
    path = clip("face-demographics-walking-and-pause.mp4")
    src = open_source(str(path), SourceOptions())
    frames = _drain(src)
    src.close()
    assert isinstance(src, VideoFileSource) and src.fps == pytest.approx(12.0)
    assert len(frames) == 41
    assert [f.index for f in frames] == list(range(41))
    assert all(f.image.shape == (270, 480, 3) and f.image.dtype == np.uint8 for f in frames)
    assert frames[0].t_capture_ns <= frames[-1].t_capture_ns


def test_avi_and_gif_files_are_sources(tmp_path):
    # given an MJPG AVI of 7 frames and a 5-frame GIF
    avi = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(avi), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    assert writer.isOpened()
    for i in range(7):
        writer.write(np.full((48, 64, 3), 30 * i, np.uint8))
    writer.release()
    gif = tmp_path / "anim.gif"
    imgs = [Image.fromarray(np.full((40, 60, 3), 40 * i, np.uint8)) for i in range(5)]
    imgs[0].save(gif, save_all=True, append_images=imgs[1:], duration=100, loop=0)
    # when each is read to the end
    avi_frames = _drain(open_source(str(avi), SourceOptions()))
    gif_src = open_source(f"anim={gif}", SourceOptions())
    gif_frames = _drain(gif_src)
    # then every frame arrives as (H, W, 3) uint8
    assert len(avi_frames) == 7 and avi_frames[0].image.shape == (48, 64, 3)
    assert len(gif_frames) == 5 and gif_frames[0].image.shape == (40, 60, 3)
    assert gif_src.name == "anim"
    assert gif_frames[4].image.mean() > gif_frames[0].image.mean()


def test_missing_and_broken_files_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        open_source(str(tmp_path / "nope.mp4"), SourceOptions())
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 10)
    with pytest.raises(ValueError, match="cannot open"):
        open_source(str(bad), SourceOptions())
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="no image files"):
        open_source(str(empty), SourceOptions())


def test_image_folder_normalises_odd_images_and_counts_broken_ones(tmp_path, caplog):
    # given a folder with RGBA, 2x2 gray, gray+alpha, 16-bit, 1x1, a broken PNG and a text
    d = tmp_path / "imgs"
    d.mkdir()
    Image.fromarray(np.dstack([np.full((20, 30, 3), 200, np.uint8),
                               np.zeros((20, 30), np.uint8)]), "RGBA").save(d / "a_rgba.png")
    Image.fromarray(np.array([[0, 255], [128, 64]], np.uint8), "L").save(d / "b_gray2x2.png")
    Image.fromarray(np.dstack([np.full((8, 9), 77, np.uint8), np.full((8, 9), 255, np.uint8)]),
                    "LA").save(d / "c_gray_alpha.png")
    cv2.imwrite(str(d / "d_16bit.png"), np.full((5, 6, 3), 65535, np.uint16))
    Image.fromarray(np.array([[[255, 0, 0]]], np.uint8), "RGB").save(d / "e_1x1.png")
    (d / "f_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    cv2.imwrite(str(d / "g_normal.jpg"), np.full((30, 40, 3), 90, np.uint8))
    (d / "readme.txt").write_text("not an image")
    cm, reg = _metrics()
    # when the folder is read as a source
    with caplog.at_level(logging.WARNING, logger="services.capture"):
        src = open_source(str(d), SourceOptions(fps=25), cm)
        frames = _drain(src)
    # then the six decodable images arrive as (H, W, 3) uint8 BGR, in name order
    assert isinstance(src, ImageFolderSource) and src.fps == 25
    shapes = [f.image.shape for f in frames]
    assert shapes == [(20, 30, 3), (2, 2, 3), (8, 9, 3), (5, 6, 3), (1, 1, 3), (30, 40, 3)]
    assert all(f.image.dtype == np.uint8 and f.image.flags.c_contiguous for f in frames)
    assert frames[0].image[0, 0].tolist() == [200, 200, 200]      # alpha dropped
    assert frames[1].image[0, 1].tolist() == [255, 255, 255]      # gray replicated
    assert frames[2].image[0, 0].tolist() == [77, 77, 77]         # gray+alpha -> gray
    assert frames[3].image.max() == 255                           # 16-bit -> high byte
    assert frames[4].image[0, 0].tolist() == [0, 0, 255]          # RGB red -> BGR
    # and the broken one is skipped with a clear log line and a counted drop
    assert src.skipped == 1
    assert any("f_broken.png" in r.getMessage() and "bad_image" in r.getMessage()
               for r in caplog.records)
    assert reg.get_sample_value("agegender_frames_dropped_total",
                                {"stage": "capture", "reason": "bad_image"}) == 1


def test_to_bgr8_rejects_what_cannot_be_an_image():
    with pytest.raises(BadImage):
        to_bgr8(None)
    with pytest.raises(BadImage):
        to_bgr8(np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(BadImage):
        to_bgr8(np.zeros((4, 4, 5), np.uint8))
    out = to_bgr8(np.full((3, 3), 0.5, np.float32))
    assert out.shape == (3, 3, 3) and out.dtype == np.uint8 and out[0, 0, 0] == 128


def test_folder_loops_when_asked(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((4, 4, 3), i, np.uint8))
    src = open_source(str(tmp_path), SourceOptions(loop=True))
    frames = [src.read() for _ in range(8)]
    assert [int(f.image[0, 0, 0]) for f in frames] == [0, 1, 2, 0, 1, 2, 0, 1]
    assert src.loops == 2


def test_demo_source_is_a_short_scene_with_a_face(caplog):
    # given the demo source (what capture plays when no source is configured)
    with caplog.at_level(logging.INFO, logger="services.capture"):
        src = open_source("demo", SourceOptions())
    assert isinstance(src, DemoSource) and src.name == "demo" and src.fps == 15
    assert any("DEMO" in r.getMessage() for r in caplog.records)   # says it is the demo
    frames = _drain(src)
    # then ~8 s at 15 fps of 640x360 frames that move
    assert len(frames) == 120
    assert frames[0].image.shape == (360, 640, 3)
    assert not np.array_equal(frames[0].image, frames[60].image)
    # and the real detector finds the astronaut's face
    from common.detectors import make_detector
    det = make_detector()                      # the default backend
    assert all(len(det.detect(frames[i].image)) >= 1 for i in (0, 40, 80, 119))


def test_live_source_without_server_is_down_and_retries():
    # given an RTSP URL where nothing listens
    from tests.conftest import free_port
    cm, reg = _metrics()
    opts = SourceOptions(open_timeout_s=1, read_timeout_s=1, reconnect_min_s=0.1,
                         reconnect_max_s=0.3)
    src = open_source(f"door=rtsp://127.0.0.1:{free_port()}/stream", opts, cm)
    try:
        assert isinstance(src, LiveSource)
        # when the first attempts fail / then it is down, retrying with backoff
        wait_for(lambda: src.reconnects >= 2, 30, "two reconnect attempts")
        assert src.read(0.1) is None
        assert src.state in (SourceState.DOWN, SourceState.RECONNECTING) and not src.up
        assert reg.get_sample_value("agegender_source_up", {"stream": "door"}) == 0
        assert reg.get_sample_value("agegender_source_reconnects_total",
                                    {"stream": "door"}) == src.reconnects
    finally:
        src.close()
    # and once closed it stays closed, whatever its reader was doing
    assert src.state is SourceState.CLOSED


class _MJPEGServer:
    """A real HTTP server on 127.0.0.1 streaming ``multipart/x-mixed-replace`` JPEGs
    (what IP cameras and the sink's MJPEG view serve), 10 frames per second."""

    def __init__(self):
        import http.server
        import threading as th
        frames = []
        for i in range(10):
            img = np.zeros((48, 64, 3), np.uint8)
            cv2.putText(img, str(i), (20, 35), cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255))
            frames.append(cv2.imencode(".jpg", img)[1].tobytes())
        stop = th.Event()
        self.stop = stop

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while not stop.is_set():
                        jpg = frames[i % len(frames)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                         b"Content-Length: " + str(len(jpg)).encode() +
                                         b"\r\n\r\n" + jpg + b"\r\n")
                        i += 1
                        time.sleep(0.1)
                except (BrokenPipeError, ConnectionResetError):
                    return

        http.server.ThreadingHTTPServer.daemon_threads = True
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/video.mjpg"
        self.thread = th.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


def test_http_mjpeg_source_delivers_frames():
    # given a real MJPEG HTTP server
    server = _MJPEGServer()
    cm, reg = _metrics()
    src = open_source(server.url, SourceOptions(open_timeout_s=5, read_timeout_s=3), cm)
    try:
        # when read / then its 64x48 frames arrive and the source is up
        got = [f for f in (src.read(5.0) for _ in range(5)) if f is not None]
        assert src.kind == "http" and src.name == "cam0"
        assert len(got) >= 3 and got[0].image.shape == (48, 64, 3)
        assert reg.get_sample_value("agegender_source_up", {"stream": "cam0"}) == 1
    finally:
        src.close()
        server.close()


def test_missing_camera_device_is_down_and_never_blocks():
    # given a camera device that does not exist
    src = open_source("/dev/video63", SourceOptions(reconnect_min_s=0.1, reconnect_max_s=0.2))
    try:
        t0 = time.monotonic()
        assert src.read(1.0) is None
        assert time.monotonic() - t0 < 10.0  # returns after its timeout, no hang
        assert src.kind == "camera" and src.name == "cam63" and not src.up
        wait_for(lambda: src.reconnects >= 1, 30, "a reconnect attempt")
    finally:
        src.close()


class _HangingCapture:
    """A capture whose read() hangs far past any timeout (as a wedged USB driver or an
    FFmpeg build without interrupt support can), after delivering ``good`` frames."""

    def __init__(self, good: int, release: "threading.Event"):
        self.good = good
        self.release_event = release

    def read(self):
        if self.good > 0:
            self.good -= 1
            time.sleep(0.05)
            return True, np.zeros((8, 8, 3), np.uint8)
        self.release_event.wait(30)          # hangs until the test lets it go
        return False, None

    def release(self):
        pass


def test_hanging_read_never_hangs_the_consumer():
    # given a live source whose device read hangs after 3 frames
    import threading
    unblock = threading.Event()
    opened = []

    class Wedged(LiveSource):
        def _open(self, reader):
            opened.append(reader.generation)
            return _HangingCapture(3 if len(opened) == 1 else 1000, unblock)

    cm, reg = _metrics()
    cm.add_stream("usb")
    src = Wedged("usb", "0", SourceOptions(read_timeout_s=0.5, reconnect_min_s=0.1), cm)
    try:
        assert src.read(2.0) is not None
        # when the read hangs / then the consumer's calls keep returning quickly, the
        # source goes down after read_timeout_s, and the watchdog starts a new reader
        # (the hang lasts 30 s: a bound of a few seconds separates "returns" from "hangs")
        t0 = time.monotonic()
        down_after = None
        while time.monotonic() - t0 < 30.0 and len(opened) < 2:
            t1 = time.monotonic()
            src.read(0.1)
            assert time.monotonic() - t1 < 5.0
            if down_after is None and not src.up:
                down_after = time.monotonic() - t0
        assert down_after is not None and down_after < 10.0
        assert len(opened) == 2, "the stuck reader was not replaced"
        assert reg.get_sample_value("agegender_source_reconnects_total", {"stream": "usb"}) >= 1
        # and frames flow again from the new reader while the old one is still stuck
        assert src.read(2.0) is not None and src.up
    finally:
        unblock.set()
        src.close()
