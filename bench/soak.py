"""Soak benchmark: run the whole stack on a looping clip and watch it age.

    python -m bench.soak --duration 30m --source ../shared/videos/walking-and-pause-720p-loop.mp4

Starts the four services with PIPELINE's orchestrator
(:func:`services.orchestrator.runner.run_stack`, ``--loop``, watchdog on) and every
``--interval`` prints one JSON line with, per service: RSS (MiB, psutil), CPU (% of one
core since the last sample), and, for the stack: frames and fps at the sink, end-to-end
latency p50/p95/p99 (seconds, from the sink's ``agegender_e2e_latency_seconds`` histogram
over the last interval), drops by ``stage/reason`` and malformed messages (cumulative
counters scraped from every service's ``/metrics``) and watchdog restarts per service. At
the end it prints one JSON summary: RSS start (first sample after ``--warmup``) / end /
max and the linear RSS trend (MiB per hour) per service, total drops, restarts, latency
percentiles over the whole run, frames, mean fps.

``--rtsp`` serves the clip over a real RTSP server on 127.0.0.1 and captures it as a live
camera (the lossy path: drops instead of backpressure). ``--faults`` injects, spread evenly
over the run after the warmup, one kill -9 and one SIGSTOP of every service
(:func:`bench.faults.inject`: time until the watchdog acted, until frames flowed again,
frames lost), writes events.jsonl to a temporary ``--out`` and counts repeated
``(stream, seq)`` pairs at the end. Numbers only; nothing passes or
fails here (see docs/failure-modes.md for what to look
at). Ctrl-C ends the run early and still prints the summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench.faults import SERVICES, inject, repeated_stream_seq
from common.detectors import BACKENDS, DEFAULT_BACKEND
from common.models.registry import DEFAULT_MODEL

DEFAULT_SOURCE = str(Path(__file__).resolve().parents[2] / "shared" / "videos"
                     / "walking-and-pause-720p-loop.mp4")


def parse_duration(text: str) -> float:
    """``"30m"``, ``"90s"``, ``"1h"``, ``"1h30m"`` or plain seconds -> seconds.

    Raises:
        argparse.ArgumentTypeError: unparseable text.
    """
    text = text.strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", text)
    if not parts or not any(parts.groups()):
        raise argparse.ArgumentTypeError(f"bad duration {text!r} (use e.g. 30m, 90s, 1h)")
    h, m, s = (float(g) if g else 0.0 for g in parts.groups())
    return h * 3600 + m * 60 + s


def parse_samples(text: str) -> list[tuple[str, dict, float]]:
    """Prometheus text exposition -> ``[(sample name, labels, value)]``."""
    out = []
    if not text:
        return out
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.append((s.name, s.labels, s.value))
    return out


def histogram_buckets(samples, name: str) -> dict[float, float]:
    """Cumulative bucket counts ``{upper bound (s): count}`` of histogram ``name``."""
    out: dict[float, float] = {}
    for n, labels, v in samples:
        if n == f"{name}_bucket":
            le = float(labels["le"])
            out[le] = out.get(le, 0.0) + v
    return out


def bucket_quantile(buckets: dict[float, float], q: float) -> float | None:
    """Quantile ``q`` (0..1) from cumulative buckets, linearly interpolated inside the
    bucket (as PromQL ``histogram_quantile``); ``None`` without observations. Values in
    the ``+Inf`` bucket are reported as the largest finite bound."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    prev_b, prev_c = 0.0, 0.0
    for b in bounds:
        c = buckets[b]
        if c >= rank:
            if b == float("inf"):
                return prev_b
            if c == prev_c:
                return b
            return prev_b + (b - prev_b) * (rank - prev_c) / (c - prev_c)
        prev_b, prev_c = b, c
    return prev_b


