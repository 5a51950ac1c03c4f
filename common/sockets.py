"""ZeroMQ socket helpers: endpoint strings, lossy data sends, lossless control sends,
and stream affinity.

Endpoint strings carry the connection direction: ``"bind:tcp://*:5555"``,
``"connect:tcp://detector:5556"``, ``"bind:ipc:///tmp/x.sock"``. Several addresses may be
given after ``connect:`` separated by commas (a PUSH socket then round-robins between
them). Convention: upstream binds, workers connect, so more detector or classifier workers
join by configuration alone.

Two patterns:

* :class:`Sender` (PUSH) / :class:`Receiver` (PULL): any worker may take any message
  (detector -> classifier -> sink: those stages hold no per-stream state).
* :class:`StreamRouter` (ROUTER, capture) / :class:`StreamDealer` (DEALER, detector):
  **stream affinity**. The detector tracks faces, which needs every frame of a stream, in
  order, in one process. Workers connect and announce themselves (``hello`` with their
  credit window, then a heartbeat every ``heartbeat_s``); the router assigns each stream
  to one live worker by rendezvous hashing among the least-loaded workers and keeps it
  there until that worker disappears (no heartbeat for ``worker_timeout_s``, a ``bye``,
  or a send that finds it gone); only then the stream moves (its tracks restart on the
  new worker). Flow control is per worker **credit**: a worker grants as many frames as
  it can hold and returns one credit per frame it has finished, so file frames wait for
  credit (lossless backpressure, per stream, without blocking other streams) and live
  frames are dropped when their worker has none (``queue_full``). Frames a vanished
  worker had not finished are counted as dropped (``worker_lost``). ``eos`` needs no
  credit; it follows its stream's frames on the same connection, so it never overtakes
  them.

Every socket gets an explicit high-water mark, ``LINGER=0`` and is polled with a timeout,
so no call blocks forever and closing never waits for an absent peer. With a
:class:`common.curve.Curve` a socket on ``tcp://`` is a CURVE server (bind) or client
(connect): encrypted, and only authorized peers get through.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import socket
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
    except wire.DecodeError as exc:
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


# --------------------------------------------------------------------- stream affinity

#: Control frames of the affinity pattern (worker -> router unless noted). ``hello N``:
#: a worker (re)announces itself with N credits (absolute); ``credit N``: N more frames
#: finished; ``beat``: still here; ``bye``: leaving (its streams move at once);
#: ``reset`` (router -> worker): "I do not know you" (a restarted router): say hello.
HELLO, CREDIT, BEAT, BYE, RESET = b"hello", b"credit", b"beat", b"bye", b"reset"
#: Seconds between a worker's heartbeats.
HEARTBEAT_S = 0.5
#: A worker silent for this long (seconds) is gone and its streams move.
WORKER_TIMEOUT_S = 3.0
#: Streams wait this long (seconds) after a worker joined before they are assigned, so
#: workers that connect together (a stack starting, a capture restarting: their
#: reconnects are at most 0.5 s apart) share the streams instead of the first taking all.
SETTLE_S = 1.0


def rendezvous_score(stream: str, worker: bytes) -> int:
    """Highest-random-weight score of ``worker`` for ``stream`` (Thaler and
    Ravishankar, "Using name-based mappings to increase hit rates", IEEE/ACM ToN 1998):
    the same on every router, so a stream's choice depends only on the live workers."""
    digest = hashlib.blake2b(stream.encode() + b"\0" + worker, digest_size=8).digest()
    return int.from_bytes(digest, "big")


def choose_worker(stream: str, workers: dict[bytes, int]) -> bytes | None:
    """The worker for ``stream`` among ``workers`` (identity -> streams it has now):
    rendezvous hashing among the least-loaded ones, so streams spread evenly and a
    stream's choice is stable for the same set of workers. ``None`` without workers."""
    if not workers:
        return None
    least = min(workers.values())
    return max((w for w, n in workers.items() if n == least),
               key=lambda w: rendezvous_score(stream, w))


@dataclasses.dataclass
class _Worker:
    """What the router knows of one worker."""

    identity: bytes
    credit: int = 0
    last_seen: float = 0.0
    outstanding: int = 0   # frames sent and not yet finished (credit not returned)


