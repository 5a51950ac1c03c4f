"""The HTTP side of every service: ``/metrics``, ``/healthz``, ``/readyz`` and extra routes
(the sink's live view), served from a daemon thread of the standard library's
``ThreadingHTTPServer``.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from common.health import Health
from common.metrics import StageMetrics
from common.redact import redact_obj
from common.security import HttpAuth

log = logging.getLogger(__name__)

#: Extra route: ``handler(request) -> None`` writes the whole response itself.
Route = Callable[[BaseHTTPRequestHandler], None]


def reply(req: BaseHTTPRequestHandler, code: int, ctype: str, body: bytes,
          headers: dict[str, str] | None = None) -> None:
    """Write a whole response: status, ``Content-Type``, ``Content-Length``, ``headers``,
    then ``body`` (not for a ``HEAD`` request, which gets the same headers only)."""
    req.send_response(code)
    req.send_header("Content-Type", ctype)
    req.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        req.send_header(name, value)
    req.end_headers()
    if req.command != "HEAD":
        req.wfile.write(body)


class HTTPServer:
    """Serves ``/metrics``, ``/healthz``, ``/readyz`` and optional extra routes.

    ``/healthz`` and ``/readyz`` answer ``{"ok": bool, "state": str, "stage": str,
    "heartbeat_age_s": float}`` with status 200 when ok, else 503 (``state`` is a
    :class:`common.states.ServiceState` value, ``heartbeat_age_s`` the seconds since the
    main loop's last tick: ``agegender run`` tells a stalled service by it).

    Any other path answers 404. ``HEAD`` gets the headers a ``GET`` would (extra routes,
    which may stream, answer 405 to it).

    With ``auth`` every path but the probes (unless ``auth.probes``) answers 401 with a
    ``WWW-Authenticate`` challenge to a request without valid credentials
    (:class:`common.security.HttpAuth`).

    Args:
        host: listen address.
        port: TCP port (0 picks a free one; see :attr:`port`).
        metrics: metrics whose registry ``/metrics`` exposes (or just a registry).
        health: liveness/readiness source; ``None``: no ``/healthz``, ``/readyz`` (404).
        routes: extra ``path -> handler`` routes (e.g. the sink's MJPEG page).
        auth: credentials required; ``None``: open.
    """

    def __init__(self, host: str, port: int, metrics: StageMetrics | CollectorRegistry,
                 health: Health | None, routes: dict[str, Route] | None = None,
                 auth: HttpAuth | None = None):
        registry = metrics if isinstance(metrics, CollectorRegistry) else metrics.registry
        stage = getattr(metrics, "stage", None)
        extra = dict(routes or {})

        class Handler(BaseHTTPRequestHandler):
            """Routes GET and HEAD requests to /metrics, /healthz, /readyz and the extra
            routes."""
            def log_message(self, fmt, *args):  # keep access logs out of stderr
                """Send access logs to the debug log instead of stderr."""
                log.debug("http: " + fmt, *args)

            def do_HEAD(self):  # noqa: N802 (http.server API)
                """Serve one HEAD request: a GET's headers, no body."""
                if self.path.split("?", 1)[0] in extra:
                    reply(self, 405, "text/plain", b"", {"Allow": "GET"})
                    return
                self.do_GET()

            def do_GET(self):  # noqa: N802 (http.server API)
                """Serve one GET request; a client that goes away is logged at debug level."""
                path = self.path.split("?", 1)[0]
                try:
                    if auth is not None and auth.required(path) \
                            and not auth.allows(self.headers.get("Authorization")):
                        reply(self, 401, "text/plain", b"authentication required\n",
                              {"WWW-Authenticate": auth.challenge()})
                    elif path == "/metrics":
                        reply(self, 200, CONTENT_TYPE_LATEST, generate_latest(registry))
                    elif path in ("/healthz", "/readyz") and health is not None:
                        ok = health.alive() if path == "/healthz" else health.ready()
                        body = json.dumps(redact_obj({
                            "ok": ok, "state": health.state.value, "stage": stage,
                            "heartbeat_age_s": round(health.heartbeat_age_s(), 3)})).encode()
                        reply(self, 200 if ok else 503, "application/json", body)
                    elif path in extra:
                        extra[path](self)
                    else:
                        reply(self, 404, "text/plain", b"not found\n")
                except (BrokenPipeError, ConnectionResetError):
                    log.debug("http client went away on %s", path)

        self._health = health
        ThreadingHTTPServer.daemon_threads = True
        self._server = ThreadingHTTPServer((host, port), Handler)
        self.port = self._server.server_address[1]
        self.auth = auth
        # a short poll interval keeps close() (shutdown) well under the 2 s exit budget
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,),
                                        name="http", daemon=True)

    def start(self) -> "HTTPServer":
        """Start serving in a daemon thread; returns ``self``."""
        self._thread.start()
        log.info("HTTP on port %d: /metrics%s%s", self.port,
                 "" if self._health is None else " /healthz /readyz",
                 "" if self.auth is None else " (credentials required%s)" % (
                     "" if self.auth.probes else "; probes open"))
        return self

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._thread.is_alive():  # shutdown() waits forever if serve_forever never ran
            self._server.shutdown()
        self._server.server_close()