def counters_by_reason(samples, name: str) -> dict[str, float]:
    """Non-zero ``name`` counter samples as ``{"stage/reason": value}``."""
    out: dict[str, float] = {}
    for n, labels, v in samples:
        if n == name and v:
            key = f"{labels.get('stage', '?')}/{labels.get('reason', '?')}"
            out[key] = out.get(key, 0.0) + v
    return out


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(t seconds, value)`` points, per hour."""
    if len(points) < 3:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    if den == 0:
        return None
    return 3600.0 * sum((t - mt) * (v - mv) for t, v in points) / den


class Sampler:
    """Collects per-interval samples of a running :class:`services.orchestrator.stack.Stack`."""

    def __init__(self, stack, warmup_s: float):
        self.stack = stack
        self.t0 = time.monotonic()
        self.warmup_s = warmup_s
        self.rss: dict[str, list[tuple[float, float]]] = {}
        self.procs: dict[str, psutil.Process] = {}
        self.prev_e2e: dict[float, float] = {}
        self.first_e2e: dict[float, float] | None = None
        self.last_e2e: dict[float, float] = {}
        self.prev_frames = 0.0
        self.prev_t = self.t0
        self.last: dict = {}

    def _proc(self, name: str, child) -> psutil.Process | None:
        pid = child.pid
        if pid is None or not child.running():
            return None
        p = self.procs.get(name)
        if p is None or p.pid != pid:
            try:
                p = psutil.Process(pid)
                p.cpu_percent(None)  # prime
            except psutil.Error:
                return None
            self.procs[name] = p
        return p

    def sample(self) -> dict:
        """Take one sample (one JSON line's worth)."""
        now = time.monotonic()
        t = now - self.t0
        services = {}
        drops: dict[str, float] = {}
        malformed: dict[str, float] = {}
        sink_samples = []
        for name, child in self.stack.children.items():
            p = self._proc(name, child)
            info = {"pid": child.pid, "up": p is not None,
                    "restarts": child.total_restarts}
            if p is not None:
                try:
                    info["rss_mib"] = round(p.memory_info().rss / 2 ** 20, 1)
                    info["cpu_pct"] = round(p.cpu_percent(None), 1)
                    if t >= self.warmup_s:
                        self.rss.setdefault(name, []).append((t, info["rss_mib"]))
                except psutil.Error:
                    info["up"] = False
            samples = parse_samples(child.scrape() if child.running() else child.last_metrics)
            for k, v in counters_by_reason(samples, "agegender_frames_dropped_total").items():
                drops[k] = drops.get(k, 0) + v
            for k, v in counters_by_reason(samples,
                                           "agegender_messages_malformed_total").items():
                malformed[k] = malformed.get(k, 0) + v
            if name == "sink":
                sink_samples = samples
            services[name] = info
        e2e = histogram_buckets(sink_samples, "agegender_e2e_latency_seconds")
        frames = sum(v for n, _, v in sink_samples if n == "agegender_sink_frames_total")
        if e2e and self.first_e2e is None and t >= self.warmup_s:
            self.first_e2e = e2e
        # a restarted sink starts its counters at zero again
        delta = {b: e2e.get(b, 0) - self.prev_e2e.get(b, 0) for b in e2e} \
            if all(e2e.get(b, 0) >= v for b, v in self.prev_e2e.items()) else e2e
        dframes = frames - self.prev_frames if frames >= self.prev_frames else frames
        fps = dframes / max(now - self.prev_t, 1e-9)
        self.prev_e2e, self.prev_frames, self.prev_t = e2e, frames, now
        if e2e:
            self.last_e2e = e2e
        line = {
            "t_s": round(t, 1),
            "services": services,
            "sink_frames": int(frames), "fps": round(fps, 2),
            "e2e_latency_s": {f"p{int(q * 100)}": _round(bucket_quantile(delta, q))
                              for q in (0.5, 0.95, 0.99)},
            "drops": drops, "malformed": malformed,
            "restarts": {n: c.total_restarts for n, c in self.stack.children.items()},
        }
        self.last = line
        return line

    def summary(self, elapsed_s: float, code: int | None, run_summary: dict | None) -> dict:
        """Whole-run numbers (see the module docstring)."""
        rss = {}
        for name, pts in self.rss.items():
            vals = [v for _, v in pts]
            rss[name] = {"start_mib": vals[0], "end_mib": vals[-1], "max_mib": max(vals),
                         "min_mib": min(vals),
                         "trend_mib_per_hour": _round(slope_per_hour(pts), 2),
                         "samples": len(vals)}
        total = self.last_e2e
        after_warmup = ({b: total.get(b, 0) - self.first_e2e.get(b, 0) for b in total}
                        if self.first_e2e and all(total.get(b, 0) >= v
                                                  for b, v in self.first_e2e.items())
                        else total)
        return {
            "summary": True, "elapsed_s": round(elapsed_s, 1), "exit_code": code,
            "rss_mib": rss,
            "sink_frames": self.last.get("sink_frames", 0),
            "mean_fps": round(self.last.get("sink_frames", 0) / max(elapsed_s, 1e-9), 2),
            "e2e_latency_s": {f"p{int(q * 100)}": _round(bucket_quantile(total, q))
                              for q in (0.5, 0.95, 0.99)},
            "e2e_latency_after_warmup_s": {f"p{int(q * 100)}":
                                           _round(bucket_quantile(after_warmup, q))
                                           for q in (0.5, 0.95, 0.99)},
            "drops": self.last.get("drops", {}), "malformed": self.last.get("malformed", {}),
            "restarts": self.last.get("restarts", {}),
            "orchestrator": run_summary,
        }


def start_rtsp(clip: str, timeout_s: float = 30.0) -> tuple[subprocess.Popen, str]:
    """Serve ``clip`` in a loop at ``rtsp://127.0.0.1:PORT/stream`` (the demo camera's
    deploy/rtsp/rtsp_demo_server.py under the system Python with PyGObject); its output
    goes to a temp log file.

    Raises:
        RuntimeError: the server did not answer within ``timeout_s`` seconds.
    """
    import tempfile

    from tests.conftest import free_port
    from tests.rtsp_server import rtsp_answers, serve_command
    port = free_port()
    log_file = tempfile.NamedTemporaryFile(prefix="soak-rtsp-", suffix=".log", delete=False)
    proc = subprocess.Popen(serve_command(clip, port), stdout=log_file,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"RTSP server exited with {proc.returncode}; see {log_file.name}")
        if rtsp_answers("127.0.0.1", port, "/stream"):
            return proc, f"rtsp://127.0.0.1:{port}/stream"
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"RTSP server did not answer within {timeout_s} s")


