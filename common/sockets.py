"""ZeroMQ socket helpers: endpoint strings, lossy data sends, lossless control sends.

Endpoint strings carry the connection direction: ``"bind:tcp://*:5555"``,
``"connect:tcp://detector:5556"``, ``"bind:ipc:///tmp/x.sock"``. Several addresses may be
given after ``connect:`` separated by commas (a PUSH socket then round-robins between
them). Convention: upstream binds, workers connect, so more detector or classifier workers
join by configuration alone.

Two patterns:

* :class:`Sender` (PUSH) / :class:`Receiver` (PULL), here: any worker may take any
  message (detector -> classifier -> sink: those stages hold no per-stream state).
* :class:`common.stream_router.StreamRouter` (ROUTER, capture) /
  :class:`common.stream_dealer.StreamDealer` (DEALER, detector): **stream affinity**
  (every frame of a stream, in order, to one detector process; see
  :mod:`common.stream_router`). They build on the helpers here: :func:`make_socket`,
  :func:`accept` (validation) and the send policies :func:`send_data` and
  :func:`send_lossless`.

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
from common.wire_checks import DecodeError
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


def send_data(try_send: Callable[[], bool], wait: Callable[[], None],
              metrics: StageMetrics, stop: threading.Event, block: bool,
              timeout_s: float | None) -> bool:
    """The data-send policy of :class:`Sender` and
    :class:`common.stream_router.StreamRouter`: try, then drop or wait.

    Args:
        try_send: hands the message to ZeroMQ if it can now; ``True`` when it did.
        wait: called between tries (waits up to about 50 ms for room or credit).
        metrics: counts the drop (``queue_full``, ``shutdown`` or ``send_timeout``).
        stop: once set, a blocking send gives up (``shutdown``).
        block: ``False`` drops at once (``queue_full``) when ``try_send`` fails.
        timeout_s: limit for a blocking send (seconds); ``None`` waits until stop.

    Returns:
        ``True`` when the message was handed to ZeroMQ.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        if try_send():
            return True
        if not block:
            metrics.drop("queue_full")
            return False
        if stop.is_set():
            metrics.drop("shutdown")
            return False
        if deadline is not None and time.monotonic() > deadline:
            metrics.drop("send_timeout")
            return False
        wait()


def send_lossless(try_send: Callable[[], bool], wait: Callable[[], None],
                  stop: threading.Event, timeout_s: float, stop_grace_s: float,
                  what: str, peer: str) -> bool:
    """The control-send policy (end of stream must not be lost): try until it is sent,
    ``timeout_s`` seconds pass or, once ``stop`` is set, ``stop_grace_s`` more seconds
    pass; giving up is logged as an error naming ``what`` (e.g. ``"eos message"``) and
    the missing ``peer``.

    Returns:
        ``True`` when the message was handed to ZeroMQ.
    """
    deadline = time.monotonic() + timeout_s
    stop_deadline = None
    while not try_send():
        now = time.monotonic()
        if stop.is_set() and stop_deadline is None:
            stop_deadline = now + stop_grace_s
        if now > deadline:
            log.error("could not deliver %s within %.1f s: no %s", what, timeout_s, peer)
            return False
        if stop_deadline is not None and now > stop_deadline:
            log.error("stopping: %s not delivered (no %s took it within %.1f s)", what,
                      peer, stop_grace_s)
            return False
        wait()
    return True


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
        return send_data(lambda: self._try_send(frames, kind), self._wait_room,
                         self.metrics, self.stop, block, timeout_s)

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
        return send_lossless(lambda: self._try_send(frames, kind), self._wait_room,
                             self.stop, timeout_s, stop_grace_s, f"{kind} message", "peer")

    def _wait_room(self) -> None:
        """Tick the caller's heartbeat and wait up to 50 ms for room downstream."""
        self.on_wait()
        self.sock.poll(50, zmq.POLLOUT)

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
        return accept(frames, self.metrics, self.max_bytes, self.kinds,
                      self.max_frame_age_s, now_ns)

    def close(self) -> None:
        """Close the socket without lingering."""
        self.sock.close(0)


def accept(frames: list, metrics: StageMetrics, max_bytes: int,
           kinds: tuple[str, ...] | None, max_frame_age_s: float,
           now_ns: Callable[[], int] = time.time_ns) -> wire.Message | None:
    """Decode, validate and count one received message (shared by the receivers).

    Malformed messages are counted (``agegender_messages_malformed_total``), messages of
    a kind not in ``kinds`` as ``bad_kind``, live frames older than ``max_frame_age_s``
    (0: no limit) as dropped ``stale``; all of these return ``None``.
    """
    try:
        msg = wire.decode(frames, max_bytes)
    except DecodeError as exc:
        metrics.malformed.labels(metrics.stage, exc.reason).inc()
        log.debug("dropped malformed message: %s", exc)
        return None
    m = metrics
    if kinds is not None and msg.kind not in kinds:
        m.malformed.labels(m.stage, "bad_kind").inc()
        log.debug("dropped a %r message: this input takes %s", msg.kind, kinds)
        return None
    m.received.labels(m.stage, msg.kind).inc()
    if msg.kind != "eos":
        age = (now_ns() - msg.header["t_capture_ns"]) / 1e9
        m.frame_age.labels(m.stage).observe(max(age, 0.0))
        if msg.header.get("live") and max_frame_age_s and age > max_frame_age_s:
            m.drop("stale")
            return None
    return msg
