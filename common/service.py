"""The per-service runtime: everything a service process needs, set up and torn down in
one place (:class:`ServiceRuntime`).

The pieces live in their own modules: process set-up (logs, thread budget, signals, exit
codes) in :mod:`common.process`, liveness and lifecycle state in :mod:`common.health`,
the HTTP server in :mod:`common.http_server`, sockets in :mod:`common.sockets`.
Signal handlers only set a stop event; loops poll with timeouts and clean up in
``finally`` blocks.
"""

from __future__ import annotations

import logging
import os
import threading

from prometheus_client import generate_latest

from common.curve import Curve
from common.health import Health
from common.http_server import HTTPServer
from common.metrics import StageMetrics
from common.process import (EXIT_CONFIG, Refused, install_signal_handlers,
                            set_thread_budget, setup_logging, write_exit_reason)
from common.redact import install_log_redaction
from common.security import HttpAuth, SecurityConfigError, is_loopback
from common.states import ServiceState

log = logging.getLogger(__name__)

__all__ = ["ServiceRuntime", "terminate_context"]


class _LastError(logging.Handler):
    """Remembers the message of the last ERROR (or worse) log record."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.message: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record's message (never raises: a log call must not fail)."""
        try:
            self.message = record.getMessage()
        except Exception:  # noqa: BLE001 (a bad format string must not break logging)
            self.message = str(record.msg)


