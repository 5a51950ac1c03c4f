"""Issue 5, point 5 against the real service processes: every service exits on SIGTERM
in every state, without hanging: idle with its downstream peer missing, mid-stream with
the peer missing (blocking file-mode sends), mid-stream after the peer died, and
mid-batch. How fast (target: 2 s) is printed by ``python -m bench.shutdown``.

Slow: starts 9 real service processes (the classifier loads TensorFlow).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import zmq

from common import wire
from tests.conftest import free_port
from tests.frames import FrameSource
from tests.reliability import helpers
from tests.waits import HANG_S

pytestmark = pytest.mark.slow



def _frame(seq):
    img = np.full((720, 1280, 3), 90, np.uint8)
    return wire.encode_frame(wire.frame_header("cam", seq, time.time_ns(), 0, 0), img)


def _faces(seq, n=16):
    img = np.full((720, 1280, 3), 90, np.uint8)
    boxes = [[i * 70, 100, i * 70 + 120, 220] for i in range(n)]
    h = dict(wire.frame_header("cam", seq, time.time_ns(), 1280, 720), kind="faces",
             faces=[{"box": b, "confidence": 0.9, "track": i + 1, "quality": 0.5,
                     "classify": True} for i, b in enumerate(boxes)],
             crops=[[120, 120]] * n)
    return wire.encode(h, [img] + [img[y1:y2, x1:x2] for x1, y1, x2, y2 in boxes])


def _result(seq):
    return helpers.valid_result(seq=seq, width=1280, height=720)


FEED = {"detector": _frame, "classifier": _faces, "sink": _result}


class Feeder:
    """Pushes valid messages into a service's input at ~30/s until stopped."""

    def __init__(self, ctx, port, make):
        if make is _frame:  # the detector takes frames by stream affinity
            self.sock = FrameSource(ctx, f"connect:tcp://127.0.0.1:{port}")
        else:
            self.sock = ctx.socket(zmq.PUSH)
            self.sock.setsockopt(zmq.LINGER, 0)
            self.sock.connect(f"tcp://127.0.0.1:{port}")
        self.make = make
        self.stop = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        seq = 0
        while not self.stop.is_set():
            try:
                self.sock.send_multipart(self.make(seq), flags=zmq.NOBLOCK)
                self.sent += 1
            except zmq.Again:
                pass
            seq += 1
            self.stop.wait(1 / 30)

    def start(self):
        self.thread.start()
        return self

    def close(self):
        self.stop.set()
        self.thread.join(2)
        self.sock.close(0)


def _cases():
    for state in ("idle_peer_missing", "busy_peer_missing", "busy_peer_dead"):
        for name in ("detector", "classifier", "sink"):
            yield pytest.param(name, state, id=f"{name}-{state}")


@pytest.mark.parametrize("name,state", list(_cases()))
def test_service_exits_on_sigterm(name, state, tmp_path):
    helpers.service_available(name)
    if name == "sink" and state == "busy_peer_dead":
        pytest.skip("the sink has no downstream peer")
    in_port, out_port = free_port(), free_port()
    args = ["--input", f"bind:tcp://127.0.0.1:{in_port}", "--threads", "1",
            "--log-level", "INFO"]
    if name != "sink":
        args += ["--output", f"connect:tcp://127.0.0.1:{out_port}"]
    else:
        args += ["--out-dir", str(tmp_path / "out")]
    ctx = zmq.Context()
    feeder = None
    peer = None
    svc = helpers.Service(name, args, free_port(), log_path=tmp_path / f"{name}.log")
    try:
        if state == "busy_peer_dead":
            # given a downstream peer that takes a few messages and then dies
            peer = ctx.socket(zmq.PULL)
            peer.setsockopt(zmq.LINGER, 0)
            peer.bind(f"tcp://127.0.0.1:{out_port}")
        svc.start()
        svc.wait_ready(120)
        if state != "idle_peer_missing":
            feeder = Feeder(ctx, in_port, FEED[name]).start()
        if peer is not None:
            assert peer.poll(30_000), svc.log_tail()
            for _ in range(3):
                if peer.poll(2000):
                    peer.recv_multipart()
            peer.close(0)
            peer = None
        if feeder is not None:  # mid-stream: blocking sends pile up, batches in flight
            svc.wait_metric("agegender_messages_received_total", 1, stage=name)
        # when SIGTERM arrives
        elapsed = svc.terminate(timeout_s=HANG_S + 5)
        # then the process is gone without hanging, with exit code 0
        assert elapsed < HANG_S, f"{name}/{state}: exit took {elapsed:.2f} s\n" \
                                 f"{svc.log_tail()}"
        assert svc.proc.returncode == 0, svc.log_tail()
    finally:
        if feeder is not None:
            feeder.close()
        if peer is not None:
            peer.close(0)
        svc.kill()
        ctx.term()
