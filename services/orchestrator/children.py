"""One service process of the stack: start, signals, HTTP, final metrics, exit reason."""

from __future__ import annotations

import collections
import ctypes
import http.client
import logging
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from common.process import EXIT_REASON_ENV, read_exit_reason
from common.redact import redact

log = logging.getLogger("agegender.run")

#: The checkout's root, put first on the children's ``PYTHONPATH``.
ROOT = Path(__file__).resolve().parents[2]


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM this child when the orchestrator dies (Linux prctl).

    The kernel sends it when the *thread* that spawned the child ends;
    :func:`services.orchestrator.runner.run_stack` starts and restarts every child from
    the one thread that later shuts them down.
    """
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: children are still stopped by the orchestrator's finally


class Child:
    """One service process (``python -m services.cli NAME ARGS``) and its restart history.

    Its output goes to ``log_path``; at exit it writes its final metrics next to it
    (``.prom``) and, when it refused to start, its reason (``.exit.json``, see
    :mod:`common.process`).

    Args:
        name: service name (``capture``, ``detector``, ``classifier``, ``sink``).
        args: its command-line arguments.
        http_port: its HTTP port (``/metrics``, ``/readyz``).
        log_path: file its output is appended to.
        restart_args: extra arguments when it is started again after a crash.
        env: extra environment variables (capture's sources: kept off the command line,
            which ``ps`` shows to every local user).
    """

    def __init__(self, name: str, args: list[str], http_port: int, log_path: Path,
                 restart_args: list[str] | None = None, env: dict[str, str] | None = None):
        self.name = name
        self.args = args
        self.env = dict(env or {})
        self.restart_args = restart_args or []
        self.http_port = http_port
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.restarts: collections.deque[float] = collections.deque()
        self.total_restarts = 0
        self.stalls = 0  # times it was found stalled and killed to restart it
        self.finished = False  # exited 0 on purpose (capture at end of files, sink done)
        self.last_metrics = ""
        self.scrape_ok = False  # the last scrape of the running process answered
        self.metrics_file = log_path.with_suffix(".prom")  # written by the service at exit
        self.exit_reason_file = log_path.with_suffix(".exit.json")

    def start(self) -> None:
        """Spawn the process in its own session, output appended to its log file."""
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        env[EXIT_REASON_ENV] = str(self.exit_reason_file)
        self.exit_reason_file.unlink(missing_ok=True)  # a reason of an earlier run
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.cli", self.name, *self.args,
                 "--metrics-file", str(self.metrics_file),
                 *(self.restart_args if self.total_restarts else [])],
                stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True, preexec_fn=_die_with_parent)
        log.debug("started %s pid %d", self.name, self.proc.pid)

    @property
    def pid(self) -> int | None:
        """Process id of the current process (``None`` before start)."""
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        """True while the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def exit_reason(self) -> str:
        """Why the process refused to run, as it wrote it (redacted); a generic sentence
        naming the log when it wrote none."""
        data = read_exit_reason(self.exit_reason_file)
        if data is None:
            return f"refused to start without saying why (see {self.log_path})"
        return redact(data["reason"])

    def url(self, path: str) -> str:
        """URL of ``path`` on this service's HTTP server."""
        return f"http://127.0.0.1:{self.http_port}{path}"

    def get(self, path: str, timeout: float = 1.0) -> tuple[int, str]:
        """``(status, body)`` of an HTTP GET; ``(0, "")`` when unreachable.

        A service killed mid-response (``http.client.IncompleteRead``, a reset
        connection) also reads as unreachable, so a scrape never takes the
        orchestrator down with it.
        """
        try:
            with urllib.request.urlopen(self.url(path), timeout=timeout) as r:
                return r.status, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:  # e.g. 503 from /healthz: body says why
            try:
                return exc.code, exc.read().decode("utf-8", "replace")
            except (OSError, http.client.HTTPException):
                return exc.code, ""
        except (OSError, ValueError, http.client.HTTPException):
            return 0, ""

    def health(self, timeout: float = 0.5) -> dict | None:
        """The JSON of ``/healthz`` (also when it answers 503), ``None`` when the service
        does not answer within ``timeout`` seconds (a stopped process never does)."""
        import json
        code, body = self.get("/healthz", timeout=timeout)
        if not code:
            return None
        try:
            data = json.loads(body)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def scrape(self) -> str:
        """Fetch ``/metrics`` (kept as :attr:`last_metrics` when it succeeds); once the
        process has exited, read the final metrics it wrote to :attr:`metrics_file`."""
        if self.proc is not None and not self.running():
            try:
                self.last_metrics = self.metrics_file.read_text()
            except OSError:
                pass  # killed before it could write them: keep the last scrape
            return self.last_metrics
        code, body = self.get("/metrics")
        self.scrape_ok = code == 200
        if self.scrape_ok:
            self.last_metrics = body
        return self.last_metrics

    def log_tail(self, n: int = 15) -> str:
        """Last ``n`` lines of the service's log (redacted: the log also holds what the
        service's libraries wrote to stderr themselves)."""
        try:
            return redact("\n".join(
                self.log_path.read_text(errors="replace").splitlines()[-n:]))
        except OSError:
            return ""

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the child's process group (it and anything it spawned)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass  # exited meanwhile
