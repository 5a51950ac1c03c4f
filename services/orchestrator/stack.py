"""The four services as processes, wired over ``ipc://`` endpoints in a temp folder."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from common.redact import redact
from services.orchestrator import summary as summaries
from services.orchestrator.children import Child
from services.orchestrator.options import SERVICES, StackOptions
from services.orchestrator.stalls import message_totals
from services.orchestrator.watchdog import Watchdog
from services.orchestrator.wiring import (http_ports, probe_video, service_arguments,
                                          service_environments, single_video_file)

log = logging.getLogger("agegender.run")

#: Seconds between two ``/healthz`` polls of every running service (stall detection).
HEALTH_EVERY_S = 1.0


def _read_json(path: Path) -> dict:
    """The JSON object in ``path``; ``{}`` when absent, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class Stack:
    """The four services as processes, wired over ``ipc://`` endpoints in a temp dir.

    Args:
        opts: what to run.
        stop: event that ends the run (SIGINT/SIGTERM set it).
    """

    def __init__(self, opts: StackOptions, stop: threading.Event | None = None):
        self.opts = opts
        self.stop = stop or threading.Event()
        self.started_at = time.time() - 1.0  # (file times may be a little coarse)
        self.run_dir = Path(tempfile.mkdtemp(prefix="agegender-run-"))
        (self.run_dir / "logs").mkdir()
        self.status_path = self.run_dir / "sink_status.json"
        ports, self.metrics_port = http_ports(opts.http_base_port)
        # Live sources never end; files, folders and the demo end with an end of stream.
        self.expected_streams = 0 if opts.loop else max(1, len(opts.sources))
        self.video_fps, self.expected_frames = 0.0, 0
        video = single_video_file(opts.sources)
        if video is not None:
            self.video_fps, n = probe_video(video)
            self.expected_frames = 0 if opts.loop else n
        args = service_arguments(opts, self.run_dir, ports, self.expected_streams,
                                 self.video_fps)
        envs = service_environments(opts)
        self.children = {
            s: Child(s, args[s], ports[s], self.run_dir / "logs" / f"{s}.log",
                     # a restarted sink appends instead of replacing what it wrote
                     ["--append", "true"] if s == "sink" else None, env=envs.get(s))
            for s in SERVICES}
        log.info("live view http://localhost:%d/ ; /metrics on ports capture %d, detector %d, "
                 "classifier %d, sink %d, orchestrator (restarts) %d", ports["sink"],
                 ports["capture"], ports["detector"], ports["classifier"], ports["sink"],
                 self.metrics_port)
        self._metrics_server = None
        self._init_metrics()
        self.watchdog = Watchdog(opts, self.children, self.stop, self.restarts_total, self.up,
                                 self.stalls_total)
        self._next_health = 0.0

    def _init_metrics(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        from common.http_server import HTTPServer
        self.registry = CollectorRegistry()
        self.restarts_total = Counter("agegender_process_restarts_total",
                                      "Service processes restarted by the watchdog.",
                                      ["service"], registry=self.registry)
        self.up = Gauge("agegender_process_up", "1 while the service process runs.",
                        ["service"], registry=self.registry)
        self.stalls_total = Counter("agegender_process_stalls_total",
                                    "Running service processes found stalled (no heartbeat, "
                                    "or no progress while work waited, for "
                                    "--stall-timeout-s) and killed to restart them.",
                                    ["service"], registry=self.registry)
        for s in SERVICES:
            self.restarts_total.labels(s)
            self.stalls_total.labels(s)
            self.up.labels(s).set(0)
        try:  # /metrics only: any other path is 404 (common.http_server)
            self._metrics_server = HTTPServer("127.0.0.1", self.metrics_port, self.registry,
                                              None).start()
        except OSError as exc:
            log.warning("orchestrator metrics port %d unavailable (%s); restarts are in "
                        "the summary only", self.metrics_port, exc)

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> bool:
        """Start sink, classifier, detector; wait until ready; then start capture.

        Returns:
            ``False`` when stopped, given up or not ready within ``ready_timeout_s``.
        """
        for s in SERVICES[:-1]:
            self.children[s].start()
            self.up.labels(s).set(1)
        deadline = time.monotonic() + self.opts.ready_timeout_s
        pending = set(SERVICES[:-1])
        while pending and not self.stop.is_set():
            if not self.watchdog.check():
                return False
            for s in list(pending):
                if self.children[s].get("/readyz")[0] == 200:
                    pending.discard(s)
                    log.info("%s ready", s)
            if time.monotonic() > deadline:
                log.error("%s not ready after %.0f s; see %s", ", ".join(sorted(pending)),
                          self.opts.ready_timeout_s,
                          ", ".join(str(self.children[s].log_path) for s in pending))
                return False
            self.stop.wait(0.2)
        if self.stop.is_set():
            return False
        self.children["capture"].start()
        self.up.labels("capture").set(1)
        return True

    def status(self) -> dict:
        """The sink's newest status (frames, faces, fps, latency); ``{}`` before any."""
        return _read_json(self.status_path)

    def capture_status(self) -> dict:
        """Capture's newest status (each stream's state, skipped files; see
        :func:`services.capture.playback.write_status`); ``{}`` before any."""
        return _read_json(self.run_dir / "capture_status.json")

    def scrape_all(self) -> None:
        """Fetch the metrics of every started service (kept per child), downstream first;
        running ones' message counts go to the stall detector."""
        for s, child in self.children.items():
            if child.proc is None:
                continue
            running = child.running()
            text = child.scrape()
            if running:
                self.watchdog.stalls.counters(
                    s, child.pid, message_totals(text) if child.scrape_ok else None)
        self.watchdog.stalls.scraped()

    def poll_health(self, every_s: float = HEALTH_EVERY_S) -> None:
        """Ask every running service's ``/healthz`` (at most every ``every_s`` seconds)
        and give the answers to the stall detector."""
        now = time.monotonic()
        if now < self._next_health:
            return
        self._next_health = now + every_s
        for s, child in self.children.items():
            if child.running() and not child.finished:
                self.watchdog.stalls.health(s, child.pid, child.health())

    def finished(self) -> bool:
        """True once the sink saw the end of every expected stream."""
        return self.children["sink"].finished

    def shutdown(self) -> None:
        """Stop every child: SIGTERM to each process group, SIGKILL after the grace."""
        for s in reversed(SERVICES):  # capture first, so no new frames enter
            self.children[s].signal_group(signal.SIGTERM)
        deadline = time.monotonic() + self.opts.stop_grace_s
        for child in self.children.values():
            if child.proc is None:
                continue
            try:
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for s, child in self.children.items():
            if child.running():
                log.warning("%s did not stop within %.1f s of SIGTERM; killing it", s,
                            self.opts.stop_grace_s)
                child.signal_group(signal.SIGKILL)
                child.proc.wait(2.0)
            self.up.labels(s).set(0)
        if self._metrics_server is not None:
            self._metrics_server.close()
            self._metrics_server = None

    def cleanup(self, keep_logs: bool = False) -> None:
        """Remove the temp dir (sockets, status, logs unless ``keep_logs``).

        Kept logs are passed through :func:`common.redact.redact` once more: besides the
        services' own (already redacted) lines they hold what C libraries such as FFmpeg
        wrote to stderr themselves, which may name a source."""
        if keep_logs:
            for p in self.run_dir.glob("*.sock"):
                p.unlink(missing_ok=True)
            for p in (self.run_dir / "logs").glob("*.log"):
                try:
                    text = p.read_text(errors="replace")
                    if "://" in text:
                        p.write_text(redact(text))
                except OSError as exc:
                    log.warning("could not redact the kept log %s: %s", p, exc)
        else:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    # -- summary ----------------------------------------------------------------------

    def summary(self, elapsed_s: float) -> dict:
        """See :func:`services.orchestrator.summary.build_summary`."""
        outputs, unreadable = summaries.written_outputs(self.opts.out_dir, self.started_at)
        return summaries.build_summary(
            self.status(), {s: c.last_metrics for s, c in self.children.items()},
            {s: c.total_restarts for s, c in self.children.items()}, elapsed_s,
            gave_up=self.watchdog.gave_up, refused=self.watchdog.refused,
            outputs=outputs, stalls=self.watchdog.stall_events, unreadable=unreadable,
            capture=self.capture_status(),
            people=summaries.people_counts(next(
                (Path(p) for p in outputs if Path(p).name == "people.jsonl"), None)))
