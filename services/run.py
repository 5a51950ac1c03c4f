"""``agegender run``: the whole stack on one machine, four OS processes over ``ipc://``.

The orchestrator starts sink, classifier and detector, waits until each reports ready on
``/readyz``, then starts capture. A watchdog restarts a service that dies (at most
``max_restarts`` within ``restart_window_s``; beyond that it gives up, stops the stack and
exits non-zero), counts restarts in ``agegender_process_restarts_total{service}`` on its
own metrics port, shows progress (frames, fps, faces, p95 latency from the sink's status
file) and prints a summary at the end (frames, faces, fps, end-to-end latency
p50/p95/p99, drops by stage and reason, scraped from every service's ``/metrics``).

SIGINT/SIGTERM stop every child within 5 s: SIGTERM to each child's process group, then
SIGKILL after a grace period. Children also get SIGTERM from the kernel if the
orchestrator itself dies (``PR_SET_PDEATHSIG``), so no process is left behind.
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import http.client
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import click

from common.service import install_signal_handlers

log = logging.getLogger("agegender.run")

#: Start order: downstream binders first, capture last (after the others are ready).
SERVICES = ("sink", "classifier", "detector", "capture")
#: HTTP port offset of each service from ``--http-base-port`` (the orchestrator is +4).
PORT_OFFSET = {"capture": 0, "detector": 1, "classifier": 2, "sink": 3}
ROOT = Path(__file__).resolve().parents[1]

#: Exit codes of ``agegender run``.
EXIT_OK, EXIT_START_FAILED, EXIT_GAVE_UP = 0, 1, 3
#: Exit code of a service (and of ``agegender run``) that refused its configuration or
#: input: a source that cannot be opened, a model or detector that cannot be loaded.
#: Restarting cannot help, so the watchdog stops the stack instead.
EXIT_CONFIG = 2


@dataclasses.dataclass
class StackOptions:
    """What to run and how (see ``agegender run --help`` for each option).

    Attributes:
        sources: capture sources (``[NAME=]URI``); empty = the built-in demo.
        out_dir: folder for annotated.mp4 / events.jsonl; ``None`` = no files.
        realtime: pace files at their native frame rate.
        loop: repeat files.
        model: classifier model name or path.
        detector_backend: ``ssd`` or ``haar``.
        display: sink opens a desktop window.
        threads: thread budget per service.
        http_base_port: first HTTP port (capture; +1 detector, +2 classifier, +3 sink,
            +4 orchestrator metrics); 0 picks free ports.
        max_restarts / restart_window_s: watchdog cap (restarts per window, seconds).
        ready_timeout_s: how long to wait for sink, classifier, detector to be ready.
        stop_grace_s: SIGTERM -> SIGKILL grace when stopping (seconds).
        service_args: extra command-line arguments per service.
        trace_path: sink per-stage timestamp trace (benchmarks).
        metrics_only: sink renders nothing and writes no files.
        log_level: services' log level.
        hwm: ZeroMQ high-water mark of every data socket (messages); 1 keeps the frames
            in flight, and so the latency, smallest.
        drain_timeout_s: after capture ended, stop when no frame reached the sink for
            this long although not every end of stream arrived (seconds).
    """

    sources: list[str] = dataclasses.field(default_factory=list)
    out_dir: Path | None = None
    realtime: bool = True
    loop: bool = False
    model: str = "compact"
    detector_backend: str = "ssd"
    display: bool = False
    threads: dict[str, int] = dataclasses.field(
        default_factory=lambda: {s: 1 for s in SERVICES})
    http_base_port: int = 9101
    max_restarts: int = 3
    restart_window_s: float = 60.0
    ready_timeout_s: float = 300.0
    stop_grace_s: float = 3.0
    service_args: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    trace_path: Path | None = None
    metrics_only: bool = False
    log_level: str = "INFO"
    hwm: int = 1
    drain_timeout_s: float = 30.0


def free_port() -> int:
    """A TCP port free on this machine right now."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    """True when nothing listens on TCP ``port`` (checked by binding it)."""
    import socket
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def source_path(spec: str) -> str:
    """The URI of a source spec ``[NAME=]URI``."""
    return spec.split("=", 1)[1] if "=" in spec and not os.path.exists(spec) else spec


def probe_video(path: str) -> tuple[float, int]:
    """``(fps, frame_count)`` of a video file (0 each when unknown)."""
    import cv2
    cap = cv2.VideoCapture(path)
    try:
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        cap.release()
    return (fps if 0 < fps <= 240 else 0.0), max(n, 0)


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM this child when the orchestrator dies (Linux prctl).

    The kernel sends it when the *thread* that spawned the child ends; :func:`run_stack`
    starts and restarts every child from the one thread that later shuts them down.
    """
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: children are still stopped by the orchestrator's finally


