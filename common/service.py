"""Per-service runtime: health state, the HTTP server (/metrics, /healthz, /readyz),
logging, thread budget and signal handling.

Signal handlers only set a stop event; loops poll with timeouts and clean up in
``finally`` blocks.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from common.metrics import StageMetrics

log = logging.getLogger(__name__)

#: Extra route: ``handler(request) -> None`` writes the whole response itself.
Route = Callable[[BaseHTTPRequestHandler], None]


def setup_logging(level: str = "INFO") -> None:
    """Configure one-line logs: time, level, process name, logger, message."""
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s",
                        force=True)


def limit_image_decoding(max_pixels: int | None = None) -> None:
    """Cap the image size OpenCV will decode in this process (pixels, width x height).

    OpenCV allocates the full image a JPEG/PNG header announces before reading the data
    (default limit 2**30 pixels: a 2 MB JPEG can expand to gigabytes). The default cap is
    the wire schema's largest frame, ``common.wire.MAX_SIDE ** 2``: nothing larger could
    be sent downstream anyway. Larger images make ``cv2.imdecode``/``cv2.imread`` raise
    ``cv2.error`` (catch it where images are decoded). Sets ``OPENCV_IO_MAX_IMAGE_PIXELS``
    unless the environment already sets it; OpenCV reads it at its first decode, so call
    this before decoding anything.
    """
    from common.wire import MAX_SIDE
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(max_pixels or MAX_SIDE * MAX_SIDE))


def set_thread_budget(threads: int) -> None:
    """Limit OpenMP, BLAS, OpenCV and TensorFlow threads of this process.

    Call before TensorFlow is imported for the environment variables to fully apply;
    TensorFlow's own pools are set again if it is already imported. Also caps the image
    size OpenCV decodes (:func:`limit_image_decoding`), as every entry point calls this
    first.
    """
    limit_image_decoding()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "TF_NUM_INTRAOP_THREADS"):
        os.environ[var] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import cv2
    cv2.setNumThreads(threads)
    import sys
    if "tensorflow" in sys.modules:
        import tensorflow as tf
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # already initialised: keep what it has
            log.debug("TensorFlow thread pools already initialised")


class Health:
    """Liveness and readiness of one service.

    ``/healthz`` is OK while the main loop's heartbeat is fresher than ``timeout_s``
    seconds; ``/readyz`` is OK once :meth:`set_ready` was called (models loaded, sockets
    up) and the service is alive.
    """

    def __init__(self, metrics: StageMetrics, timeout_s: float = 10.0):
        self.metrics = metrics
        self.timeout_s = timeout_s
        self._beat = time.monotonic()
        self._ready = False
        self.state = "starting"

    def beat(self) -> None:
        """Record a tick of the main loop."""
        self._beat = time.monotonic()
        self.metrics.heartbeat.labels(self.metrics.stage).set(time.time())

    def set_ready(self, ready: bool = True, state: str | None = None) -> None:
        """Mark the service ready (or not) and optionally name its lifecycle state."""
        self._ready = ready
        self.state = state or ("running" if ready else self.state)

    def alive(self) -> bool:
        """True while the heartbeat is fresh."""
        return time.monotonic() - self._beat < self.timeout_s

    def ready(self) -> bool:
        """True when ready and alive."""
        return self._ready and self.alive()


class HTTPServer:
    """Serves ``/metrics``, ``/healthz``, ``/readyz`` and optional extra routes.

    Args:
        host: listen address.
        port: TCP port (0 picks a free one; see :attr:`port`).
        metrics: metrics whose registry ``/metrics`` exposes.
        health: liveness/readiness source.
        routes: extra ``path -> handler`` routes (e.g. the sink's MJPEG page).
    """

    def __init__(self, host: str, port: int, metrics: StageMetrics, health: Health,
                 routes: dict[str, Route] | None = None):
        registry = metrics.registry
        extra = dict(routes or {})

        class Handler(BaseHTTPRequestHandler):
            """Routes GET requests to /metrics, /healthz, /readyz and the extra routes."""
            def log_message(self, fmt, *args):  # keep access logs out of stderr
                """Send access logs to the debug log instead of stderr."""
                log.debug("http: " + fmt, *args)

            def _reply(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):  # noqa: N802 (http.server API)
                """Serve one GET request; a client that goes away is logged at debug level."""
                path = self.path.split("?", 1)[0]
                try:
                    if path == "/metrics":
                        self._reply(200, CONTENT_TYPE_LATEST, generate_latest(registry))
                    elif path in ("/healthz", "/readyz"):
                        ok = health.alive() if path == "/healthz" else health.ready()
                        body = json.dumps({"ok": ok, "state": health.state,
                                           "stage": metrics.stage}).encode()
                        self._reply(200 if ok else 503, "application/json", body)
                    elif path in extra:
                        extra[path](self)
                    else:
                        self._reply(404, "text/plain", b"not found\n")
                except (BrokenPipeError, ConnectionResetError):
                    log.debug("http client went away on %s", path)

        ThreadingHTTPServer.daemon_threads = True
        self._server = ThreadingHTTPServer((host, port), Handler)
        self.port = self._server.server_address[1]
        # a short poll interval keeps close() (shutdown) well under the 2 s exit budget
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,),
                                        name="http", daemon=True)

    def start(self) -> "HTTPServer":
        """Start serving in a daemon thread; returns ``self``."""
        self._thread.start()
        log.info("HTTP on port %d: /metrics /healthz /readyz", self.port)
        return self

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._thread.is_alive():  # shutdown() waits forever if serve_forever never ran
            self._server.shutdown()
        self._server.server_close()


def exit_process(code: int) -> None:
    """End a service process at once with ``code``, after its ``main`` has cleaned up.

    Python's interpreter teardown after ``SystemExit`` takes 2-3 s in a process that ran
    TensorFlow (module and C++ object destructors), which breaks the "exit within 2 s of
    SIGTERM" budget although ``main`` itself returned in milliseconds. This flushes the
    logging handlers and standard streams and calls ``os._exit(code)``.

    When standard output is not the process's real file descriptor 1 (click's
    ``CliRunner`` and other in-process callers swap it), it raises ``SystemExit(code)``
    instead, so tests that invoke a command in-process keep their interpreter.

    Raises:
        SystemExit: in-process callers (see above).
    """
    logging.shutdown()
    import sys
    try:
        real = sys.stdout is not None and sys.stdout.fileno() == 1
    except (AttributeError, ValueError, OSError):  # io.StringIO and friends
        real = False
    if not real:
        raise SystemExit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            log.debug("could not flush %r before exit", stream)
    os._exit(int(code))


def install_signal_handlers(stop: threading.Event) -> None:
    """Make SIGINT and SIGTERM set ``stop`` (nothing else happens in the handler)."""
    def handler(signum, frame):
        """Signal handler: only sets the stop event."""
        stop.set()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)


class ServiceRuntime:
    """Everything a service process needs, set up and torn down in one place.

    Use as a context manager::

        with ServiceRuntime("detector", cfg) as rt:
            rx = rt.receiver(cfg.input)
            tx = rt.sender(cfg.output)
            rt.health.set_ready()
            while not rt.stop.is_set():
                rt.health.beat()
                msg = rx.recv(cfg.recv_timeout_ms)
                ...

    On entry: logging, thread budget, metrics, health, signal handlers (set ``stop``),
    HTTP server when ``cfg.http_port`` is non-zero (``rt.http.port``). On exit: sockets closed with ``LINGER=0``, the ZeroMQ
    context terminated, the HTTP server stopped: all within a fraction of a second.

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
        #: Longest wait for the ZeroMQ context to terminate on exit (seconds).
        self.term_timeout_s = 1.0

    def __enter__(self) -> "ServiceRuntime":
        import zmq
        setup_logging(self.cfg.log_level)
        set_thread_budget(self.cfg.threads)
        if self._signals:
            install_signal_handlers(self.stop)
        self.ctx = zmq.Context()
        if self.cfg.http_port:
            self.http = HTTPServer(self.cfg.http_host, self.cfg.http_port, self.metrics,
                                   self.health, self._routes).start()
        return self

    def receiver(self, endpoint: str, kinds: tuple[str, ...] | None = None):
        """A :class:`common.sockets.Receiver` on ``endpoint`` with the config's limits.

        ``kinds``: message kinds the input accepts (others are counted as malformed
        ``bad_kind``, without a log line per message); ``None`` accepts all.
        """
        from common.sockets import Receiver
        rx = Receiver(self.ctx, endpoint, self.metrics, hwm=self.cfg.hwm,
                      max_frame_age_s=self.cfg.max_frame_age_s, kinds=kinds)
        self._sockets.append(rx)
        return rx

    def sender(self, endpoint: str):
        """A :class:`common.sockets.Sender` on ``endpoint`` with the config's HWM."""
        from common.sockets import Sender
        tx = Sender(self.ctx, endpoint, self.metrics, self.stop, hwm=self.cfg.hwm)
        self._sockets.append(tx)
        return tx

    def __exit__(self, *exc) -> None:
        self.health.set_ready(False, "stopped")
        self._write_metrics_file()
        try:
            for s in self._sockets:
                s.close()
            if self.ctx is not None:
                terminate_context(self.ctx, self.term_timeout_s)
        finally:
            if self.http is not None:
                self.http.close()


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
