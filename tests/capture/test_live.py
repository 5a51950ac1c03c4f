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
from services.capture.spec import SourceOptions, SourceState
from tests.waits import wait_for

CLIP = "face-demographics-walking-and-pause.mp4"   # 480x270, 12 fps
FPS = 12.0

pytestmark = pytest.mark.slow


@pytest.fixture
def live():
    """``live(url, **options) -> (LiveSource, registry)`` with capture metrics; every
    source it opened is closed at teardown."""
    opened = []

    def open_live(url, **options):
        reg = CollectorRegistry()
        src = open_source(f"cam={url}", SourceOptions(**options),
                          CaptureMetrics(reg, StageMetrics("capture", reg)))
        opened.append(src)
        return src, reg

    yield open_live
    for src in opened:
        src.close()


def _first_frame_within(src, timeout_s):
    """The first frame that arrives within ``timeout_s`` seconds, else ``None``."""
    deadline = time.monotonic() + timeout_s
    got = None
    while got is None and time.monotonic() < deadline:
        got = src.read(0.5)
    return got


#: Reconnect quickly in the tests that take a camera away.
FAST = dict(open_timeout_s=2.0, read_timeout_s=2.0, reconnect_min_s=0.2, reconnect_max_s=1.0)


def test_rtsp_source_delivers_frames(rtsp_server, live, clip):
    # given a real RTSP server looping the clip
    src, reg = live(rtsp_server(clip(CLIP), loop=True).url)
    # when frames are read
    first = src.read(15.0)
    assert first is not None, "no frame from the RTSP server within 15 s"
    frames = [first] + [f for f in (src.read(2.0) for _ in range(10)) if f is not None]
    # then they are the clip's 480x270 BGR frames, the source is up and counted
    assert isinstance(src, LiveSource)
    assert len(frames) >= 8
    assert all(f.image.shape == (270, 480, 3) and f.image.dtype == np.uint8 for f in frames)
    assert frames[-1].image.mean() > 20          # real picture, not a black frame
    assert src.state is SourceState.UP
    assert reg.get_sample_value("agegender_source_up", {"stream": "cam"}) == 1


def test_dead_camera_is_marked_down_then_reconnects(rtsp_server, live, clip):
    # given a live RTSP source with a 2 s read timeout that is streaming
    server = rtsp_server(clip(CLIP), loop=True)
    src, reg = live(server.url, **FAST)
    assert src.read(15.0) is not None
    assert src.up
    # when the server freezes (SIGSTOP: TCP stays open, no data)
    server.pause()
    t_stop = time.monotonic()
    # then it is marked down (after read_timeout_s; generous limit for a loaded machine)
    wait_for(lambda: (src.check(), not src.up)[1], 30, "the source to be marked down")
    t_down = time.monotonic() - t_stop
    assert reg.get_sample_value("agegender_source_up", {"stream": "cam"}) == 0
    # and reconnect attempts start, without any call blocking the consumer
    wait_for(lambda: src.reconnects >= 1, 30, "a reconnect attempt")
    assert src.state in (SourceState.DOWN, SourceState.RECONNECTING)
    t0 = time.monotonic()
    assert src.read(0.5) is None
    assert time.monotonic() - t0 < 1.5
    # when the server comes back
    server.resume()
    # then frames flow again and the metrics tell the story
    assert _first_frame_within(src, 25.0) is not None, "no frame within 25 s after SIGCONT"
    assert src.state is SourceState.UP
    assert reg.get_sample_value("agegender_source_up", {"stream": "cam"}) == 1
    assert reg.get_sample_value("agegender_source_reconnects_total", {"stream": "cam"}) >= 1
    print(f"marked down {t_down:.2f} s after SIGSTOP; reconnects={src.reconnects}")


def test_server_down_at_start_comes_up_later(rtsp_server, live, clip):
    # given a source pointing at a port where the server is not running yet
    server = rtsp_server(clip(CLIP), loop=True, start=False)
    src, reg = live(server.url, **FAST)
    # when the first attempts fail / then it is down and retrying
    wait_for(lambda: src.reconnects >= 1, 30, "a reconnect attempt")
    assert src.read(0.1) is None and not src.up
    # when the server starts / then frames arrive after a reconnect
    server.start()
    assert _first_frame_within(src, 25.0) is not None, \
        "no frame within 25 s after the server started"
    assert reg.get_sample_value("agegender_source_up", {"stream": "cam"}) == 1


def test_slow_consumer_gets_fresh_frames(rtsp_server, live, clip):
    # given a live source at 12 fps and a consumer that only manages 5 fps
    src, reg = live(rtsp_server(clip(CLIP), loop=True).url)
    assert src.read(15.0) is not None
    # (the open-time probe delivers a burst: wait until the reader is at the clip's pace)
    wait_for(lambda: src.frames_read >= FPS, 30, "a second of frames")
    start_read, t_start = src.frames_read, time.monotonic()
    ages, t_end = [], time.monotonic() + 6.0
    # when it consumes at 5 fps for 6 s
    while time.monotonic() < t_end:
        f = src.read(5.0)
        assert f is not None
        ages.append((time.time_ns() - f.t_capture_ns) / 1e9)
        time.sleep(0.2)
    read_rate = (src.frames_read - start_read) / (time.monotonic() - t_start)
    p90 = sorted(ages)[int(0.9 * len(ages))]
    print(f"ages: median {statistics.median(ages) * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms,"
          f" max {max(ages) * 1000:.0f} ms; reader {read_rate:.1f} fps; "
          f"superseded {src.superseded}")
    # then frame age does not grow: a queue would age 0.6 s per second here (12 fps in,
    # 5 out), over 3 s by the end; the newest frame is a read or two old (the bound
    # leaves room for a busy machine)
    assert p90 < 1.5
    assert statistics.mean(ages[-10:]) < statistics.mean(ages[:10]) + 0.5   # no creep
    # and the reader keeps draining the connection at the source's rate, so no
    # backlog can build inside FFmpeg; the frames the consumer missed are counted
    assert read_rate >= 0.6 * FPS
    assert src.superseded >= 15
    assert reg.get_sample_value("agegender_frames_dropped_total",
                                {"stage": "capture", "reason": "superseded"}) == \
        src.superseded