class Child:
    """One service process and its restart history."""

    def __init__(self, name: str, args: list[str], http_port: int, log_path: Path,
                 restart_args: list[str] | None = None):
        self.name = name
        self.args = args
        self.restart_args = restart_args or []
        self.http_port = http_port
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.restarts: collections.deque[float] = collections.deque()
        self.total_restarts = 0
        self.finished = False  # exited 0 on purpose (capture at end of files, sink done)
        self.last_metrics = ""
        self.metrics_file = log_path.with_suffix(".prom")  # written by the service at exit

    def start(self) -> None:
        """Spawn the process in its own session, output appended to its log file."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
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
        except urllib.error.HTTPError as exc:
            return exc.code, ""
        except (OSError, ValueError, http.client.HTTPException):
            return 0, ""

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
        if code == 200:
            self.last_metrics = body
        return self.last_metrics

    def log_tail(self, n: int = 15) -> str:
        """Last ``n`` lines of the service's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
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


class Stack:
    """The four services as processes, wired over ``ipc://`` endpoints in a temp dir.

    Args:
        opts: what to run.
        stop: event that ends :meth:`run` (SIGINT/SIGTERM set it).
    """

    def __init__(self, opts: StackOptions, stop: threading.Event | None = None):
        self.opts = opts
        self.stop = stop or threading.Event()
        self.run_dir = Path(tempfile.mkdtemp(prefix="agegender-run-"))
        (self.run_dir / "logs").mkdir()
        self.status_path = self.run_dir / "sink_status.json"
        base = opts.http_base_port
        if base and not all(port_free(base + i) for i in range(5)):
            log.warning("HTTP ports %d-%d are not all free (another stack running?); using "
                        "free ports instead (see the service logs for them)", base, base + 4)
            base = 0
        self.http_base_port = base
        ports = {s: (base + PORT_OFFSET[s] if base else free_port()) for s in SERVICES}
        self.metrics_port = base + 4 if base else free_port()
        ep = {k: f"ipc://{self.run_dir}/{k}.sock" for k in ("frames", "faces", "results")}
        # Live sources never end; files, folders and the demo end with an end of stream.
        self.expected_streams = 0 if opts.loop else max(1, len(opts.sources))
        self.video_fps, self.expected_frames = 0.0, 0
        if len(opts.sources) == 1 and os.path.isfile(source_path(opts.sources[0])):
            self.video_fps, n = probe_video(source_path(opts.sources[0]))
            self.expected_frames = 0 if opts.loop else n
        common = ["--log-level", opts.log_level, "--http-host", "127.0.0.1",
                  "--hwm", str(opts.hwm)]
        args = {
            "capture": ["--output", f"bind:{ep['frames']}",
                        "--realtime", str(opts.realtime).lower(),
                        "--loop", str(opts.loop).lower()]
            + [a for s in opts.sources for a in ("--sources", s)],
            "detector": ["--input", f"connect:{ep['frames']}",
                         "--output", f"connect:{ep['faces']}",
                         "--backend", opts.detector_backend],
            "classifier": ["--input", f"bind:{ep['faces']}",
                           "--output", f"connect:{ep['results']}", "--model", opts.model],
            "sink": ["--input", f"bind:{ep['results']}",
                     "--expected-streams", str(self.expected_streams),
                     "--status-path", str(self.status_path),
                     "--display", str(opts.display).lower(),
                     "--metrics-only", str(opts.metrics_only).lower()],
        }
        if opts.out_dir is not None:
            args["sink"] += ["--out-dir", str(Path(opts.out_dir).resolve())]
        if self.video_fps:
            args["sink"] += ["--video-fps", f"{self.video_fps:.4f}"]
        if opts.trace_path is not None:
            args["sink"] += ["--trace-path", str(Path(opts.trace_path).resolve())]
        self.children = {
            s: Child(s, common + ["--http-port", str(ports[s]), "--threads",
                                  str(opts.threads.get(s, 1))]
                     + args[s] + list(opts.service_args.get(s, [])),
                     ports[s], self.run_dir / "logs" / f"{s}.log",
                     # a restarted sink appends instead of replacing what it wrote
                     ["--append", "true"] if s == "sink" else None)
            for s in SERVICES}
        log.info("live view http://localhost:%d/ ; /metrics on ports capture %d, detector %d, "
                 "classifier %d, sink %d, orchestrator (restarts) %d", ports["sink"],
                 ports["capture"], ports["detector"], ports["classifier"], ports["sink"],
                 self.metrics_port)
        self.gave_up: str | None = None
        self.refused: dict | None = None  # {"service", "error"} after an EXIT_CONFIG
        self._metrics_server = None
        self._init_metrics()

    def _init_metrics(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
        self.registry = CollectorRegistry()
        self.restarts_total = Counter("agegender_process_restarts_total",
                                      "Service processes restarted by the watchdog.",
                                      ["service"], registry=self.registry)
        self.up = Gauge("agegender_process_up", "1 while the service process runs.",
                        ["service"], registry=self.registry)
        for s in SERVICES:
            self.restarts_total.labels(s)
            self.up.labels(s).set(0)
        try:
            self._metrics_server = start_http_server(self.metrics_port, "127.0.0.1",
                                                     registry=self.registry)
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
            if not self.watchdog():
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

    def watchdog(self) -> bool:
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
                errors = [ln for ln in child.log_tail(40).splitlines()
                          if " ERROR " in ln or ln.startswith("Error:")]  # log / click
                error = re.sub(r"^.*? ERROR \S+ \S+: ", "", (errors or [child.log_tail(1)])[-1])
                self.refused = {"service": s, "error": error}
                log.error("%s refused its configuration or input (exit code %d; restarting "
                          "cannot help): stopping the stack. Last log lines (%s):\n%s", s, rc,
                          child.log_path, child.log_tail())
                return False
            now = time.monotonic()
            while child.restarts and now - child.restarts[0] > self.opts.restart_window_s:
                child.restarts.popleft()
            how = f"signal {-rc}" if rc < 0 else f"exit code {rc}"
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
                        len(child.restarts), self.opts.max_restarts,
                        self.opts.restart_window_s)
            child.start()
            self.up.labels(s).set(1)
        return True

    def failure_code(self) -> int:
        """Exit code for what made the watchdog stop the stack: :data:`EXIT_CONFIG` (a
        service refused its configuration), :data:`EXIT_GAVE_UP` (crashed too often), or
        0 when neither happened."""
        return EXIT_CONFIG if self.refused else EXIT_GAVE_UP if self.gave_up else EXIT_OK

    def status(self) -> dict:
        """The sink's newest status (frames, faces, fps, latency); ``{}`` before any."""
        try:
            return json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return {}

    def scrape_all(self) -> None:
        """Fetch the metrics of every started service (kept per child)."""
        for child in self.children.values():
            if child.proc is not None:
                child.scrape()

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
            server, thread = self._metrics_server
            server.shutdown()
            server.server_close()
            self._metrics_server = None

    def cleanup(self, keep_logs: bool = False) -> None:
        """Remove the temp dir (sockets, status, logs unless ``keep_logs``)."""
        if keep_logs:
            for p in self.run_dir.glob("*.sock"):
                p.unlink(missing_ok=True)
        else:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    # -- summary ----------------------------------------------------------------------

    def summary(self, elapsed_s: float) -> dict:
        """Frames, faces, fps, e2e latency percentiles (s), drops and malformed messages
        by stage and reason, restarts by service."""
        st = self.status()
        drops: dict[str, float] = {}
        malformed: dict[str, float] = {}
        for child in self.children.values():
            for name, key, value in parse_metrics(child.last_metrics):
                if value and name == "agegender_frames_dropped_total":
                    drops[key] = drops.get(key, 0) + value
                elif value and name == "agegender_messages_malformed_total":
                    malformed[key] = malformed.get(key, 0) + value
        frames = st.get("frames", 0)
        return {
            "frames": frames, "faces": st.get("faces", 0),
            "faces_per_frame": (st.get("faces", 0) / frames) if frames else 0.0,
            "fps": st.get("fps", 0.0), "elapsed_s": elapsed_s,
            "latency_s": st.get("latency_s", {}), "streams": st.get("streams", {}),
            "drops": drops, "malformed": malformed,
            "restarts": {s: c.total_restarts for s, c in self.children.items()},
            "gave_up": self.gave_up, "refused": self.refused,
            "outputs": self._outputs(),
        }

    def _outputs(self) -> list[str]:
        """The annotated videos and events file the sink actually wrote (absolute paths)."""
        if self.opts.out_dir is None:
            return []
        out = Path(self.opts.out_dir).resolve()
        return [str(p) for p in [*sorted(out.glob("annotated*.mp4")), out / "events.jsonl"]
                if p.is_file()]


