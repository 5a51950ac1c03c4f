"""Stream affinity over real ZeroMQ sockets (common.stream_router.StreamRouter and
common.stream_dealer.StreamDealer): each stream to one live worker, credits as
backpressure, streams move when a worker goes."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import zmq

from common import wire
from common.curve import Curve
from common.metrics import StageMetrics
from common.stream_dealer import StreamDealer
from common.stream_router import StreamRouter, choose_worker
from tests.conftest import free_port
from tests.waits import wait_for

IMG = np.zeros((8, 8, 3), np.uint8)


def frame(stream: str, seq: int, live: bool = False) -> list:
    return wire.encode_frame(wire.frame_header(stream, seq, time.time_ns(), 8, 8,
                                               live=live), IMG)


def eos(stream: str, n: int) -> list:
    return wire.encode({"kind": "eos", "stream": stream, "seq": n,
                        "t_capture_ns": time.time_ns(), "frames": n})


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(0)


def _router(ctx, timeout_s=1.0, settle_s=0.0, **kw):
    port = free_port()
    metrics = StageMetrics("capture")
    r = StreamRouter(ctx, f"bind:tcp://127.0.0.1:{port}", metrics, threading.Event(),
                     worker_timeout_s=timeout_s, settle_s=settle_s, **kw)
    return r, f"connect:tcp://127.0.0.1:{port}", metrics


def _dealer(ctx, endpoint, name, window=2, **kw):
    return StreamDealer(ctx, endpoint, StageMetrics("detector"), window=window,
                        identity=name, **kw)


def _drain(dealers: dict, got: dict, done: bool = True) -> None:
    """Take every waiting message of each dealer (returning its credit when ``done``)."""
    for name, d in dealers.items():
        while (m := d.recv(0)) is not None:
            got.setdefault(name, []).append((m.stream, m.kind, m.seq))
            if done:
                d.done(m)


def test_rendezvous_choice_is_stable_and_balanced():
    # the same stream picks the same worker among the same workers, whatever their order
    ws = {b"a": 0, b"b": 0, b"c": 0}
    assert choose_worker("door", ws) == choose_worker("door", dict(reversed(ws.items())))
    # and a loaded worker is passed over for an idle one
    busy = choose_worker("door", ws)
    assert choose_worker("door", {**ws, busy: 1}) != busy
    assert choose_worker("door", {}) is None


def test_each_stream_goes_to_one_worker_in_order_and_eos_follows(ctx):
    # given a router that lets workers joining together settle (0.5 s) and two workers
    # connecting 0.2 s apart
    router, ep, _ = _router(ctx, settle_s=0.5)
    dealers = {"w1": _dealer(ctx, ep, "w1")}
    wait_for(lambda: router.wait(50) or len(router.workers) == 1, 10, "the first worker")
    assert router.worker_for("a") is None         # not yet: others may be joining
    time.sleep(0.2)
    dealers["w2"] = _dealer(ctx, ep, "w2")
    wait_for(lambda: router.wait(50) or len(router.workers) == 2, 10, "two workers")
    # when 4 streams send 10 frames each and their eos, each frame once its worker has
    # credit, the workers taking what arrives as it comes
    got: dict = {}
    for seq in range(10):
        for s in ("a", "b", "c", "d"):
            wait_for(lambda: _drain(dealers, got) or router.ready(s), 10, "credit")
            assert router.send(frame(s, seq), "frame", s)
    for s in ("a", "b", "c", "d"):
        assert router.send_control(eos(s, 10), "eos", s, timeout_s=10)
    wait_for(lambda: _drain(dealers, got) or sum(len(v) for v in got.values()) == 44, 10,
             "every message")
    # then each stream's messages all reached one worker, in order, eos last
    owner = {}
    for name, msgs in got.items():
        for stream, kind, seq in msgs:
            assert owner.setdefault(stream, name) == name
    for s in "abcd":
        seqs = [(k, q) for name in got for st, k, q in got[name] if st == s]
        assert seqs == [("frame", i) for i in range(10)] + [("eos", 10)]
    # and the streams are spread evenly (2 each)
    assert sorted(list(owner.values()).count(n) for n in dealers) == [2, 2]
    for d in dealers.values():
        d.close()
    router.close()


def test_credit_is_backpressure_for_files_and_a_drop_for_live_frames(ctx):
    router, ep, metrics = _router(ctx)
    worker = _dealer(ctx, ep, "w1", window=2)
    wait_for(lambda: router.ready("a"), 10, "the worker's hello")
    # given a worker with 2 credits that takes messages but never finishes them
    assert router.send(frame("a", 0), "frame", "a") and router.send(frame("a", 1), "frame", "a")
    # then a third file frame waits (here: gives up after its timeout, counted) ...
    t0 = time.monotonic()
    assert not router.send(frame("a", 2), "frame", "a", block=True, timeout_s=0.3)
    assert time.monotonic() - t0 >= 0.3
    assert metrics.registry.get_sample_value("agegender_frames_dropped_total",
                                             {"stage": "capture", "reason": "send_timeout"}) == 1
    # ... and a live frame is dropped at once (queue_full)
    assert not router.send(frame("a", 3, live=True), "frame", "a")
    assert metrics.registry.get_sample_value("agegender_frames_dropped_total",
                                             {"stage": "capture", "reason": "queue_full"}) == 1
    # when the worker finishes one frame, one more may go
    msgs = [worker.recv(2000), worker.recv(2000)]
    assert router.ready("a") is False
    worker.done(msgs[0])
    wait_for(lambda: router.ready("a"), 10, "the returned credit")
    assert router.send(frame("a", 4), "frame", "a") and not router.ready("a")
    worker.close()
    router.close()


def test_a_worker_that_leaves_or_falls_silent_hands_its_streams_on(ctx):
    router, ep, metrics = _router(ctx, timeout_s=1.0)
    dealers = {n: _dealer(ctx, ep, n, window=4) for n in ("w1", "w2")}
    wait_for(lambda: router.wait(50) or len(router.workers) == 2, 10, "two workers")
    for s in ("a", "b"):
        router.worker_for(s)
    assert set(router.assigned.values()) == {b"w1", b"w2"}
    gone = router.assigned["a"].decode()
    stay = "w2" if gone == "w1" else "w1"
    # given 2 frames of stream a sent to its worker and never finished
    assert router.send(frame("a", 0), "frame", "a") and router.send(frame("a", 1), "frame", "a")
    # when that worker falls silent (no heartbeat, no credit) for longer than the timeout
    # while the other keeps beating
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        dealers[stay].recv(50)
        router.wait(50)
    # then stream a moved to the other worker and its unfinished frames count as lost
    assert gone.encode() not in router.workers
    assert router.worker_for("a") == stay.encode()
    assert metrics.registry.get_sample_value("agegender_frames_dropped_total",
                                             {"stage": "capture", "reason": "worker_lost"}) == 2
    assert router.send(frame("a", 2), "frame", "a", block=True, timeout_s=5)
    got: dict = {}
    wait_for(lambda: _drain({stay: dealers[stay]}, got) or ("a", "frame", 2) in got.get(
        stay, []), 10, "stream a on the other worker")
    # and when the silent worker speaks again it is told to say hello and rejoins, but
    # stream a stays where it is now
    wait_for(lambda: dealers[gone].recv(50) is None and router.wait(50) is None
             and gone.encode() in router.workers, 10, "the worker to rejoin")
    assert router.assigned["a"] == stay.encode()
    # and a worker that closes says goodbye: its streams move at once
    dealers[stay].close()
    wait_for(lambda: router.wait(50) or stay.encode() not in router.workers, 5, "the goodbye")
    assert router.worker_for("a") == gone.encode()
    dealers[gone].close()
    router.close()


def test_affinity_sockets_use_curve_on_tcp(ctx, tmp_path):
    # given CURVE keys for both sides (as agegender keys generate writes them)
    server_pub, server_sec = zmq.curve_keypair()
    client_pub, client_sec = zmq.curve_keypair()
    server = Curve(server_public=server_pub, server_secret=server_sec,
                   authorized=frozenset([client_pub]))
    client = Curve(client_public=client_pub, client_secret=client_sec,
                   server_key=server_pub)
    auth = server.start_authenticator(ctx)
    try:
        router, ep, _ = _router(ctx, curve=server)
        good = _dealer(ctx, ep, "good", curve=client)
        stranger = _dealer(ctx, ep, "stranger")   # no keys: refused in the handshake
        # then only the worker with keys joins, and frames reach it
        wait_for(lambda: router.ready("a"), 10, "the CURVE worker")
        time.sleep(0.3)
        router.service()
        assert set(router.workers) == {b"good"}
        assert router.send(frame("a", 0), "frame", "a")
        assert good.recv(5000).seq == 0
        assert router.sock.curve_server
        for s in (good, stranger, router):
            s.close()
    finally:
        auth.stop()
