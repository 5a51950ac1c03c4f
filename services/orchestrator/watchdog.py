"""The watchdog: restarts services that die, within a cap; stops on a refusal.

A service that exits 0 on purpose (capture at the end of its files, the sink after every
end of stream) is finished, not dead. One that exits :data:`EXIT_CONFIG` refused its
configuration or input: restarting cannot help, so the stack stops and the reason the
service wrote (:meth:`services.orchestrator.children.Child.exit_reason`) is reported.
Any other exit is a crash: the service is started again, at most ``max_restarts`` times
within ``restart_window_s`` seconds; one more crash gives up on the stack.

A service that still runs but is stalled (:mod:`.stalls`: no heartbeat, or no progress
while work waits, for ``stall_timeout_s``) is killed with SIGKILL (a stopped process
cannot handle anything gentler) and restarted like a crashed one, counted in
``agegender_process_stalls_total{service}`` and the summary.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time

from services.orchestrator.children import Child
from services.orchestrator.options import (EXIT_CONFIG, EXIT_GAVE_UP, EXIT_OK,
                                           StackOptions)
from services.orchestrator.stalls import StallDetector

log = logging.getLogger("agegender.run")


class Watchdog:
    """Checks the children and restarts or gives up (see the module docstring).

    Args:
        opts: restart cap (``max_restarts``, ``restart_window_s``).
        children: the services by name.
        stop: set when the stack is stopping (a child that exits then is not restarted).
        restarts_total: ``agegender_process_restarts_total{service}`` counter.
        up: ``agegender_process_up{service}`` gauge.
        stalls_total: ``agegender_process_stalls_total{service}`` counter (``None``: no
            stall detection).

    Attributes:
        gave_up: the service that crashed too often, or ``None``.
        refused: ``{"service", "error"}`` after a refusal, or ``None``.
    """

    def __init__(self, opts: StackOptions, children: dict[str, Child],
                 stop: threading.Event, restarts_total, up, stalls_total=None):
        self.opts = opts
        self.children = children
        self.stop = stop
        self.restarts_total = restarts_total
        self.up = up
        self.stalls_total = stalls_total
        #: Fed by the stack's /healthz polls and /metrics scrapes.
        self.stalls = StallDetector(opts.stall_timeout_s)
        #: ``{"service", "reason", "t"}`` of every stall found (t: seconds since the
        #: Unix epoch).
        self.stall_events: list[dict] = []
        self.gave_up: str | None = None
        self.refused: dict | None = None

    def check(self) -> bool:
        """Check every child once; restart the ones that died (capped).

        Returns:
            ``False`` when a service crashed too often or refused its configuration
            (exit code :data:`EXIT_CONFIG`): the stack must stop.
        """
        for s, child in self.children.items():
            if child.proc is None or child.finished or child.running():
                continue
            rc = child.proc.returncode
            self.up.labels(s).set(0)
            if rc == 0 and s in ("capture", "sink"):
                child.finished = True  # capture: every file ended; sink: every stream ended
                log.info("%s finished", s)
                continue
            if self.stop.is_set():
                continue
            if rc == EXIT_CONFIG:
                self.refused = {"service": s, "error": child.exit_reason()}
                log.error("%s refused its configuration or input (exit code %d; restarting "
                          "cannot help): stopping the stack. Last log lines (%s):\n%s", s, rc,
                          child.log_path, child.log_tail())
                return False
            if not self._restart(s, child, rc):
                return False
        return self._check_stalls()

    def _check_stalls(self) -> bool:
        """Kill and restart every running service found stalled; ``False`` when one
        was over its restart cap."""
        if self.stalls_total is None or self.stop.is_set():
            return True
        for s, child in self.children.items():
            if child.finished or not child.running():
                continue
            why = self.stalls.stalled(s, child.pid)
            if why is None:
                continue
            child.stalls += 1
            self.stalls_total.labels(s).inc()
            self.stall_events.append({"service": s, "reason": why, "t": time.time()})
            log.warning("%s STALLED: %s; killing it (SIGKILL) to restart it", s, why)
            child.signal_group(signal.SIGKILL)
            try:
                child.proc.wait(5.0)
            except subprocess.TimeoutExpired:
                log.error("%s (pid %d) did not die of SIGKILL within 5 s", s, child.pid)
                continue
            self.up.labels(s).set(0)
            if not self._restart(s, child, child.proc.returncode, how="stalled"):
                return False
        return True

    def _restart(self, s: str, child: Child, rc: int, how: str | None = None) -> bool:
        """Start a crashed (or stalled and killed) child again; ``False`` (gave up) when
        over the cap."""
        now = time.monotonic()
        while child.restarts and now - child.restarts[0] > self.opts.restart_window_s:
            child.restarts.popleft()
        how = how or (f"signal {-rc}" if rc < 0 else f"exit code {rc}")
        if len(child.restarts) >= self.opts.max_restarts:
            self.gave_up = s
            log.error("%s died (%s) %d times within %.0f s: giving up and stopping the "
                      "stack. Last log lines (%s):\n%s", s, how, len(child.restarts) + 1,
                      self.opts.restart_window_s, child.log_path, child.log_tail())
            return False
        child.restarts.append(now)
        child.total_restarts += 1
        self.restarts_total.labels(s).inc()
        log.warning("%s died (%s); restarting (%d/%d within %.0f s)", s, how,
                    len(child.restarts), self.opts.max_restarts, self.opts.restart_window_s)
        child.start()
        self.up.labels(s).set(1)
        return True

    def failure_code(self) -> int:
        """Exit code for what made the watchdog stop the stack: :data:`EXIT_CONFIG` (a
        service refused its configuration), :data:`EXIT_GAVE_UP` (crashed too often), or
        :data:`EXIT_OK` when neither happened."""
        return EXIT_CONFIG if self.refused else EXIT_GAVE_UP if self.gave_up else EXIT_OK
