"""Small real peer processes for the reliability tests and benchmarks.

Run as ``python -m tests.reliability.procs MODE [options]``. Modes:

``slow-consumer``
    A PULL :class:`common.sockets.Receiver` that sleeps ``--sleep`` seconds per message
    (stands in for a classifier that needs 1 s per batch). Writes one JSON line per
    processed message to stdout: ``{"seq", "age_s", "kind", "stream"}`` and serves
    ``/metrics`` on ``--http-port``.
``live-producer``
    Sends synthetic ``--width`` x ``--height`` BGR frames marked ``live`` at ``--fps``
    through a lossy :class:`common.sockets.Sender` (what a live capture does).
``runtime``
    A :class:`common.service.ServiceRuntime` whose loop is stuck in a given state
    (``--state lossy|block|control|untracked``) towards a peer that never connects;
    prints ``READY`` once in that state. Used to time exit after SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def _cfg(http_port: int, hwm: int, max_frame_age_s: float = 2.0):
    from common.config import ServiceConfig
    return ServiceConfig(http_port=http_port, http_host="127.0.0.1", hwm=hwm,
                         max_frame_age_s=max_frame_age_s, log_level="WARNING")


def slow_consumer(args) -> int:
    """PULL, sleep per message, print the age of each processed message."""
    from common.service import ServiceRuntime
    from common.states import ServiceState
    with ServiceRuntime(args.stage, _cfg(args.http_port, args.hwm, args.max_frame_age_s)) as rt:
        rx = rt.receiver(args.input)
        rt.health.enter(ServiceState.RUNNING)
        while not rt.stop.is_set():
            rt.health.beat()
            msg = rx.recv(100)
            if msg is None:
                continue
            age = (time.time_ns() - msg.header["t_capture_ns"]) / 1e9
            print(json.dumps({"seq": msg.seq, "age_s": round(age, 3), "kind": msg.kind,
                              "stream": msg.stream}), flush=True)
            if msg.kind != "eos":
                rt.stop.wait(args.sleep)
    return 0


def live_producer(args) -> int:
    """Send synthetic live frames at a fixed rate to detector workers, as capture does
    (a StreamRouter: lossy, dropped when the stream's worker has no credit)."""
    from common import wire
    from common.service import ServiceRuntime
    from common.states import ServiceState
    rng = np.random.default_rng(0)
    # a few distinct frames so nothing can cache one buffer
    images = [rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
              for _ in range(4)]
    with ServiceRuntime("capture", _cfg(args.http_port, args.hwm)) as rt:
        tx = rt.stream_router(args.output)
        rt.health.enter(ServiceState.RUNNING)
        period = 1.0 / args.fps
        t_next = time.monotonic()
        seq = 0
        end = time.monotonic() + args.duration if args.duration else float("inf")
        while not rt.stop.is_set() and time.monotonic() < end:
            rt.health.beat()
            h = wire.frame_header(args.stream, seq, time.time_ns(), args.width, args.height,
                                  live=True)
            tx.send(wire.encode_frame(h, images[seq % len(images)]), "frame", args.stream,
                    block=False)
            seq += 1
            t_next += period
            rt.stop.wait(max(0.0, t_next - time.monotonic()))
    return 0


def runtime(args) -> int:
    """Get stuck in ``--state`` towards an absent peer until SIGTERM."""
    import zmq

    from common import wire
    from common.service import ServiceRuntime
    with ServiceRuntime("capture", _cfg(args.http_port, args.hwm)) as rt:
        tx = rt.sender(args.output)
        img = np.zeros((720, 1280, 3), np.uint8)
        frames = wire.encode_frame(wire.frame_header("cam", 0, time.time_ns(), 0, 0), img)
        for _ in range(10):  # fill the connect-side pipe up to the high-water mark
            tx.send(frames, "frame", block=False)
        if args.state == "untracked":
            from common.sockets import parse_endpoint
            extra = rt.ctx.socket(zmq.PUSH)  # a socket the runtime does not know about
            extra.connect(parse_endpoint(args.output)[1][0])
            extra.send_multipart(frames, copy=False)
        print("READY", flush=True)
        while not rt.stop.is_set():
            rt.health.beat()
            if args.state == "block":
                tx.send(frames, "frame", block=True)          # waits until stop
            elif args.state == "control":
                tx.send_control(wire.encode(dict(kind="eos", stream="cam", seq=1,
                                                 t_capture_ns=time.time_ns())), "eos")
            else:
                tx.send(frames, "frame", block=False)
                rt.stop.wait(0.01)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["slow-consumer", "live-producer", "runtime"])
    p.add_argument("--input", default="bind:tcp://127.0.0.1:5556")
    p.add_argument("--output", default="bind:tcp://127.0.0.1:5555")
    p.add_argument("--stage", default="classifier")
    p.add_argument("--http-port", type=int, default=0)
    p.add_argument("--hwm", type=int, default=4)
    p.add_argument("--sleep", type=float, default=1.0, help="seconds per message")
    p.add_argument("--max-frame-age-s", type=float, default=2.0)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--stream", default="cam")
    p.add_argument("--duration", type=float, default=0.0, help="seconds; 0 = until stopped")
    p.add_argument("--state", default="lossy", choices=["lossy", "block", "control",
                                                         "untracked"])
    args = p.parse_args(argv)
    return {"slow-consumer": slow_consumer, "live-producer": live_producer,
            "runtime": runtime}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