def parse_metrics(text: str):
    """Yield ``(metric_name, "stage/reason", value)`` for labelled counter samples in a
    Prometheus text exposition (parsed with ``prometheus_client.parser``)."""
    if not text:
        return
    from prometheus_client.parser import text_string_to_metric_families
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            if sample.name.endswith("_total") and "reason" in sample.labels:
                key = f"{sample.labels.get('stage', '?')}/{sample.labels['reason']}"
                yield sample.name, key, sample.value


def format_summary(s: dict) -> str:
    """Human-readable summary lines."""
    lat = s.get("latency_s") or {}

    def ms(key):
        """Latency percentile ``key`` in milliseconds, or '-' when unknown."""
        v = lat.get(key)
        return "-" if v is None else f"{v * 1000:.0f} ms"

    def counts(d):
        """``{label: count}`` as 'label n, ...' or 'none'."""
        return ", ".join(f"{k} {v:g}" for k, v in sorted(d.items())) or "none"

    lines = [
        "agegender run summary",
        f"  frames       {s['frames']}  ({counts(s.get('streams', {}))})",
        f"  faces        {s['faces']}  ({s['faces_per_frame']:.2f} per frame)",
        f"  fps          {s['fps']:.1f}  (over {s['elapsed_s']:.1f} s wall clock)",
        f"  e2e latency  p50 {ms('p50')}  p95 {ms('p95')}  p99 {ms('p99')}",
        f"  drops        {counts(s['drops'])}",
        f"  malformed    {counts(s['malformed'])}",
        f"  restarts     {counts({k: v for k, v in s['restarts'].items() if v})}",
    ]
    if s.get("gave_up"):
        lines.append(f"  GAVE UP on   {s['gave_up']} (crashed too often)")
    if s["frames"] == 0 and not s.get("refused"):
        lines.append("  WARNING      no frame reached the sink (see drops above)")
    if s.get("refused"):
        lines.append(f"  FAILED       {s['refused']['service']}: {s['refused']['error']}")
    if s.get("outputs"):
        lines.append(f"  outputs      {', '.join(s['outputs'])}")
    return "\n".join(lines)


