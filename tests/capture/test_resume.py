"""A capture that starts with an earlier capture's position file resumes it: files at
the next frame (the same pixels a sequential read gives), every stream numbered from its
next seq, ended streams not replayed; the file itself is written before every send."""

from __future__ import annotations

import json
import threading

import cv2
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from services.capture.config import CaptureConfig
from services.capture.main import main as capture_main
from services.capture.position import PositionFile, read_positions
from tests.capture.test_capture_service import _pull, _recv_until_eos
from tests.conftest import free_port
from tests.frames import FrameWorker

CLIP = "face-demographics-walking-and-pause.mp4"


def run_capture(cfg):
    stop = threading.Event()
    rc = {}
    t = threading.Thread(target=lambda: rc.setdefault("rc", capture_main(
        cfg, stop=stop, registry=CollectorRegistry())), daemon=True)
    return t, stop, rc


def test_capture_resumes_a_file_at_its_next_frame_and_seq(clip, tmp_path):
    # given the position file of a capture killed after it had sent seq 0..19 of the clip
    path = clip(CLIP)
    positions = tmp_path / "position.json"
    PositionFile(positions).record("lobby", seq=20, position=20, pass_=0)
    port = free_port()
    cfg = CaptureConfig(sources=[f"lobby={path}"], output=f"bind:tcp://127.0.0.1:{port}",
                        realtime=False, http_port=0, position_file=positions)
    sock = _pull(port)
    t, stop, rc = run_capture(cfg)
    t.start()
    # when a new capture runs to the end
    msgs = _recv_until_eos(sock)
    t.join(10)
    sock.close()
    frames = msgs[:-1]
    # then it sends seq 20..40 only, each the clip's frame of that number
    assert [m.seq for m in frames] == list(range(20, 41))
    cap = cv2.VideoCapture(str(path))
    expected = [cap.read()[1] for _ in range(41)]
    cap.release()
    for m in frames:
        assert np.array_equal(m.image, expected[m.seq]), m.seq
    # and its end of stream counts all 41 seqs; the file says it ended
    assert msgs[-1].kind == "eos" and msgs[-1].header["frames"] == 41
    assert read_positions(positions)["lobby"] == {"seq": 41, "position": 41, "pass": 0,
                                                  "ended": True}
    assert rc["rc"] == 0


def test_ended_stream_is_not_replayed_and_its_eos_is_sent_again(clip, tmp_path):
    # given a position file whose stream had ended after 41 frames
    positions = tmp_path / "position.json"
    PositionFile(positions).record("lobby", seq=41, position=41, ended=True)
    port = free_port()
    cfg = CaptureConfig(sources=[f"lobby={clip(CLIP)}"],
                        output=f"bind:tcp://127.0.0.1:{port}", realtime=False, http_port=0,
                        position_file=positions)
    sock = _pull(port)
    t, stop, rc = run_capture(cfg)
    t.start()
    msgs = _recv_until_eos(sock)
    t.join(10)
    sock.close()
    # then only its end of stream comes again, and the capture exits 0
    assert [(m.kind, m.header.get("frames")) for m in msgs] == [("eos", 41)]
    assert rc["rc"] == 0


def test_position_file_is_rewritten_in_place_and_never_left_with_a_longer_tail(tmp_path):
    # given a position file with a long record
    path = tmp_path / "p.json"
    pf = PositionFile(path)
    pf.record("a-long-stream-name", seq=123456789, position=98765)
    # when a shorter one is written over it (another process, same file)
    pf.close()
    pf = PositionFile(path, {})
    pf.record("b", seq=1)
    pf.close()
    # then the file holds exactly the new record (padding is whitespace JSON ignores)
    assert json.loads(path.read_text())["streams"] == {
        "b": {"seq": 1, "position": 0, "pass": 0, "ended": False}}


@pytest.mark.slow
def test_live_stream_gets_its_turn_next_to_a_file_that_always_has_a_frame(rtsp_server,
                                                                          clip):
    # given a looping unpaced file (always a frame ready) and a live RTSP camera (12 fps)
    # into a consumer slower than both together (about 15 messages/s)
    import collections
    import time

    import zmq

    from common import wire
    server = rtsp_server(clip(CLIP), loop=True)
    port = free_port()
    cfg = CaptureConfig(sources=[f"file={clip(CLIP)}", f"cam={server.url}"], loop=True,
                        realtime=False, output=f"bind:tcp://127.0.0.1:{port}", http_port=0,
                        hwm=1)
    # (one detector worker with a window of one frame)
    sock = FrameWorker(zmq.Context.instance(), f"tcp://127.0.0.1:{port}", window=1)
    t, stop, rc = run_capture(cfg)
    t.start()
    try:
        counts = collections.Counter()
        deadline = time.monotonic() + 60
        # (from the camera's first frame on)
        while counts["cam"] == 0 and time.monotonic() < deadline:
            if sock.poll(200):
                counts[wire.decode(sock.recv_multipart()).stream] += 1
        counts.clear()
        # when it takes 75 messages
        while sum(counts.values()) < 75 and time.monotonic() < deadline:
            if sock.poll(200):
                counts[wire.decode(sock.recv_multipart()).stream] += 1
                time.sleep(1 / 15)
    finally:
        stop.set()
        t.join(10)
        sock.close()
    print(f"file + live camera into a 15 msg/s consumer: {dict(counts)}")
    # then the camera is not starved by the file: it gets a share close to half
    assert sum(counts.values()) == 75
    assert counts["cam"] >= 0.3 * 75, counts


@pytest.mark.slow
def test_live_stream_numbering_continues_after_a_restart(rtsp_server, clip, tmp_path):
    # given the position file of a capture that had sent a live camera's seq 0..99
    positions = tmp_path / "position.json"
    PositionFile(positions).record("cam", seq=100)
    server = rtsp_server(clip(CLIP), loop=True)
    port = free_port()
    cfg = CaptureConfig(sources=[f"cam={server.url}"], output=f"bind:tcp://127.0.0.1:{port}",
                        http_port=0, position_file=positions)
    sock = _pull(port)
    t, stop, rc = run_capture(cfg)
    t.start()
    try:
        from common import wire
        assert sock.poll(30000), "no live frame within 30 s"
        first = wire.decode(sock.recv_multipart())
        # then the new capture numbers the camera's frames from 100 on (no seq twice)
        assert first.stream == "cam" and first.seq >= 100
        assert read_positions(positions)["cam"]["seq"] > 100
    finally:
        stop.set()
        t.join(10)
        sock.close()
