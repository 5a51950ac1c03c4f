"""Issue 5, point 6 against the real service processes: hostile or broken messages sent
straight to the input endpoint of ``agegender detector|classifier|sink`` are dropped and
counted by reason (``agegender_messages_malformed_total{stage,reason}``), the service
keeps serving (a valid message after the junk is processed), its memory does not jump,
and it still exits cleanly on SIGTERM afterwards (no hang; ``bench/shutdown.py`` times it).

Slow: each test starts a real service (the classifier loads TensorFlow).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

from common import wire, wire_checks
from tests.conftest import free_port
from tests.frames import FrameSource
from tests.reliability import helpers
from tests.waits import HANG_S

pytestmark = pytest.mark.slow

ROUNDS = 10  # each hostile case is sent this many times (the memory flood)


def _push(ctx, port):
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(f"tcp://127.0.0.1:{port}")
    return s


def _pull(ctx, port):
    s = ctx.socket(zmq.PULL)
    s.setsockopt(zmq.LINGER, 0)
    s.bind(f"tcp://127.0.0.1:{port}")
    return s


def _await_seq(pull, seq: int, timeout_s: float = 30.0) -> wire.Message:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pull.poll(200):
            msg = wire.decode(pull.recv_multipart())
            if msg.seq == seq:
                return msg
    pytest.fail(f"message seq {seq} never came out")


def _await_metric(port, name, value, timeout_s=30.0, **labels):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = helpers.metric(helpers.scrape(port), name, **labels)
        if got >= value:
            return got
        time.sleep(0.2)
    return got


class Running:
    """A service process with a PUSH socket into its input and, when it has a
    downstream, a PULL socket bound where its output connects."""

    def __init__(self, svc: helpers.Service, push, pull):
        self.svc, self.push, self.pull = svc, push, pull

    def exits_cleanly(self) -> None:
        """SIGTERM it; it must exit with 0 and without hanging."""
        elapsed = self.svc.terminate(timeout_s=HANG_S + 5)
        assert elapsed < HANG_S and self.svc.proc.returncode == 0, self.svc.log_tail()


@pytest.fixture
def start(tmp_path):
    """``start(name, extra=()) -> Running``: the service on free ports, ready; everything
    is stopped and closed at teardown."""
    ctx = zmq.Context()
    started: list[Running] = []

    def run(name: str, extra=()) -> Running:
        helpers.service_available(name)
        in_port = free_port()
        args = ["--input", f"bind:tcp://127.0.0.1:{in_port}", "--threads", "1",
                "--log-level", "WARNING", *extra]
        pull = None
        if name != "sink":
            out_port = free_port()
            pull = _pull(ctx, out_port)
            args += ["--output", f"connect:tcp://127.0.0.1:{out_port}"]
        # the detector takes frames by stream affinity: fed as capture feeds it
        push = (FrameSource(ctx, f"connect:tcp://127.0.0.1:{in_port}")
                if name == "detector" else _push(ctx, in_port))
        svc = helpers.Service(name, args, free_port(), log_path=tmp_path / f"{name}.log")
        started.append(Running(svc, push, pull))
        svc.start().wait_ready(timeout_s=120)
        return started[-1]

    yield run
    for r in started:
        r.svc.kill()
        for sock in (r.push, r.pull):
            if sock is not None:
                sock.close(0)
    ctx.term()


def _flood_and_check(svc, stage, kind, push, valid, after_valid, n_warm=5):
    """Warm up with valid messages, flood hostile ones, send a valid one; check counts."""
    for i in range(n_warm):
        push.send_multipart(valid(seq=i))
        after_valid(i)
    before = helpers.scrape(svc.http_port)
    rss0 = helpers.rss_mb(svc.proc.pid)
    cases = helpers.hostile_cases(kind)
    for _ in range(ROUNDS):
        for _, frames, _ in cases:
            push.send_multipart(frames)
    push.send_multipart(valid(seq=1000))
    after_valid(1000)  # then: the service keeps serving
    after = helpers.scrape(svc.http_port)
    rss1 = helpers.rss_mb(svc.proc.pid)

    def grew(reason):
        return (helpers.metric(after, "agegender_messages_malformed_total", stage=stage,
                               reason=reason)
                - helpers.metric(before, "agegender_messages_malformed_total", stage=stage,
                                 reason=reason))

    expected = {}
    for _, _, reason in cases:
        if reason is not None:
            expected[reason] = expected.get(reason, 0) + ROUNDS
    total = sum(grew(r) for r in wire_checks.DROP_REASONS)
    assert total == ROUNDS * len(cases), svc.log_tail()
    for reason, n in expected.items():
        assert grew(reason) >= n, (reason, grew(reason), n)
    assert rss1 - rss0 < 40, f"{stage} RSS grew {rss1 - rss0:.1f} MiB under the flood"
    assert svc.proc.poll() is None
    return after


def test_detector_drops_hostile_frames_and_keeps_serving(start):
    run = start("detector")
    svc, push, pull = run.svc, run.push, run.pull
    _flood_and_check(svc, "detector", "frame", push,
                     lambda seq: helpers.valid_frame(seq=seq, width=320, height=240),
                     lambda seq: _await_seq(pull, seq))
    # and a wire-valid frame whose JPEG payload is garbage is dropped as bad_image
    h = wire.frame_header("cam", 2000, time.time_ns(), 320, 240, encoding="jpeg")
    push.send_multipart(wire.encode(h, [b"\xff\xd8 not a jpeg"]))
    push.send_multipart(helpers.valid_frame(seq=2001, width=320, height=240))
    _await_seq(pull, 2001)
    assert helpers.metric(helpers.scrape(svc.http_port), "agegender_frames_dropped_total",
                          stage="detector", reason="bad_image") == 1
    run.exits_cleanly()


def test_classifier_drops_hostile_faces_and_keeps_serving(start):
    run = start("classifier", ["--max-batch", "8"])
    svc, push, pull = run.svc, run.push, run.pull
    _flood_and_check(svc, "classifier", "faces", push,
                     lambda seq: helpers.valid_faces(seq=seq),
                     lambda seq: _await_seq(pull, seq))
    # and wire-valid but odd crops (1x1, 1x300 sliver, 40 crops at once) are classified
    img = np.full((300, 300, 3), 100, np.uint8)
    boxes = [[0, 0, 1, 1], [0, 0, 300, 1]] + [[i, i, i + 20, i + 20] for i in range(40)]
    crops = [img[y1:y2, x1:x2] for x1, y1, x2, y2 in boxes]
    h = dict(wire.frame_header("cam", 3000, time.time_ns(), 300, 300), kind="faces",
             faces=[{"box": b, "confidence": 0.9, "track": i + 1, "quality": 0.5,
                     "classify": True} for i, b in enumerate(boxes)],
             crops=[list(c.shape[:2]) for c in crops])
    push.send_multipart(wire.encode(h, [img, *crops]))
    out = _await_seq(pull, 3000)
    assert out.kind == "result" and len(out.header["faces"]) == len(boxes)
    run.exits_cleanly()


def test_sink_drops_hostile_results_and_keeps_serving(start, tmp_path):
    run = start("sink", ["--out-dir", str(tmp_path / "out")])
    svc, push = run.svc, run.push
    n_ok = [0]

    def after_valid(seq):
        n_ok[0] += 1
        got = _await_metric(svc.http_port, "agegender_messages_received_total", n_ok[0],
                            stage="sink", kind="result")
        assert got >= n_ok[0], svc.log_tail()

    _flood_and_check(svc, "sink", "result", push,
                     lambda seq: helpers.valid_result(seq=seq), after_valid)
    run.exits_cleanly()


def test_sink_flood_of_new_stream_names_keeps_memory_and_files_bounded(start, tmp_path):
    # given a sink writing annotated video + events to a folder
    run = start("sink", ["--out-dir", str(tmp_path / "out")])
    svc, push = run.svc, run.push
    import psutil
    proc = psutil.Process(svc.proc.pid)
    for i in range(5):
        push.send_multipart(helpers.valid_result(stream="warm", seq=i, width=320, height=240))
    _await_metric(svc.http_port, "agegender_messages_received_total", 5, stage="sink",
                  kind="result")
    rss0, fds0 = helpers.rss_mb(proc.pid), proc.num_fds()
    # when 300 results arrive, each from a stream name never seen before
    n = 300
    for i in range(n):
        push.send_multipart(helpers.valid_result(stream=f"s{i}", seq=0, width=320,
                                                 height=240))
    got = _await_metric(svc.http_port, "agegender_messages_received_total", 5 + n,
                        timeout_s=60, stage="sink", kind="result")
    rss1, fds1 = helpers.rss_mb(proc.pid), proc.num_fds()
    # then it keeps serving with bounded memory and open files
    assert got >= 5 + n, svc.log_tail()
    assert svc.proc.poll() is None
    assert fds1 - fds0 < 64, f"open files grew {fds0} -> {fds1}"
    assert rss1 - rss0 < 150, f"RSS grew {rss1 - rss0:.0f} MiB for {n} streams"
    run.exits_cleanly()


def test_sink_keeps_rendering_other_streams_when_one_output_fails(start, tmp_path):
    # given a sink whose second stream's video file cannot be created (a folder is there)
    out = tmp_path / "out"
    (out / "annotated_cam2.mp4").mkdir(parents=True)
    run = start("sink", ["--out-dir", str(out), "--expected-streams", "2"])
    svc, push = run.svc, run.push
    # when cam1 frames arrive, then one cam2 frame, then more cam1 frames, then EOS
    for i in range(5):
        push.send_multipart(helpers.valid_result(stream="cam1", seq=i, width=320, height=240))
    svc.wait_metric("agegender_messages_received_total", 5, stage="sink", kind="result")
    push.send_multipart(helpers.valid_result(stream="cam2", seq=0, width=320, height=240))
    svc.wait_metric("agegender_messages_received_total", 6, stage="sink", kind="result")
    for i in range(5, 10):
        push.send_multipart(helpers.valid_result(stream="cam1", seq=i, width=320, height=240))
    push.send_multipart(helpers.eos("cam1", 10))
    push.send_multipart(helpers.eos("cam2", 1))
    svc.proc.wait(60)
    # then cam1's annotated video still holds all 10 frames
    import cv2
    cap = cv2.VideoCapture(str(out / "annotated.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == 10, f"annotated.mp4 has {n} frames\n{svc.log_tail()}"


def test_detector_survives_jpeg_announcing_a_huge_image(start):
    # given a detector and a wire-valid frame whose JPEG header announces 40000x40000
    from tests.reliability.test_detector_limits import huge_header_jpeg
    run = start("detector")
    svc, push, pull = run.svc, run.push, run.pull
    h = wire.frame_header("cam", 1, time.time_ns(), 320, 240, encoding="jpeg")
    # when it arrives, followed by a valid frame
    push.send_multipart(wire.encode(h, [huge_header_jpeg()]))
    push.send_multipart(helpers.valid_frame(seq=2, width=320, height=240))
    # then the detector is still there, processes the next frame, counts bad_image
    _await_seq(pull, 2, timeout_s=15)
    assert svc.proc.poll() is None, svc.log_tail()
    assert helpers.metric(helpers.scrape(svc.http_port), "agegender_frames_dropped_total",
                          stage="detector", reason="bad_image") == 1
