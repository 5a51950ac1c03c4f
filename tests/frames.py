"""Test peers for the capture -> detector link (stream affinity, common.sockets): a frame
source in front of a detector and a frame worker behind a capture, with the socket-like
calls the tests use (``poll``, ``recv_multipart``, ``send_multipart``)."""

from __future__ import annotations

import threading
import time

import msgpack
import zmq

from common.metrics import StageMetrics
from common.stream_router import BEAT, CREDIT, HELLO, RESET, StreamRouter


class FrameSource:
    """What capture is to a detector: a :class:`common.stream_router.StreamRouter`. Every message
    goes to the worker of one stream (``stream``); an ``eos`` is sent as a control message
    (no credit), everything else with credit.

    Args:
        ctx: ZeroMQ context.
        endpoint: e.g. ``"bind:tcp://127.0.0.1:5555"`` (the detector connects) or
            ``"connect:tcp://127.0.0.1:5555"`` (a detector started with a bound input).
        stream: the stream the messages are routed by.
        timeout_s: limit of a blocking send (seconds).
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, stream: str = "test",
                 timeout_s: float = 60.0):
        self.metrics = StageMetrics("capture")
        self.router = StreamRouter(ctx, endpoint, self.metrics, threading.Event())
        self.stream = stream
        self.timeout_s = timeout_s

    def wait_worker(self, timeout_s: float = 60.0) -> bool:
        """Wait until a worker said hello; ``True`` when one did."""
        deadline = time.monotonic() + timeout_s
        while not self.router.workers and time.monotonic() < deadline:
            self.router.wait(50)
        return bool(self.router.workers)

    def send_multipart(self, frames: list, flags: int = 0) -> None:
        """Send like a PUSH socket: blocks for credit (``zmq.NOBLOCK``: raises
        :class:`zmq.Again` when there is none).

        Raises:
            zmq.Again: not sent (no credit with ``NOBLOCK``, or the timeout passed).
        """
        if _is_eos(frames):
            ok = self.router.send_control(frames, "eos", self.stream, self.timeout_s)
        else:
            ok = self.router.send(frames, "frame", self.stream,
                                  block=not flags & zmq.NOBLOCK, timeout_s=self.timeout_s)
        if not ok:
            raise zmq.Again()

    def close(self, linger: int = 0) -> None:
        """Close the socket."""
        self.router.sock.close(linger)


def _is_eos(frames: list) -> bool:
    try:
        header = msgpack.unpackb(bytes(frames[0]), raw=False)
    except Exception:  # noqa: BLE001 (hostile bytes are frames, not eos)
        return False
    return isinstance(header, dict) and header.get("kind") == "eos"


class FrameWorker:
    """What a detector is to capture: a DEALER that announces ``window`` credits and
    returns one for each message taken, with a PULL socket's calls.

    Args:
        ctx: ZeroMQ context.
        address: the capture's address, e.g. ``"tcp://127.0.0.1:5555"`` (connected).
        window: credits (frames capture may send ahead).
        identity: the worker's name.
    """

    def __init__(self, ctx: zmq.Context, address: str, window: int = 5,
                 identity: str = "test-worker"):
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.IDENTITY, identity.encode())
        self.sock.connect(address)
        self.window = window
        self._last = time.monotonic()
        self._held: list | None = None
        self.sock.send_multipart([HELLO, str(window).encode()])

    def _beat(self) -> None:
        if time.monotonic() - self._last > 0.5:
            self.sock.send_multipart([BEAT])
            self._last = time.monotonic()

    def poll(self, timeout_ms: int = 0, flags: int = zmq.POLLIN) -> bool:
        """``True`` when a message is there (taken and held for :meth:`recv_multipart`)."""
        if self._held is not None:
            return True
        deadline = time.monotonic() + timeout_ms / 1000.0
        while True:
            self._beat()
            left = max(0, int((deadline - time.monotonic()) * 1000))
            if self.sock.poll(min(left, 200), zmq.POLLIN):
                frames = self.sock.recv_multipart()
                if frames == [RESET]:
                    self.sock.send_multipart([HELLO, str(self.window).encode()])
                    continue
                self.sock.send_multipart([CREDIT, b"1"])
                self._last = time.monotonic()
                self._held = frames
                return True
            if time.monotonic() >= deadline:
                return False

    def recv_multipart(self) -> list:
        """The next message's frames (waits for one)."""
        while not self.poll(200):
            pass
        frames, self._held = self._held, None
        return frames

    def close(self, linger: int = 0) -> None:
        """Close the socket."""
        self.sock.close(linger)