class StreamRouter:
    """Sends each stream's messages to one live worker (see the module docstring).

    Args:
        ctx: ZeroMQ context.
        endpoint: endpoint string (usually ``bind:...``).
        metrics: the stage's metrics (sent messages, drops ``queue_full``,
            ``send_timeout``, ``shutdown``, ``worker_lost``).
        stop: event that aborts blocking sends.
        curve: CURVE keys for ``tcp://`` (``None``: clear).
        worker_timeout_s: a worker without a message for this long is gone (seconds).
        on_wait: called about every 50 ms while a send waits (heartbeat of the caller).
        settle_s: a stream without a worker is assigned only once no worker joined for
            this long (at most 3x this after the first of a burst of joins); 0: at once.
        clock: monotonic clock (seconds).
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, metrics: StageMetrics,
                 stop: threading.Event, curve: Curve | None = None,
                 worker_timeout_s: float = WORKER_TIMEOUT_S,
                 on_wait: Callable[[], None] | None = None, settle_s: float = SETTLE_S,
                 clock=time.monotonic):
        # Credits bound what is in flight; the high-water mark only has to stay above
        # any worker's window (and eos messages, which need no credit).
        self.sock = make_socket(ctx, zmq.ROUTER, endpoint, 1000, curve)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.metrics = metrics
        self.stop = stop
        self.worker_timeout_s = worker_timeout_s
        self.on_wait = on_wait or (lambda: None)
        self.clock = clock
        self.workers: dict[bytes, _Worker] = {}
        #: stream -> worker identity (sticky until the worker disappears).
        self.assigned: dict[str, bytes] = {}
        self._reset_sent: dict[bytes, float] = {}
        self._last_service = clock()
        self.settle_s = settle_s
        self._last_join = self._burst_start = -1e9

    # -- bookkeeping -----------------------------------------------------------------
    def service(self) -> None:
        """Read the workers' control messages waiting now and drop silent workers."""
        now = self.clock()
        if now - self._last_service > self.worker_timeout_s / 2:
            # this router did not listen for a while: it cannot tell who went silent
            for w in self.workers.values():
                w.last_seen = max(w.last_seen, now - self.worker_timeout_s / 2)
        self._last_service = now
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if len(frames) < 2:
                continue
            self._control(frames[0], frames[1], frames[2:], now)
        for w in [w for w in self.workers.values()
                  if now - w.last_seen > self.worker_timeout_s]:
            self._lost(w.identity, f"no heartbeat for {self.worker_timeout_s:.1f} s")

    def _control(self, identity: bytes, kind: bytes, rest: list, now: float) -> None:
        w = self.workers.get(identity)
        if kind == HELLO:
            n = _count(rest)
            if w is None:
                w = self.workers[identity] = _Worker(identity)
                log.info("detector worker %s joined (%d credits); %d worker(s)",
                         _name(identity), n, len(self.workers))
                if now - self._last_join >= self.settle_s:
                    self._burst_start = now
                self._last_join = now
            w.credit, w.outstanding, w.last_seen = n, 0, now
        elif kind == BYE:
            if w is not None:
                self._lost(identity, "it said goodbye")
        elif w is None:  # credit or beat from a worker this router does not know
            if now - self._reset_sent.get(identity, -1e9) > 1.0:
                self._reset_sent[identity] = now
                try:
                    self.sock.send_multipart([identity, RESET], zmq.NOBLOCK)
                except zmq.ZMQError:
                    pass
        else:
            w.last_seen = now
            if kind == CREDIT:
                n = _count(rest)
                w.credit += n
                w.outstanding = max(0, w.outstanding - n)

    def _lost(self, identity: bytes, why: str) -> None:
        w = self.workers.pop(identity, None)
        if w is None:
            return
        moved = sorted(s for s, i in self.assigned.items() if i == identity)
        for s in moved:
            del self.assigned[s]
        if w.outstanding:
            self.metrics.drop("worker_lost", w.outstanding)
        log.warning("detector worker %s is gone (%s): %d unfinished frame(s) lost; "
                    "stream(s) %s move to another worker (their tracks restart)",
                    _name(identity), why, w.outstanding, ", ".join(moved) or "none")

    def worker_for(self, stream: str) -> bytes | None:
        """The worker ``stream`` goes to (assigned now when it has none); ``None``
        while no worker is there."""
        identity = self.assigned.get(stream)
        if identity is not None and identity in self.workers:
            return identity
        now = self.clock()
        if now - self._last_join < self.settle_s and \
                now - self._burst_start < 3 * self.settle_s:
            return None  # workers are still joining: let them all in first
        load = {i: 0 for i in self.workers}
        for s, i in self.assigned.items():
            if i in load:
                load[i] += 1
        identity = choose_worker(stream, load)
        if identity is not None:
            self.assigned[stream] = identity
            log.info("stream %s -> detector worker %s", stream, _name(identity))
        return identity

    def ready(self, stream: str) -> bool:
        """True when a frame of ``stream`` can be sent now (its worker has credit)."""
        self.service()
        identity = self.worker_for(stream)
        return identity is not None and self.workers[identity].credit > 0

    def wait(self, timeout_ms: int) -> None:
        """Wait up to ``timeout_ms`` for a worker's message (credit), then read them."""
        self.sock.poll(timeout_ms, zmq.POLLIN)
        self.service()

    # -- sending ---------------------------------------------------------------------
    def _try_send(self, frames: list, kind: str, stream: str, credit: bool) -> bool:
        if not (self.ready(stream) if credit else self._has_worker(stream)):
            return False
        identity = self.assigned[stream]
        try:
            self.sock.send_multipart([identity, *frames], flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                self._lost(identity, "its connection closed")
                return False
            raise
        if credit:
            w = self.workers[identity]
            w.credit -= 1
            w.outstanding += 1
        self.metrics.sent.labels(self.metrics.stage, kind).inc()
        return True

    def _has_worker(self, stream: str) -> bool:
        self.service()
        return self.worker_for(stream) is not None

    def send(self, frames: list, kind: str, stream: str, block: bool = False,
             timeout_s: float | None = None) -> bool:
        """Send one frame message of ``stream`` to its worker, using one credit.

        Args:
            frames: output of :func:`common.wire.encode`.
            kind: message kind (metrics label).
            stream: the stream it belongs to.
            block: ``False`` drops it at once when the worker has no credit (or there is
                no worker), counted as ``queue_full``; ``True`` waits for credit until
                sent, ``timeout_s`` passes (``send_timeout``) or stop is set
                (``shutdown``).
            timeout_s: limit for a blocking send (seconds); ``None`` waits until stop.

        Returns:
            ``True`` when the message was handed to ZeroMQ.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            if self._try_send(frames, kind, stream, credit=True):
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
            self.wait(50)

    def send_control(self, frames: list, kind: str = "eos", stream: str = "",
                     timeout_s: float = 30.0, stop_grace_s: float = 0.5) -> bool:
        """Send a control message (end of stream) of ``stream`` to its worker, without
        credit, after the stream's frames; waits for a worker up to ``timeout_s`` (once
        stop is set, at most ``stop_grace_s`` more), as :meth:`Sender.send_control`.

        Returns:
            ``True`` when the message was handed to ZeroMQ.
        """
        deadline = time.monotonic() + timeout_s
        stop_deadline = None
        while not self._try_send(frames, kind, stream, credit=False):
            now = time.monotonic()
            if self.stop.is_set() and stop_deadline is None:
                stop_deadline = now + stop_grace_s
            if now > deadline:
                log.error("could not deliver %s message of %s within %.1f s: no detector "
                          "worker", kind, stream, timeout_s)
                return False
            if stop_deadline is not None and now > stop_deadline:
                log.error("stopping: %s message of %s not delivered (no worker took it "
                          "within %.1f s)", kind, stream, stop_grace_s)
                return False
            self.on_wait()
            self.wait(50)
        return True

    def close(self) -> None:
        """Close the socket without lingering."""
        self.sock.close(0)


def _count(rest: list) -> int:
    """The non-negative count in a control message's second frame (0 when absent or
    not a number: a malformed control message grants nothing)."""
    try:
        return max(0, min(int(bytes(rest[0])), 1_000_000)) if rest else 0
    except ValueError:
        return 0


def _name(identity: bytes) -> str:
    """A worker identity for logs."""
    return identity.decode("ascii", "replace")


class StreamDealer:
    """A worker's input under stream affinity (see the module docstring): one DEALER
    socket per router address, polled together; :meth:`recv` validates like
    :class:`Receiver` and the worker returns one credit per finished frame with
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
        """Wait up to ``timeout_ms`` for one valid message (see :class:`Receiver`);
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