def fault_schedule(t_first: float, t_end: float, enabled: bool
                   ) -> list[tuple[float, tuple[str, str]]]:
    """When to inject which fault: one kill and one stop of every service, evenly spaced
    from ``t_first`` to two minutes before ``t_end`` (monotonic seconds); ``[]`` when
    not ``enabled``."""
    if not enabled:
        return []
    faults = [(s, how) for s in SERVICES for how in ("kill", "stop")]
    span = max(0.0, (t_end - 120.0) - t_first)
    step = span / max(len(faults) - 1, 1)
    return [(t_first + i * step, f) for i, f in enumerate(faults)]


def _round(x, nd=4):
    return None if x is None else round(x, nd)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the stack's exit code (0 = ran to the end)."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=parse_duration, default=parse_duration("30m"),
                   help="how long to run, e.g. 30m, 90s, 1h (default 30m)")
    p.add_argument("--source", default=DEFAULT_SOURCE, help="clip (looped) or live URI")
    p.add_argument("--interval", type=parse_duration, default=30.0,
                   help="seconds between JSON lines (default 30)")
    p.add_argument("--warmup", type=parse_duration, default=60.0,
                   help="seconds before RSS 'start' is taken (model loading, pools)")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--detector-backend", default=DEFAULT_BACKEND, choices=sorted(BACKENDS))
    p.add_argument("--threads", type=int, default=1, help="thread budget per service")
    p.add_argument("--realtime", default="true", choices=["true", "false"])
    p.add_argument("--max-restarts", type=int, default=3)
    p.add_argument("--out-json", type=Path, help="also write the summary here")
    p.add_argument("--faults", action="store_true",
                   help="kill -9 and SIGSTOP every service once, spread over the run")
    p.add_argument("--stall-timeout-s", type=float, default=8.0)
    p.add_argument("--rtsp", action="store_true",
                   help="serve --source over a real RTSP server on 127.0.0.1 (GStreamer, "
                        "deploy/rtsp/rtsp_demo_server.py, looping) and capture it as a live camera: "
                        "lossy path, stale/superseded drops, reconnects")
    args = p.parse_args(argv)

    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from services.orchestrator.options import StackOptions
    from services.orchestrator.runner import run_stack

    rtsp = None
    source = args.source
    if args.rtsp:
        rtsp = start_rtsp(args.source)
        source = f"cam={rtsp[1]}"
    out_dir = Path(tempfile.mkdtemp(prefix="agegender-soak-")) if args.faults else None
    opts = StackOptions(sources=[source], loop=not args.rtsp, realtime=args.realtime == "true",
                        model=args.model, detector_backend=args.detector_backend,
                        threads={s: args.threads for s in SERVICES}, out_dir=out_dir,
                        stall_timeout_s=args.stall_timeout_s,
                        http_base_port=0, log_level="WARNING",
                        # each fault costs one restart: let them all through
                        max_restarts=max(args.max_restarts, 100 if args.faults else 0))
    stop = threading.Event()
    started = threading.Event()
    holder: dict = {}

    def on_started(stack):
        """Keep a handle on the started stack."""
        holder["stack"] = stack
        started.set()

    def target():
        """Run the stack in this thread; keep its exit code and summary."""
        try:
            holder["code"], holder["summary"] = run_stack(opts, stop, progress=False,
                                                          on_started=on_started)
        except Exception as exc:  # reported in the summary line, never swallowed
            holder["error"] = f"{type(exc).__name__}: {exc}"
            logging.exception("run_stack failed")
        finally:
            started.set()

    signal.signal(signal.SIGINT, lambda *a: stop.set())
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    t_start = time.monotonic()
    runner = threading.Thread(target=target, name="stack", daemon=True)
    runner.start()
    started.wait()
    sampler = Sampler(holder["stack"], args.warmup) if "stack" in holder else None
    end = time.monotonic() + args.duration
    schedule = fault_schedule(t_start + args.warmup, end, args.faults)
    faults = []
    while sampler is not None and not stop.is_set() and runner.is_alive():
        wake = min([end] + [t for t, _ in schedule[:1]])
        stop.wait(min(args.interval, max(0.0, wake - time.monotonic())))
        if not runner.is_alive():
            break
        if schedule and time.monotonic() >= schedule[0][0]:
            service, how = schedule.pop(0)[1]
            line = inject(holder["stack"], service, how, recover_frames=10, timeout_s=120.0)
            line["t_s"] = round(time.monotonic() - t_start, 1)
            print(json.dumps(line), flush=True)
            faults.append(line)
            continue
        print(json.dumps(sampler.sample()), flush=True)
        if time.monotonic() >= end:
            break
    final = sampler.sample() if sampler is not None and runner.is_alive() else None
    if final is not None:
        print(json.dumps(final), flush=True)
    stop.set()
    runner.join(30)
    if rtsp is not None:
        rtsp[0].terminate()
        try:
            rtsp[0].wait(10)
        except subprocess.TimeoutExpired:
            rtsp[0].kill()
    elapsed = time.monotonic() - t_start
    if sampler is None:
        out = {"summary": True, "error": holder.get("error", "stack did not start"),
               "exit_code": holder.get("code"), "orchestrator": holder.get("summary")}
    else:
        out = sampler.summary(elapsed, holder.get("code"), holder.get("summary"))
        if args.faults:
            lines, repeated = repeated_stream_seq(out_dir / "events.jsonl")
            out["faults"] = faults
            out["events_lines"], out["repeated_stream_seq"] = lines, repeated
            out["out_dir"] = str(out_dir)
        if "error" in holder:
            out["error"] = holder["error"]
    print(json.dumps(out), flush=True)
    if args.out_json:
        args.out_json.write_text(json.dumps(out, indent=2))
    return int(holder.get("code") or 0)


if __name__ == "__main__":
    sys.exit(main())
