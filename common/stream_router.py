"""Stream affinity, the frame source's side: :class:`StreamRouter` (ROUTER, capture)
sends each stream's frames to one detector worker
(:class:`common.stream_dealer.StreamDealer`, DEALER), and the control protocol both
sides speak.

The detector tracks faces, which needs every frame of a stream, in order, in one
process. Workers connect and announce themselves (``hello`` with their credit window,
then a heartbeat every ``heartbeat_s``); the router assigns each stream to one live
worker by rendezvous hashing among the least-loaded workers and keeps it there until that
worker disappears (no heartbeat for ``worker_timeout_s``, a ``bye``, or a send that finds
it gone); only then the stream moves (its tracks restart on the new worker). Flow control
is per worker **credit**: a worker grants as many frames as it can hold and returns one
credit per frame it has finished, so file frames wait for credit (lossless backpressure,
per stream, without blocking other streams) and live frames are dropped when their
worker has none (``queue_full``). Frames a vanished worker had not finished are counted
as dropped (``worker_lost``). ``eos`` needs no credit; it follows its stream's frames on
the same connection, so it never overtakes them.

Sockets follow :mod:`common.sockets` (explicit high-water marks, ``LINGER=0``, polled
with a timeout; CURVE on ``tcp://`` with a :class:`common.curve.Curve`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from typing import Callable

import zmq

from common.curve import Curve
from common.metrics import StageMetrics
from common.sockets import make_socket, send_data, send_lossless

log = logging.getLogger(__name__)

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
        return send_data(lambda: self._try_send(frames, kind, stream, credit=True),
                         self._wait_credit, self.metrics, self.stop, block, timeout_s)

    def send_control(self, frames: list, kind: str = "eos", stream: str = "",
                     timeout_s: float = 30.0, stop_grace_s: float = 0.5) -> bool:
        """Send a control message (end of stream) of ``stream`` to its worker, without
        credit, after the stream's frames; waits for a worker up to ``timeout_s`` (once
        stop is set, at most ``stop_grace_s`` more), as :meth:`common.sockets.Sender.send_control`.

        Returns:
            ``True`` when the message was handed to ZeroMQ.
        """
        return send_lossless(lambda: self._try_send(frames, kind, stream, credit=False),
                             self._wait_credit, self.stop, timeout_s, stop_grace_s,
                             f"{kind} message of {stream}", "detector worker")

    def _wait_credit(self) -> None:
        """Tick the caller's heartbeat and wait up to 50 ms for a worker's message."""
        self.on_wait()
        self.wait(50)

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
