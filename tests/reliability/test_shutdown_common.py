"""Issue 5, point 5 at the common layer: a PUSH socket whose peer never connected never
blocks exit, and a :class:`common.service.ServiceRuntime` process exits on SIGTERM
whatever its loop is doing (lossy sends, a blocking send, an end-of-stream send, a socket
the runtime does not know about). The tests fail on a hang (``tests.waits.HANG_S``); how
fast the exit is (target: 2 s) is printed by ``python -m bench.shutdown``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zmq

from common import wire
from common.metrics import StageMetrics
from common.sockets import Sender
from tests.conftest import free_port
from tests.reliability.helpers import ROOT, counted
from tests.waits import HANG_S


def _frames():
    img = np.zeros((720, 1280, 3), np.uint8)
    return wire.encode_frame(wire.frame_header("cam", 0, time.time_ns(), 0, 0), img)


@pytest.mark.parametrize("mode", ["connect", "bind"])
def test_sender_without_peer_with_pending_messages_closes_at_once(mode):
    # given a PUSH Sender whose peer never shows up, with messages queued up to its HWM
    ctx = zmq.Context()
    addr = f"tcp://127.0.0.1:{free_port()}"
    tx = Sender(ctx, f"{mode}:{addr}", StageMetrics("capture"), threading.Event(), hwm=4)
    sent = [tx.send(_frames(), "frame") for _ in range(10)]
    # when it is closed and the context terminated
    t0 = time.monotonic()
    tx.close()
    ctx.term()
    # then that does not wait for the absent peer, and the extra sends were dropped
    assert time.monotonic() - t0 < HANG_S
    assert sent.count(False) >= 6
    assert counted(tx.metrics, "agegender_frames_dropped_total", stage="capture",
                   reason="queue_full") == sent.count(False)


def test_blocking_send_and_control_send_return_soon_after_stop():
    # given a Sender to nobody, stuck in a blocking send and in an EOS send in two threads
    ctx = zmq.Context()
    stop = threading.Event()
    tx1 = Sender(ctx, f"bind:tcp://127.0.0.1:{free_port()}", StageMetrics("capture"), stop)
    tx2 = Sender(ctx, f"bind:tcp://127.0.0.1:{free_port()}", StageMetrics("detector"), stop)
    results = {}
    eos = wire.encode(dict(kind="eos", stream="cam", seq=0, t_capture_ns=1))
    threads = [threading.Thread(target=lambda: results.__setitem__("data", tx1.send(
                   _frames(), "frame", block=True))),
               threading.Thread(target=lambda: results.__setitem__("eos", tx2.send_control(
                   eos, timeout_s=30.0)))]
    for t in threads:
        t.start()
    # (both block: still sending a moment later)
    assert not any(t.join(0.3) or not t.is_alive() for t in threads)
    # when stop is set
    t0 = time.monotonic()
    stop.set()
    for t in threads:
        t.join(5)
    elapsed = time.monotonic() - t0
    tx1.close()
    tx2.close()
    ctx.term()
    # then both give up soon (counted as discarded at shutdown / logged)
    assert results == {"data": False, "eos": False}
    assert elapsed < HANG_S, f"took {elapsed:.2f} s"  # (the sends' own timeout is 30 s)
    assert counted(tx1.metrics, "agegender_frames_dropped_total", stage="capture",
                   reason="shutdown") == 1
    assert counted(tx1.metrics, "agegender_frames_dropped_total", stage="capture",
                   reason="send_timeout") == 0


def test_control_send_still_waits_for_a_slow_joining_peer():
    # given a Sender bound with no peer yet, sending EOS (stop not set)
    ctx = zmq.Context()
    port = free_port()
    tx = Sender(ctx, f"bind:tcp://127.0.0.1:{port}", StageMetrics("capture"),
                threading.Event())
    eos = wire.encode(dict(kind="eos", stream="cam", seq=0, t_capture_ns=1))
    result = {}
    t = threading.Thread(target=lambda: result.__setitem__("ok", tx.send_control(eos, timeout_s=10)))
    t.start()
    # when the peer connects 1.5 s later
    time.sleep(1.5)
    rx = ctx.socket(zmq.PULL)
    rx.connect(f"tcp://127.0.0.1:{port}")
    got = rx.poll(5000)
    t.join(5)
    # then the EOS is delivered, not lost
    assert result == {"ok": True} and got
    assert wire.decode(rx.recv_multipart()).kind == "eos"
    rx.close(0)
    tx.close()
    ctx.term()


@pytest.mark.parametrize("state", ["lossy", "block", "control", "untracked"])
def test_runtime_process_exits_on_sigterm(state, tmp_path):
    # given a ServiceRuntime process stuck in `state` towards a peer that never connects
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.reliability.procs", "runtime",
                             "--state", state, "--output", f"connect:tcp://127.0.0.1:{port}",
                             "--http-port", str(free_port())],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout.readline().strip() == b"READY"  # stuck in `state` now
        # when it gets SIGTERM
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(HANG_S + 5)
        elapsed = time.monotonic() - t0
        # then it exits cleanly, without hanging
        assert rc == 0, proc.stdout.read().decode()
        assert elapsed < HANG_S, f"{state}: exit took {elapsed:.2f} s"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