class ServiceRuntime:
    """Everything a service process needs, set up and torn down in one place.

    Use as a context manager::

        with ServiceRuntime("detector", cfg) as rt:
            rx = rt.receiver(cfg.input)
            tx = rt.sender(cfg.output)
            try:
                model = load(cfg.model)
            except ValueError as exc:
                return rt.refuse(f"cannot load the model: {exc}")   # exit code 2
            rt.health.enter(ServiceState.RUNNING)
            while not rt.stop.is_set():
                rt.health.beat()
                msg = rx.recv(cfg.recv_timeout_ms)
                ...

    On entry: logging, security settings (CURVE keys with the ZAP authenticator,
    :mod:`common.curve`; HTTP credentials, :mod:`common.security`; one that does not load
    raises :class:`common.process.Refused`), thread budget, metrics, health, signal
    handlers (set ``stop``), HTTP server when ``cfg.http_port`` is non-zero
    (``rt.http.port``). Every socket made by :meth:`receiver`/:meth:`sender` on
    ``tcp://`` uses CURVE when it is configured. On exit: the state becomes ``stopped``, the final metrics go to ``cfg.metrics_file`` (if set), the
    exit reason to the exit-reason file (see :meth:`refuse`), sockets are closed with
    ``LINGER=0``, the ZeroMQ context terminated, the HTTP server stopped: all within a
    fraction of a second.

    Args:
        stage: stage name (metrics label), one of ``common.metrics.STAGES``.
        cfg: the service's :class:`common.config.ServiceConfig`.
        routes: extra HTTP routes (path -> handler).
        stop: an existing stop event (tests, threads); a new one when ``None``.
        registry: metrics registry to use; a new one when ``None``.
        signals: install SIGINT/SIGTERM handlers (only works in the main thread).
    """

    def __init__(self, stage: str, cfg, routes: dict | None = None,
                 stop: threading.Event | None = None, registry=None, signals: bool = True):
        self.stage = stage
        self.cfg = cfg
        self.stop = stop or threading.Event()
        self.metrics = StageMetrics(stage, registry)
        self.health = Health(self.metrics, cfg.heartbeat_timeout_s)
        self._routes = routes
        self._signals = signals
        self._sockets: list = []
        self.http: HTTPServer | None = None
        self.ctx = None
        #: Why the service refused to start (set by :meth:`refuse`).
        self.refusal: str | None = None
        self._errors = _LastError()
        #: Longest wait for the ZeroMQ context to terminate on exit (seconds).
        self.term_timeout_s = 1.0
        #: CURVE keys (``None``: off) and the ZAP authenticator thread when binding.
        self.curve: Curve | None = None
        self._authenticator = None

    def __enter__(self) -> "ServiceRuntime":
        import zmq
        setup_logging(self.cfg.log_level)
        try:
            self.curve = Curve.from_config(self.cfg)
            auth = HttpAuth.from_config(self.cfg)
        except SecurityConfigError as exc:
            log.error("%s", exc)
            write_exit_reason(str(exc), refused=True)
            raise Refused(str(exc)) from None
        logging.getLogger().addHandler(self._errors)
        install_log_redaction()  # the exit reason is a log message too
        set_thread_budget(self.cfg.threads)
        if self._signals:
            install_signal_handlers(self.stop)
        self.ctx = zmq.Context()
        if self.curve is not None:
            self._authenticator = self.curve.start_authenticator(self.ctx)
        if self.cfg.http_port:
            self.http = HTTPServer(self.cfg.http_host, self.cfg.http_port, self.metrics,
                                   self.health, self._routes, auth).start()
            if self._routes and auth is None and not is_loopback(self.cfg.http_host):
                log.warning("the live view of people's faces (%s) is served on %s:%d to "
                            "anyone who can reach it, without authentication: set "
                            "http_basic_auth or http_auth_token (docs/deploy.md, "
                            "Security), or http_host 127.0.0.1", " ".join(self._routes),
                            self.cfg.http_host, self.http.port)
        return self

    def refuse(self, reason: str) -> int:
        """Refuse to run: the configuration or input cannot work (restarting cannot help).

        Logs ``reason`` as an error and keeps it for the exit-reason file written on exit
        (``agegender run`` shows it and stops the stack instead of restarting).

        Returns:
            :data:`common.process.EXIT_CONFIG`, for ``return rt.refuse(...)`` in ``main``.
        """
        log.error("%s", reason)
        self.refusal = reason
        return EXIT_CONFIG

    def receiver(self, endpoint: str, kinds: tuple[str, ...] | None = None):
        """A :class:`common.sockets.Receiver` on ``endpoint`` with the config's limits
        (and CURVE on ``tcp://`` when configured).

        ``kinds``: message kinds the input accepts (others are counted as malformed
        ``bad_kind``, without a log line per message); ``None`` accepts all.
        """
        from common.sockets import Receiver
        rx = self._guard(lambda: Receiver(
            self.ctx, endpoint, self.metrics, hwm=self.cfg.hwm,
            max_frame_age_s=self.cfg.max_frame_age_s, kinds=kinds, curve=self.curve))
        self._sockets.append(rx)
        return rx

    def sender(self, endpoint: str):
        """A :class:`common.sockets.Sender` on ``endpoint`` with the config's HWM (and
        CURVE on ``tcp://`` when configured); its waits for room downstream keep the
        heartbeat going."""
        from common.sockets import Sender
        tx = self._guard(lambda: Sender(self.ctx, endpoint, self.metrics, self.stop,
                                        hwm=self.cfg.hwm, curve=self.curve,
                                        on_wait=self.health.beat))
        self._sockets.append(tx)
        return tx

    def stream_dealer(self, endpoint: str, window: int):
        """A :class:`common.stream_dealer.StreamDealer` (a worker's input under stream
        affinity) on ``endpoint`` with the config's limits, ``window`` credits per router
        (and CURVE on ``tcp://`` when configured); only ``frame`` and ``eos`` messages."""
        from common.stream_dealer import StreamDealer
        rx = self._guard(lambda: StreamDealer(
            self.ctx, endpoint, self.metrics, window=window,
            max_frame_age_s=self.cfg.max_frame_age_s, kinds=("frame", "eos"),
            curve=self.curve))
        self._sockets.append(rx)
        return rx

    def stream_router(self, endpoint: str):
        """A :class:`common.stream_router.StreamRouter` (frames by stream to live workers) on
        ``endpoint`` (and CURVE on ``tcp://`` when configured); it ticks the heartbeat
        while a send waits."""
        from common.stream_router import StreamRouter
        tx = self._guard(lambda: StreamRouter(self.ctx, endpoint, self.metrics, self.stop,
                                              curve=self.curve, on_wait=self.health.beat))
        self._sockets.append(tx)
        return tx

    def _guard(self, make):
        """``make()``; a socket CURVE cannot cover (it would run in clear) is a refusal.

        Raises:
            common.process.Refused: see :meth:`common.curve.Curve.apply`.
        """
        try:
            return make()
        except SecurityConfigError as exc:
            self.refuse(str(exc))
            raise Refused(str(exc)) from None

    def __exit__(self, *exc) -> None:
        self.health.enter(ServiceState.STOPPED)
        self._write_exit_reason()
        self._write_metrics_file()
        try:
            for s in self._sockets:
                s.close()
            if self._authenticator is not None:
                self._authenticator.stop()
            if self.ctx is not None:
                terminate_context(self.ctx, self.term_timeout_s)
        finally:
            logging.getLogger().removeHandler(self._errors)
            if self.http is not None:
                self.http.close()

    def _write_exit_reason(self) -> None:
        """The refusal, or else the last error logged by a service that never got ready
        (a service that logs its reason and returns exit code 2 without :meth:`refuse`)."""
        if self.refusal is not None:
            write_exit_reason(self.refusal, refused=True)
        elif self._errors.message is not None and not self.health.was_ready:
            write_exit_reason(self._errors.message, refused=False)

    def _write_metrics_file(self) -> None:
        """Final metrics to ``cfg.metrics_file`` (atomic replace), if configured."""
        path = getattr(self.cfg, "metrics_file", None)
        if path is None:
            return
        tmp = f"{path}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(generate_latest(self.metrics.registry))
            os.replace(tmp, path)
        except OSError as exc:
            log.error("cannot write the final metrics to %s: %s", path, exc)


def terminate_context(ctx, timeout_s: float = 1.0) -> bool:
    """Terminate a ZeroMQ context without ever hanging exit.

    ``zmq_ctx_term`` blocks until every socket of the context is closed, so one socket
    created outside :class:`ServiceRuntime` (or not closed on an error path) would hang
    the process forever. Terminate in a helper thread; after ``timeout_s`` seconds close
    the leftover sockets with ``LINGER=0`` (logged as an error) so termination completes.

    Returns:
        ``True`` when the context terminated within ``timeout_s`` without help.
    """
    t = threading.Thread(target=ctx.term, name="zmq-term", daemon=True)
    t.start()
    t.join(timeout_s)
    if not t.is_alive():
        return True
    left = [sk for sk in list(getattr(ctx, "_sockets", ())) if not sk.closed]
    log.error("ZeroMQ context still had %d open socket(s) %.1f s after exit began; "
              "closing them without lingering", len(left), timeout_s)
    for sk in left:
        sk.close(linger=0)
    t.join(timeout_s)
    if t.is_alive():
        log.error("ZeroMQ context did not terminate; exiting anyway")
    return False
