"""Issue 12 items 4-7: the annotated video keeps each frame's media time, survives a
SIGKILL of the sink, continues into a part file after a restart, and plays in a browser.

Real parts: the real sink process fed over a real ZeroMQ socket, files read back with
PyAV and ffprobe, and headless Chromium (Debian package ``chromium``).
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import zmq

from common import wire
from services.sink.video import FRAGMENT_EVERY_S, VideoOutput
from tests.browser import play_in_chromium
from tests.conftest import free_port
from tests.media import VFR_TIMES_S, ffprobe, frame_times
from tests.reliability import helpers
from tests.waits import HANG_S, wait_for


def _image(k: int, w: int = 320, h: int = 240) -> np.ndarray:
    """A frame that differs from its neighbours (a moving bar on noise)."""
    img = np.random.default_rng(k).integers(0, 255, (h, w, 3), dtype=np.uint8)
    img[:, (k * 7) % w:(k * 7) % w + 10] = 255
    return img


def test_the_video_keeps_each_frames_media_time(tmp_path):
    # given 20 frames at 30 fps then 21 at 3 fps, of an odd size (4:2:0 needs even sides)
    v = VideoOutput(tmp_path)
    for k, t in enumerate(VFR_TIMES_S):
        assert v.write_frame("cam", _image(k, 321, 241), 6.0, round(t * 1e9))
    v.close()
    # when the file is read back
    times = frame_times(tmp_path / "annotated.mp4")
    # then every frame sits at its own time: frame 20 at 0.667 s, not 3.33 s (6 fps)
    assert len(times) == 41
    assert np.allclose(times, VFR_TIMES_S, atol=0.001), times
    probe = ffprobe(tmp_path / "annotated.mp4")
    assert probe["codec_name"] == "h264" and probe["nb_read_frames"] == 41


def test_frames_without_media_time_and_a_restarted_source_keep_the_file_in_order(tmp_path):
    # given frames without t_media_ns (a foreign producer), then a live source that
    # restarted (its media time starts again at 0) 2 s of wall clock after the last
    # frame, and one more restart without a capture time
    v = VideoOutput(tmp_path, fps=10.0)
    for k in range(3):
        v.write_frame("cam", _image(k), None, None, t_capture_ns=k * 100_000_000)
    for k, t in enumerate((0, 100_000_000, 200_000_000)):
        v.write_frame("cam", _image(10 + k), None, t,
                      t_capture_ns=2_200_000_000 + t)
    v.write_frame("cam", _image(20), None, 0)
    v.close()
    # then the first ones are 1/10 s apart, the restart continues after the 2 s gap it
    # really had, and the last one a nominal frame after the one before
    times = frame_times(tmp_path / "annotated.mp4")
    assert np.allclose(times, [0.0, 0.1, 0.2, 2.2, 2.3, 2.4, 2.5], atol=0.001), times


def _result(seq: int, t_media_ns: int, w: int = 320, h: int = 240) -> list:
    header = dict(wire.frame_header("cam", seq, time.time_ns(), w, h), kind="result",
                  t_media_ns=t_media_ns, fps=12.0,
                  faces=[{"box": [40, 40, 90, 100], "confidence": 0.9, "track": 1,
                          "quality": 0.5, "classify": True, "age": 30.0,
                          "age_range": [25, 35], "gender": "female",
                          "gender_confidence": 0.8}])
    return wire.encode(header, [_image(seq, w, h)])


def _sink(tmp_path, out, name, extra=()):
    port = free_port()
    svc = helpers.Service("sink", ["--input", f"bind:tcp://127.0.0.1:{port}",
                                   "--out-dir", str(out), "--threads", "1",
                                   "--log-level", "INFO", "--mjpeg", "false", *extra],
                          free_port(), log_path=tmp_path / f"{name}.log")
    svc.start().wait_ready(timeout_s=120)
    ctx = zmq.Context.instance()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(f"tcp://127.0.0.1:{port}")
    return svc, push


def _decodable(path) -> int:
    """Frames ffprobe decodes from ``path`` now (0 when it cannot read it)."""
    try:
        return ffprobe(path)["nb_read_frames"]
    except AssertionError:
        return 0


@pytest.mark.slow
def test_a_killed_sink_leaves_a_playable_video_and_a_restart_writes_a_part_file(tmp_path):
    out = tmp_path / "out"
    # given a sink process writing the annotated video of a 12 fps stream
    svc, push = _sink(tmp_path, out, "first")
    try:
        n = 72  # 6 s of media
        for seq in range(n):
            push.send_multipart(_result(seq, round(seq * 1e9 / 12)))
        svc.wait_metric("agegender_sink_frames_total", n, timeout_s=120)
        # when the frames up to the last closed fragment are in the file (one at least
        # every FRAGMENT_EVERY_S of media time), and the sink is killed with SIGKILL (no
        # close, no index written at the end)
        on_disk = n - math.ceil(12 * FRAGMENT_EVERY_S) - 1
        wait_for(lambda: _decodable(out / "annotated.mp4") >= on_disk, 60,
                 f"{on_disk} frames readable in annotated.mp4 while the sink runs")
        svc.proc.kill()
        svc.proc.wait(HANG_S)
    finally:
        svc.kill()
        push.close(0)
    # then the file opens and decodes with ffprobe and PyAV, frames at their media times
    probe = ffprobe(out / "annotated.mp4")
    assert probe["codec_name"] == "h264" and probe["nb_read_frames"] >= on_disk
    times = frame_times(out / "annotated.mp4")
    assert np.allclose(times, np.arange(len(times)) / 12, atol=0.001)

    # given a restarted sink (agegender run restarts it with --append true)
    svc, push = _sink(tmp_path, out, "second", ["--append", "true", "--expected-streams", "1"])
    try:
        for seq in range(n, n + 24):
            push.send_multipart(_result(seq, round(seq * 1e9 / 12)))
        push.send_multipart(wire.encode({"kind": "eos", "stream": "cam", "seq": n + 24,
                                         "t_capture_ns": time.time_ns(), "frames": n + 24}))
        # when it ends normally
        svc.proc.wait(120)
    finally:
        svc.kill()
        push.close(0)
    # then it wrote a new part file next to the first one, which it left as it was
    assert svc.proc.returncode == 0, svc.log_tail()
    assert ffprobe(out / "annotated.part1.mp4")["nb_read_frames"] == 24
    assert ffprobe(out / "annotated.mp4")["nb_read_frames"] == probe["nb_read_frames"]


def test_the_annotated_video_plays_in_chromium(tmp_path):
    # given an annotated video as the sink writes it (3 s at 12 fps)
    v = VideoOutput(tmp_path)
    for k in range(36):
        v.write_frame("cam", _image(k), 12.0, round(k * 1e9 / 12))
    v.close()
    # when headless Chromium loads it in a <video> element
    state = play_in_chromium(tmp_path / "annotated.mp4")
    # then it decodes a frame (readyState >= HAVE_CURRENT_DATA) and has a finite duration
    assert state["event"] == "loadeddata" and state["error"] is None, state
    assert state["readyState"] >= 2 and (state["width"], state["height"]) == (320, 240)
    duration = float(state["duration"])
    assert math.isfinite(duration) and 2.9 <= duration <= 3.2, state