def run_stack(opts: StackOptions, stop: threading.Event | None = None,
              progress: bool = True, on_started=None) -> tuple[int, dict]:
    """Run the stack until the sink is done, a service is given up on, or ``stop``.

    Args:
        opts: what to run.
        stop: stop event (SIGINT/SIGTERM handlers set it in the CLI).
        progress: show a tqdm progress bar on stderr.
        on_started: called with the :class:`Stack` once every child is started
            (benchmarks sample CPU and memory of ``stack.children``).

    Returns:
        ``(exit code, summary dict)``.
    """
    stack = Stack(opts, stop)
    t0 = time.monotonic()
    code = EXIT_OK
    bar = None
    try:
        if not stack.start():
            code = stack.failure_code() or (
                EXIT_OK if stack.stop.is_set() else EXIT_START_FAILED)
        else:
            if on_started is not None:
                on_started(stack)
            if progress:
                from tqdm import tqdm
                bar = tqdm(total=stack.expected_frames or None, unit="frame",
                           desc="agegender", dynamic_ncols=True, file=sys.stderr)
            next_scrape = 0.0
            last_frames, last_change = -1, time.monotonic()
            while not stack.stop.is_set():
                if not stack.watchdog():
                    code = stack.failure_code()
                    break
                now = time.monotonic()
                if now >= next_scrape:
                    stack.scrape_all()
                    next_scrape = now + 2.0
                if bar is not None:
                    st = stack.status()
                    lat = (st.get("latency_s") or {}).get("p95")
                    bar.n = st.get("frames", 0)
                    bar.set_postfix(fps=f"{st.get('fps', 0.0):.1f}", faces=st.get("faces", 0),
                                    p95=("-" if lat is None else f"{lat * 1000:.0f}ms"),
                                    refresh=False)
                    bar.refresh()
                if stack.finished():
                    break
                # Safety net: capture ended but an end of stream never reached the sink
                # (e.g. lost with a killed stage) and nothing moves any more.
                frames = stack.status().get("frames", 0)
                if frames != last_frames:
                    last_frames, last_change = frames, now
                elif (stack.children["capture"].finished
                      and now - last_change > opts.drain_timeout_s):
                    log.warning("capture ended %.0f s ago and no frame reached the sink since; "
                                "stopping", opts.drain_timeout_s)
                    break
                stack.stop.wait(0.2)
    finally:
        if bar is not None:
            bar.close()
        stack.shutdown()
        stack.scrape_all()  # every process has exited: their final metrics files
        summary = stack.summary(time.monotonic() - t0)
        stack.cleanup(keep_logs=code != EXIT_OK)
        if code != EXIT_OK:
            log.error("service logs kept in %s", stack.run_dir / "logs")
    return code, summary


