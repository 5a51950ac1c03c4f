"""ZeroMQ socket helpers: endpoint strings, lossy data sends, lossless control sends.

Endpoint strings carry the connection direction: ``"bind:tcp://*:5555"``,
``"connect:tcp://detector:5556"``, ``"bind:ipc:///tmp/x.sock"``. Several addresses may be
given after ``connect:`` separated by commas (a PUSH socket then round-robins between
them). Convention: upstream binds, workers connect, so more detector or classifier workers
join by configuration alone.

Every socket gets an explicit high-water mark, ``LINGER=0`` and is polled with a timeout,
so no call blocks forever and closing never waits for an absent peer. With a
:class:`common.curve.Curve` a socket on ``tcp://`` is a CURVE server (bind) or client
(connect): encrypted, and only authorized peers get through.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import zmq

from common import wire
from common.metrics import StageMetrics
from common.curve import Curve

log = logging.getLogger(__name__)


def parse_endpoint(endpoint: str) -> tuple[str, list[str]]:
    """Split ``"bind:ADDR"`` / ``"connect:ADDR[,ADDR...]"`` into ``(mode, [addresses])``.

    A bare address binds when its host is ``*`` or ``0.0.0.0`` or it is ``ipc://``, and
    connects otherwise.

    Raises:
        ValueError: unknown mode, empty address, or a transport other than tcp/ipc/inproc.
    """
    mode, sep, rest = endpoint.partition(":")
    if mode in ("bind", "connect") and sep:
        addrs = [a.strip() for a in rest.split(",") if a.strip()]
    else:
        addrs = [endpoint.strip()]
        host = endpoint.split("://", 1)[-1]
        mode = "bind" if host.startswith(("*", "0.0.0.0")) or endpoint.startswith("ipc://") \
            else "connect"
    if not addrs:
        raise ValueError(f"endpoint {endpoint!r} has no address")
    for a in addrs:
        if not a.startswith(("tcp://", "ipc://", "inproc://")):
            raise ValueError(f"endpoint address {a!r} must start with tcp://, ipc:// or inproc://")
    if mode == "bind" and len(addrs) != 1:
        raise ValueError(f"endpoint {endpoint!r}: bind takes exactly one address")
    return mode, addrs


def make_socket(ctx: zmq.Context, sock_type: int, endpoint: str, hwm: int,
                curve: Curve | None = None) -> zmq.Socket:
    """Create a socket with ``SNDHWM=RCVHWM=hwm``, ``LINGER=0`` and bind/connect it;
    with ``curve``, CURVE on ``tcp://`` (:meth:`common.curve.Curve.apply`).

    Raises:
        ValueError: bad endpoint string.
        common.security.SecurityConfigError: CURVE is on but this side has no keys.
        zmq.ZMQError: the address cannot be bound (e.g. port in use).
    """
    mode, addrs = parse_endpoint(endpoint)
    sock = ctx.socket(sock_type)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
    # Bound TCP kernel buffers too, or thousands of frames can hide there.
    if any(a.startswith("tcp://") for a in addrs):
        sock.setsockopt(zmq.SNDBUF, 1 << 20)
        sock.setsockopt(zmq.RCVBUF, 1 << 20)
    try:
        if curve is not None:
            curve.apply(sock, mode, addrs)
        for a in addrs:
            (sock.bind if mode == "bind" else sock.connect)(a)
    except Exception:
        sock.close(0)
        raise
    return sock


class Sender:
    """A PUSH socket that sends data lossily and control messages losslessly.

    Args:
        ctx: ZeroMQ context.
        endpoint: endpoint string (see :func:`parse_endpoint`).
        metrics: the stage's metrics (counts sent messages and drops).
        stop: event that aborts blocking sends (shutdown).
        hwm: high-water mark (messages).
        curve: CURVE keys for ``tcp://`` (``None``: clear).
        on_wait: called about every 50 ms while a blocking or control send waits for
            room downstream (the runtime passes its heartbeat: a service waiting on
            backpressure is alive, not stalled).
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, metrics: StageMetrics,
                 stop: threading.Event, hwm: int = 4, curve: Curve | None = None,
                 on_wait: Callable[[], None] | None = None):
        self.sock = make_socket(ctx, zmq.PUSH, endpoint, hwm, curve)
        self.metrics = metrics
        self.stop = stop
        self.on_wait = on_wait or (lambda: None)

    def _try_send(self, frames: list, kind: str) -> bool:
        """Hand the message to ZeroMQ if there is room now (counted as sent)."""
        try:
            self.sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        self.metrics.sent.labels(self.metrics.stage, kind).inc()
        return True

    def send(self, frames: list, kind: str, block: bool = False,
             timeout_s: float | None = None) -> bool:
        """Send one multipart message.

        Args:
            frames: output of :func:`common.wire.encode`.
            kind: message kind (metrics label).
            block: ``False`` drops the message at once when the high-water mark is reached
                (counted as ``queue_full``); ``True`` waits for room (backpressure) until
                sent, ``timeout_s`` passes (counted as ``send_timeout``) or stop is set
                (the frame is discarded at shutdown, counted as ``shutdown``).
            timeout_s: limit for a blocking send (seconds); ``None`` waits until stop.

        Returns:
            ``True`` when the message was handed to ZeroMQ.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            if self._try_send(frames, kind):
                return True
            if not block:
                self.metrics.drop("queue_full")
                return False
            if self.stop.is_set():
                self.metrics.drop("shutdown")
                return False
            if deadline is not None and time.monotonic() > deadline:
                self.metrics.drop("send_timeout")
                return False
            self.on_wait()
            self.sock.poll(50, zmq.POLLOUT)

    def send_control(self, frames: list, kind: str = "eos", timeout_s: float = 30.0,
                     stop_grace_s: float = 0.5) -> bool:
        """Send a control message (end of stream) that must not be lost.

        Waits for a peer even through the slow-joiner window; gives up only after
        ``timeout_s`` seconds (logged as an error). Once the stop event is set it waits at
        most ``stop_grace_s`` more seconds, so a shutdown still flushes end of stream when
        a peer is there but never holds exit up for long (services must exit within 2 s
        of SIGTERM).

        Returns:
            ``True`` when the message was handed to ZeroMQ.
        """
        deadline = time.monotonic() + timeout_s
        stop_deadline = None
        while not self._try_send(frames, kind):
            now = time.monotonic()
            if self.stop.is_set() and stop_deadline is None:
                stop_deadline = now + stop_grace_s
            if now > deadline:
                log.error("could not deliver %s message within %.1f s: no peer", kind,
                          timeout_s)
                return False
            if stop_deadline is not None and now > stop_deadline:
                log.error("stopping: %s message not delivered (no peer took it within "
                          "%.1f s)", kind, stop_grace_s)
                return False
            self.on_wait()
            self.sock.poll(50, zmq.POLLOUT)
        return True

    def close(self) -> None:
        """Close the socket without lingering."""
        self.sock.close(0)


class Receiver:
    """A PULL socket whose :meth:`recv` validates, counts and filters messages.

    Args:
        ctx: ZeroMQ context.
        endpoint: endpoint string.
        metrics: the stage's metrics.
        hwm: receive high-water mark (messages).
        max_frame_age_s: drop live frames older than this (0 disables).
        max_bytes: largest accepted message (bytes).
        kinds: message kinds this input accepts (e.g. ``("frame", "eos")``); others are
            counted as malformed ``bad_kind`` and skipped. ``None`` accepts every kind.
        curve: CURVE keys for ``tcp://`` (``None``: clear).
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, metrics: StageMetrics, hwm: int = 4,
                 max_frame_age_s: float = 0.0, max_bytes: int = wire.MAX_MESSAGE_BYTES,
                 kinds: tuple[str, ...] | None = None, curve: Curve | None = None):
        self.sock = make_socket(ctx, zmq.PULL, endpoint, hwm, curve)
        # Refuse oversize messages in libzmq itself, before they are buffered.
        self.sock.setsockopt(zmq.MAXMSGSIZE, max_bytes)
        self.metrics = metrics
        self.max_frame_age_s = max_frame_age_s
        self.max_bytes = max_bytes
        self.kinds = tuple(kinds) if kinds is not None else None

    def recv(self, timeout_ms: int, now_ns: Callable[[], int] = time.time_ns
             ) -> wire.Message | None:
        """Wait up to ``timeout_ms`` for one valid message.

        Malformed messages are counted (``agegender_messages_malformed_total``) and skipped,
        stale live frames are counted as dropped; both make this return ``None`` so the
        caller's loop can tick.
        """
        if not self.sock.poll(timeout_ms, zmq.POLLIN):
            return None
        try:
            frames = self.sock.recv_multipart(flags=zmq.NOBLOCK, copy=True)
        except zmq.Again:  # a readiness that vanished (a peer refused in its handshake)
            return None
        try:
            msg = wire.decode(frames, self.max_bytes)
        except wire.DecodeError as exc:
            self.metrics.malformed.labels(self.metrics.stage, exc.reason).inc()
            log.debug("dropped malformed message: %s", exc)
            return None
        m = self.metrics
        if self.kinds is not None and msg.kind not in self.kinds:
            m.malformed.labels(m.stage, "bad_kind").inc()
            log.debug("dropped a %r message: this input takes %s", msg.kind, self.kinds)
            return None
        m.received.labels(m.stage, msg.kind).inc()
        if msg.kind != "eos":
            age = (now_ns() - msg.header["t_capture_ns"]) / 1e9
            m.frame_age.labels(m.stage).observe(max(age, 0.0))
            if msg.header.get("live") and self.max_frame_age_s and age > self.max_frame_age_s:
                m.drop("stale")
                return None
        return msg

    def close(self) -> None:
        """Close the socket without lingering."""
        self.sock.close(0)
