"""Issue 5, point 6 at the socket layer: hostile or broken messages sent to a real
:class:`common.sockets.Receiver` on a real PULL socket are dropped, counted by reason, and
the next valid message still arrives; memory does not jump under a flood.
"""

from __future__ import annotations

import gc
import threading
import time

import psutil
import zmq

from common import wire, wire_checks
from common.metrics import StageMetrics
from common.sockets import Receiver
from tests.reliability import helpers
from tests.waits import wait_for


def _receiver(port: int, **kw) -> tuple[zmq.Context, Receiver, StageMetrics]:
    ctx = zmq.Context()
    metrics = StageMetrics("detector")
    rx = Receiver(ctx, f"bind:tcp://127.0.0.1:{port}", metrics, hwm=1000, **kw)
    return ctx, rx, metrics


def _push(ctx: zmq.Context, port: int) -> zmq.Socket:
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(f"tcp://127.0.0.1:{port}")
    return s


def _malformed(metrics: StageMetrics) -> dict[str, float]:
    return {r: helpers.counted(metrics, "agegender_messages_malformed_total", stage="detector",
                               reason=r) for r in wire_checks.DROP_REASONS}


def _recv_valid(rx: Receiver, timeout_s: float = 5.0) -> wire.Message | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = rx.recv(100)
        if msg is not None:
            return msg
    return None


def test_each_hostile_message_is_dropped_counted_and_the_next_valid_one_arrives(port):
    # given a Receiver on a real PULL socket and a PUSH peer
    ctx, rx, metrics = _receiver(port)
    tx = _push(ctx, port)
    try:
        for kind in ("frame", "faces", "result"):
            rx.kinds = (kind, "eos")  # an input of one stage takes one kind
            valid = {"frame": helpers.valid_frame, "faces": helpers.valid_faces,
                     "result": helpers.valid_result}[kind]
            for name, frames, reason in helpers.hostile_cases(kind):
                before = _malformed(metrics)
                # when the hostile message is followed by a valid one
                tx.send_multipart(frames)
                tx.send_multipart(valid(seq=1))
                msg = _recv_valid(rx)
                after = _malformed(metrics)
                # then the valid one is returned and the hostile one counted by its reason
                assert msg is not None and msg.seq == 1, name
                grew = {r: after[r] - before[r] for r in after if after[r] != before[r]}
                assert sum(grew.values()) == 1, (kind, name, grew)
                if reason is not None:
                    assert grew == {reason: 1}, (kind, name, grew)
    finally:
        tx.close(0)
        rx.close()
        ctx.term()


def test_oversize_multipart_message_is_counted_as_oversize(port):
    # given a Receiver limited to 1 MiB per message
    ctx, rx, metrics = _receiver(port, max_bytes=1 << 20)
    tx = _push(ctx, port)
    try:
        # when a 2-part message of 2 x 0.75 MiB arrives (each part under libzmq's limit)
        part = b"\x00" * (768 * 1024)
        tx.send_multipart(helpers.valid_frame()[:1] + [part, part])
        tx.send_multipart(helpers.valid_frame(seq=2))
        # then it is counted as oversize and the next message still arrives
        assert _recv_valid(rx).seq == 2
        assert _malformed(metrics)["oversize"] == 1
    finally:
        tx.close(0)
        rx.close()
        ctx.term()


def test_zmtp_frame_announcing_4gb_and_raw_garbage_do_not_stop_the_receiver(port):
    # given a Receiver (libzmq MAXMSGSIZE = 64 MiB)
    ctx, rx, metrics = _receiver(port)
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    try:
        # when a raw TCP peer speaks valid ZMTP and announces a 4 GiB message frame
        huge = b"\x02" + (4 * 2 ** 30).to_bytes(8, "big") + b"x" * 1024
        helpers.raw_tcp_send(port, helpers.zmtp_push_greeting() + huge)
        # and another writes plain garbage instead of a ZMTP greeting
        helpers.raw_tcp_send(port, b"GET / HTTP/1.1\r\n\r\n" + b"\xff" * 4096)
        # then libzmq hangs up on both, nothing is allocated, and a real peer still works
        tx = _push(ctx, port)
        tx.send_multipart(helpers.valid_frame(seq=3))
        msg = _recv_valid(rx)
        tx.close(0)
        assert msg is not None and msg.seq == 3
        assert (proc.memory_info().rss - rss0) / 2 ** 20 < 50
    finally:
        rx.close()
        ctx.term()