def _parse_threads(values: tuple[str, ...]) -> dict[str, int]:
    out = {s: 1 for s in SERVICES}
    for v in values:
        name, sep, n = v.partition("=")
        try:
            if not sep:
                out = {s: int(v) for s in SERVICES}
            elif name in SERVICES:
                out[name] = int(n)
            else:
                raise ValueError
        except ValueError:
            raise click.BadParameter(f"{v!r}: use N or SERVICE=N with SERVICE one of "
                                     f"{', '.join(SERVICES)}", param_hint="--threads")
        if min(out.values()) < 1:
            raise click.BadParameter("thread budgets must be >= 1", param_hint="--threads")
    return out


def _parse_service_args(values: tuple[str, ...]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for v in values:
        name, sep, arg = v.partition("=")
        if not sep or name not in SERVICES or not arg:
            raise click.BadParameter(f"{v!r}: use SERVICE=--option=value",
                                     param_hint="--service-arg")
        out.setdefault(name, []).append(arg)
    return out


@click.command(name="run", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--source", "sources", multiple=True, metavar="[NAME=]URI",
              help="Video file, image folder, rtsp://..., http(s)://... MJPEG, camera index "
                   "(0) or /dev/videoN; repeat for several streams. None: the built-in demo.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write DIR/annotated.mp4 and DIR/events.jsonl.")
@click.option("--realtime", type=click.BOOL, default=True, is_flag=False, flag_value="true",
              show_default=True, help="Pace files at their native frame rate; "
              "'--realtime false' (or --no-realtime) runs as fast as the stack allows.")
@click.option("--no-realtime", "no_realtime", is_flag=True, help="Same as --realtime false.")
@click.option("--loop", is_flag=True, help="Repeat files (run until Ctrl-C).")
@click.option("--model", default="compact", show_default=True,
              help="Age/gender model under models/ or a model directory.")
@click.option("--detector-backend", type=click.Choice(["ssd", "haar"]), default="ssd",
              show_default=True, help="Face detector.")
@click.option("--display", is_flag=True, help="Show a desktop window (needs a display).")
@click.option("--threads", "threads", multiple=True, metavar="N|SERVICE=N",
              help="Thread budget per service process (default 1 each), e.g. "
                   "--threads classifier=2.")
@click.option("--http-base-port", type=click.IntRange(0, 65530), default=9101,
              show_default=True, help="capture's HTTP port; detector +1, classifier +2, "
              "sink +3 (live view at /), orchestrator metrics +4. 0: free ports.")
@click.option("--hwm", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="ZeroMQ high-water mark (messages) of the data sockets; small keeps "
              "latency low, larger smooths bursts.")
@click.option("--max-restarts", type=click.IntRange(0, 100), default=3, show_default=True,
              help="Restarts of one service allowed within 60 s before giving up.")
@click.option("--service-arg", "service_args", multiple=True, metavar="SERVICE=ARG",
              help="Extra argument for one service, e.g. detector=--confidence=0.6.")
@click.option("--summary-json", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the summary as JSON here.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Progress bar on stderr.")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
              default="INFO", show_default=True, help="Services' log level (logs go to "
              "files; their folder is printed when something fails).")
def command(sources, out_dir, realtime, no_realtime, loop, model, detector_backend, display,
            threads, http_base_port, hwm, max_restarts, service_args, summary_json, progress,
            log_level):
    """Run the whole stack (capture -> detector -> classifier -> sink, four processes over
    ipc://) with progress and a summary. Ctrl-C stops everything within 5 s."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s run: %(message)s")
    from pydantic import ValidationError

    from services.capture.config import CaptureConfig
    try:  # the capture service's own rules, checked before four processes start
        CaptureConfig(sources=list(sources))
    except ValidationError as exc:
        raise click.BadParameter(exc.errors()[0]["msg"], param_hint="--source") from None
    if not sources:
        click.echo("No --source given: playing the built-in demo (a scene synthesized at "
                   "run time from scikit-image's public-domain astronaut photo).", err=True)
    if display:
        from services.sink.render import display_available
        ok, why = display_available()
        if not ok:
            click.echo(f"warning: --display asked for a window but {why}; running without "
                       "one (the live view is in the browser, see the sink's port).", err=True)
    opts = StackOptions(sources=list(sources), out_dir=out_dir,
                        realtime=realtime and not no_realtime, loop=loop, model=model,
                        detector_backend=detector_backend, display=display,
                        threads=_parse_threads(threads), http_base_port=http_base_port,
                        max_restarts=max_restarts, hwm=hwm,
                        service_args=_parse_service_args(service_args), log_level=log_level)
    stop = threading.Event()
    install_signal_handlers(stop)
    code, summary = run_stack(opts, stop, progress=progress)
    click.echo(format_summary(summary))
    if summary_json is not None:
        summary_json.write_text(json.dumps(summary, indent=2))
    raise SystemExit(code)
