"""Stream affinity, the worker's side: :class:`StreamDealer` (DEALER, detector) takes
the frames a :class:`common.stream_router.StreamRouter` assigns to this worker and
returns one credit per finished frame (protocol: :mod:`common.stream_router`).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Callable

import zmq

from common import wire
from common.curve import Curve
from common.metrics import StageMetrics
from common.sockets import accept, parse_endpoint
from common.stream_router import BEAT, BYE, CREDIT, HEARTBEAT_S, HELLO, RESET

log = logging.getLogger(__name__)


class StreamDealer:
    """A worker's input under stream affinity (see the module docstring): one DEALER
    socket per router address, polled together; :meth:`recv` validates like
    :class:`common.sockets.Receiver` and the worker returns one credit per finished frame with
    :meth:`done`.

    Args:
        ctx: ZeroMQ context.
        endpoint: endpoint string, usually ``connect:ADDR[,ADDR...]`` (one per capture).
        metrics: the stage's metrics.
        window: frames this worker holds at most per router (its credit).
        max_frame_age_s: drop live frames older than this (0 disables).
        max_bytes: largest accepted message (bytes).
        kinds: message kinds accepted (others: malformed ``bad_kind``).
        curve: CURVE keys for ``tcp://``.
        heartbeat_s: seconds between heartbeats.
        identity: this worker's name (default ``<host>-<pid>-<random>``).
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, metrics: StageMetrics,
                 window: int = 2, max_frame_age_s: float = 0.0,
                 max_bytes: int = wire.MAX_MESSAGE_BYTES,
                 kinds: tuple[str, ...] | None = None, curve: Curve | None = None,
                 heartbeat_s: float = HEARTBEAT_S, identity: str | None = None):
        mode, addrs = parse_endpoint(endpoint)
        self.identity = (identity or f"{socket.gethostname()}-{os.getpid()}-"
                         f"{os.urandom(3).hex()}").encode()
        self.metrics = metrics
        self.window = max(1, int(window))
        self.max_frame_age_s = max_frame_age_s
        self.max_bytes = max_bytes
        self.kinds = tuple(kinds) if kinds is not None else None
        self.heartbeat_s = heartbeat_s
        self.socks: list[zmq.Socket] = []
        try:
            for a in addrs:
                self.socks.append(self._make(ctx, mode, a, curve, max_bytes))
        except Exception:
            self.close()
            raise
        self.poller = zmq.Poller()
        for sock in self.socks:
            self.poller.register(sock, zmq.POLLIN)
        #: id(message) -> (socket, epoch) of frames not finished yet.
        self._origin: dict[int, tuple[zmq.Socket, int]] = {}
        self._epoch = {sock: 0 for sock in self.socks}
        self._last_sent = 0.0
        for sock in self.socks:
            self._send(sock, HELLO, self.window)

    def _make(self, ctx, mode: str, addr: str, curve, max_bytes: int) -> zmq.Socket:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, self.identity)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 1000)
        sock.setsockopt(zmq.RCVHWM, 1000)  # credits bound what arrives
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 500)  # workers join a new capture together
        sock.setsockopt(zmq.MAXMSGSIZE, max_bytes)
        if addr.startswith("tcp://"):
            sock.setsockopt(zmq.SNDBUF, 1 << 20)
            sock.setsockopt(zmq.RCVBUF, 1 << 20)
        try:
            if curve is not None:
                curve.apply(sock, mode, [addr])
            (sock.bind if mode == "bind" else sock.connect)(addr)
        except Exception:
            sock.close(0)
            raise
        return sock

    def _send(self, sock: zmq.Socket, kind: bytes, n: int | None = None) -> None:
        frames = [kind] if n is None else [kind, str(int(n)).encode()]
        try:
            sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # no peer yet: the heartbeat or the next hello tells it later
        self._last_sent = time.monotonic()

    def heartbeat(self) -> None:
        """Tell every router this worker is alive, when ``heartbeat_s`` has passed since
        the last message (call it while waiting on something else)."""
        if time.monotonic() - self._last_sent >= self.heartbeat_s:
            for sock in self.socks:
                self._send(sock, BEAT)

    def recv(self, timeout_ms: int, now_ns: Callable[[], int] = time.time_ns
             ) -> wire.Message | None:
        """Wait up to ``timeout_ms`` for one valid message (see :class:`common.sockets.Receiver`);
        a frame that comes back as ``None`` (malformed, stale) is finished at once."""
        self.heartbeat()
        timeout_ms = min(timeout_ms, int(self.heartbeat_s * 1000))
        for sock, _ in self.poller.poll(timeout_ms):
            try:
                frames = sock.recv_multipart(flags=zmq.NOBLOCK, copy=True)
            except zmq.Again:
                continue
            if len(frames) == 1 and frames[0] == RESET:
                log.info("a frame source restarted: announcing %d credits again",
                         self.window)
                self._epoch[sock] += 1
                self._send(sock, HELLO, self.window)
                continue
            msg = accept(frames, self.metrics, self.max_bytes, self.kinds,
                         self.max_frame_age_s, now_ns)
            if msg is None or msg.kind == "eos":
                if msg is None and not (len(frames) and _is_eos(frames[0])):
                    self._send(sock, CREDIT, 1)  # a frame that will never be finished
                if msg is None:
                    continue
                return msg
            self._origin[id(msg)] = (sock, self._epoch[sock])
            return msg
        self.heartbeat()
        return None

    def done(self, msg: wire.Message) -> None:
        """``msg`` (a frame from :meth:`recv`) is finished (sent on or dropped): return
        its credit. Messages without credit (eos) are ignored."""
        origin = self._origin.pop(id(msg), None)
        if origin is not None and origin[1] == self._epoch.get(origin[0]):
            self._send(origin[0], CREDIT, 1)

    def close(self) -> None:
        """Say goodbye (so the streams move at once) and close without lingering."""
        for sock in self.socks:
            if not sock.closed:
                try:
                    sock.send_multipart([BYE], zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass
                sock.close(100)  # a moment for the goodbye to leave


def _is_eos(header: bytes) -> bool:
    """True when a message that failed validation still says it is an eos (eos carries
    no credit, so none is returned for it)."""
    try:
        import msgpack
        h = msgpack.unpackb(bytes(header)[:wire.MAX_HEADER_BYTES], raw=False)
        return isinstance(h, dict) and h.get("kind") == "eos"
    except Exception:  # noqa: BLE001 (not msgpack at all: not an eos)
        return False