#: Rounds of every hostile case sent before the memory baseline is taken.
WARMUP_ROUNDS = 10


def test_flood_of_hostile_messages_keeps_memory_flat(port):
    # given a Receiver and a PUSH peer flooding 20 rounds of every hostile case
    ctx, rx, metrics = _receiver(port)
    tx = _push(ctx, port)
    cases = [f for kind in ("frame", "faces", "result")
             for name, f, _ in helpers.hostile_cases(kind)
             if name != "kind_not_for_this_input"]  # this receiver takes every kind
    proc = psutil.Process()
    received = []
    done = threading.Event()

    def drain():
        while not done.is_set():
            msg = rx.recv(50)
            if msg is not None:
                received.append(msg.seq)

    t = threading.Thread(target=drain, daemon=True)
    try:
        t.start()
        for _ in range(WARMUP_ROUNDS):  # warm up allocator pools and socket buffers
            for frames in cases:
                tx.send_multipart(frames)
        wait_for(lambda: sum(_malformed(metrics).values()) == WARMUP_ROUNDS * len(cases), 30,
                 "the warm-up messages to be counted")
        gc.collect()
        rss0 = proc.memory_info().rss
        # when thousands of hostile messages arrive
        for _ in range(40):
            for frames in cases:
                tx.send_multipart(frames)
        tx.send_multipart(helpers.valid_frame(seq=99))
        wait_for(lambda: 99 in received, 60, "the valid frame after the flood")
        gc.collect()
        grown_mb = (proc.memory_info().rss - rss0) / 2 ** 20
        # then all are counted, the valid one arrives, and RSS grows by less than 20 MiB
        assert 99 in received
        assert sum(_malformed(metrics).values()) == (WARMUP_ROUNDS + 40) * len(cases)
        assert grown_mb < 20, f"RSS grew {grown_mb:.1f} MiB"
    finally:
        done.set()
        t.join(2)
        tx.close(0)
        rx.close()
        ctx.term()


def test_stale_live_frame_dropped_but_stale_file_frame_kept(port):
    # given a Receiver that drops live frames older than 0.5 s
    ctx, rx, metrics = _receiver(port, max_frame_age_s=0.5)
    tx = _push(ctx, port)
    old = time.time_ns() - 3 * 10 ** 9
    try:
        # when a 3 s old live frame, a 3 s old file frame and a fresh live frame arrive
        tx.send_multipart(helpers.valid_frame(seq=1, live=True, t_ns=old))
        tx.send_multipart(helpers.valid_frame(seq=2, live=False, t_ns=old))
        tx.send_multipart(helpers.valid_frame(seq=3, live=True))
        got = [_recv_valid(rx).seq, _recv_valid(rx).seq]
        # then only the stale live frame is dropped, counted as 'stale'
        assert got == [2, 3]
        assert helpers.counted(metrics, "agegender_frames_dropped_total", stage="detector",
                               reason="stale") == 1
    finally:
        tx.close(0)
        rx.close()
        ctx.term()


def test_receiver_restricted_to_kinds_counts_other_kinds_as_bad_kind(port):
    # given a Receiver for a detector input (frames and end of stream only)
    ctx = zmq.Context()
    metrics = StageMetrics("detector")
    rx = Receiver(ctx, f"bind:tcp://127.0.0.1:{port}", metrics, kinds=("frame", "eos"))
    tx = _push(ctx, port)
    try:
        # when a result and a faces message arrive before a frame and an EOS
        tx.send_multipart(helpers.valid_result(seq=1))
        tx.send_multipart(helpers.valid_faces(seq=2))
        tx.send_multipart(helpers.valid_frame(seq=3))
        tx.send_multipart(helpers.eos(seq=4))
        got = [_recv_valid(rx).seq, _recv_valid(rx).seq]
        # then only the frame and EOS come out; the others count as bad_kind
        assert got == [3, 4]
        assert _malformed(metrics)["bad_kind"] == 2
    finally:
        tx.close(0)
        rx.close()
        ctx.term()
