"""Live sources against a real RTSP server on 127.0.0.1 (GStreamer gst-rtsp-server):
frames arrive, a dead camera (SIGSTOP) is marked down and comes back, a server that is
down at start is retried, and a slow consumer always gets fresh frames."""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from common.metrics import StageMetrics
from services.capture.live import LiveSource
from services.capture.metrics import CaptureMetrics
from services.capture.sources import open_source
from services.capture.spec import SourceOptions

CLIP = "face-demographics-walking-and-pause.mp4"   # 480x270, 12 fps
FPS = 12.0

pytestmark = pytest.mark.slow


def _metrics():
    reg = CollectorRegistry()
    return CaptureMetrics(reg, StageMetrics("capture", reg)), reg


def _wait_for(cond, timeout_s, step=0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def test_rtsp_source_delivers_frames(rtsp_server, clip):
    # given a real RTSP server looping the clip
    server = rtsp_server(clip(CLIP), loop=True)
    cm, reg = _metrics()
    src = open_source(f"cam={server.url}", SourceOptions(), cm)
    try:
        # when frames are read
        first = src.read(15.0)
        assert first is not None, "no frame from the RTSP server within 15 s"
        frames = [first] + [f for f in (src.read(2.0) for _ in range(10)) if f is not None]
        # then they are the clip's 480x270 BGR frames, the source is up and counted
        assert isinstance(src, LiveSource)
        assert len(frames) >= 8
        assert all(f.image.shape == (270, 480, 3) and f.image.dtype == np.uint8
                   for f in frames)
        assert frames[-1].image.mean() > 20          # real picture, not a black frame
        assert src.up and reg.get_sample_value("agegender_source_up", {"stream": "cam"}) == 1
    finally:
        src.close()


def test_dead_camera_is_marked_down_then_reconnects(rtsp_server, clip):
    # given a live RTSP source with a 2 s read timeout that is streaming
    server = rtsp_server(clip(CLIP), loop=True)
    cm, reg = _metrics()
    opts = SourceOptions(open_timeout_s=2.0, read_timeout_s=2.0, reconnect_min_s=0.2,
                         reconnect_max_s=1.0)
    src = open_source(f"cam={server.url}", opts, cm)
    try:
        assert src.read(15.0) is not None
        assert src.up
        # when the server freezes (SIGSTOP: TCP stays open, no data)
        server.pause()
        t_stop = time.monotonic()
        # then within read_timeout_s (+ slack for a loaded CI box) it is marked down
        assert _wait_for(lambda: (src.check(), not src.up)[1], opts.read_timeout_s + 2.0)
        t_down = time.monotonic() - t_stop
        assert reg.get_sample_value("agegender_source_up", {"stream": "cam"}) == 0
        # and reconnect attempts start, without any call blocking the consumer
        assert _wait_for(lambda: src.reconnects >= 1, 10.0)
        t0 = time.monotonic()
        assert src.read(0.5) is None
        assert time.monotonic() - t0 < 1.5
        # when the server comes back
        server.resume()
        got = None
        deadline = time.monotonic() + 25.0
        while got is None and time.monotonic() < deadline:
            got = src.read(0.5)
        # then frames flow again and the metrics tell the story
        assert got is not None, "no frame within 25 s after SIGCONT"
        assert src.up
        assert reg.get_sample_value("agegender_source_up", {"stream": "cam"}) == 1
        assert reg.get_sample_value("agegender_source_reconnects_total",
                                    {"stream": "cam"}) >= 1
        print(f"marked down {t_down:.2f} s after SIGSTOP; reconnects={src.reconnects}")
    finally:
        src.close()


def test_server_down_at_start_comes_up_later(rtsp_server, clip):
    # given a source pointing at a port where the server is not running yet
    server = rtsp_server(clip(CLIP), loop=True, start=False)
    cm, reg = _metrics()
    opts = SourceOptions(open_timeout_s=2.0, read_timeout_s=2.0, reconnect_min_s=0.2,
                         reconnect_max_s=1.0)
    src = open_source(f"cam={server.url}", opts, cm)
    try:
        # when a moment passes / then it is down and retrying
        assert src.read(1.5) is None
        assert not src.up and src.reconnects >= 1
        # when the server starts / then frames arrive after a reconnect
        server.start()
        got = None
        deadline = time.monotonic() + 25.0
        while got is None and time.monotonic() < deadline:
            got = src.read(0.5)
        assert got is not None, "no frame within 25 s after the server started"
        assert reg.get_sample_value("agegender_source_up", {"stream": "cam"}) == 1
    finally:
        src.close()


def test_slow_consumer_gets_fresh_frames(rtsp_server, clip):
    # given a live source at 12 fps and a consumer that only manages 5 fps
    server = rtsp_server(clip(CLIP), loop=True)
    cm, reg = _metrics()
    src = open_source(f"cam={server.url}", SourceOptions(), cm)
    try:
        assert src.read(15.0) is not None
        time.sleep(1.0)                   # let the open-time probe burst pass
        start_read = src.frames_read
        ages, t_end = [], time.monotonic() + 6.0
        # when it consumes at 5 fps for 6 s
        while time.monotonic() < t_end:
            f = src.read(1.0)
            assert f is not None
            ages.append((time.time_ns() - f.t_capture_ns) / 1e9)
            time.sleep(0.2)
        read_rate = (src.frames_read - start_read) / 6.0
        # then frame age stays within about two frame intervals and does not grow
        interval = 1.0 / FPS
        p90 = sorted(ages)[int(0.9 * len(ages))]
        print(f"ages: median {statistics.median(ages) * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms,"
              f" max {max(ages) * 1000:.0f} ms; reader {read_rate:.1f} fps; "
              f"superseded {src.superseded}")
        assert p90 <= 2 * interval + 0.05
        assert statistics.mean(ages[-10:]) <= 2 * interval + 0.05   # no creep at the end
        # and the reader keeps draining the connection at the source's rate, so no
        # backlog can build inside FFmpeg; the frames the consumer missed are counted
        assert read_rate >= 0.8 * FPS
        assert src.superseded >= 20
        assert reg.get_sample_value("agegender_frames_dropped_total",
                                    {"stage": "capture", "reason": "superseded"}) == \
            src.superseded
    finally:
        src.close()
