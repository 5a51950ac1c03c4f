"""Pipeline benchmark: the four-process stack vs the seed's serial loop, as JSON.

    python -m bench.pipeline --source ../shared/videos/walking-and-pause-720p-loop.mp4 \\
        [--baseline serial] [--realtime] [--model compact] [--threads classifier=2]

* Pipeline (default): ``agegender run``'s stack with capture ``realtime=false`` (as fast
  as the stack allows, backpressure, no drops). ``--realtime`` paces the file at its
  native frame rate instead: the latency a camera at that rate would see (the budget:
  end-to-end p95 < 0.5 s on a 2-core CPU machine).
  Reports fps, end-to-end and per-stage latency p50/p95/p99 from every frame's header
  timestamps (``t_capture`` -> ``t_detector`` -> ``t_classifier`` -> sink receive), drops
  by stage and reason, CPU seconds and peak RSS per service (psutil, sampled every
  0.2 s; a restarted service's processes are summed).
* ``--baseline serial``: the seed's way in one process on the same input: read a frame,
  detect, classify each face one at a time; reports fps, per-frame latency percentiles,
  CPU seconds and peak RSS; then the ratio pipeline fps / serial fps.

Numbers, never pass/fail. Latency in seconds, memory in MiB.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import click
import numpy as np
import psutil


def pct(values) -> dict:
    """p50/p95/p99/mean/max of ``values`` (seconds), rounded to 0.1 ms."""
    if len(values) == 0:
        return {}
    a = np.asarray(values, np.float64)
    out = {f"p{q}": float(np.percentile(a, q)) for q in (50, 95, 99)}
    out.update(mean=float(a.mean()), max=float(a.max()))
    return {k: round(v, 4) for k, v in out.items()}


class ProcessSampler:
    """Samples CPU seconds and peak RSS of each service's processes every ``period_s``."""

    def __init__(self, period_s: float = 0.2):
        self.period_s = period_s
        self.cpu: dict[str, dict[int, float]] = {}
        self.peak_rss: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stack = None

    def start(self, stack) -> None:
        """Begin sampling ``stack.children`` (called by ``run_stack``'s ``on_started``)."""
        self._stack = stack
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        for name, child in self._stack.children.items():
            if child.pid is None:
                continue
            try:
                proc = psutil.Process(child.pid)
                procs = [proc] + proc.children(recursive=True)
                rss = 0
                for p in procs:
                    t = p.cpu_times()
                    self.cpu.setdefault(name, {})[p.pid] = t.user + t.system
                    rss += p.memory_info().rss
                self.peak_rss[name] = max(self.peak_rss.get(name, 0), rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.period_s)

    def stop(self) -> dict:
        """Stop sampling; ``{service: {"cpu_s", "peak_rss_mib"}}``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        return {name: {"cpu_s": round(sum(self.cpu.get(name, {}).values()), 2),
                       "peak_rss_mib": round(self.peak_rss.get(name, 0) / 2**20, 1)}
                for name in sorted(set(self.cpu) | set(self.peak_rss))}


def stage_latencies(trace_path: Path) -> tuple[dict, float, int, float]:
    """Per-stage latency percentiles from the sink's trace file.

    Returns:
        ``(latency dict, fps, frames, faces per frame)``; stages: ``capture_to_detector``
        (capture stamp -> detector done), ``detector_to_classifier`` (-> classifier done),
        ``classifier_to_sink`` (-> sink receive), ``e2e`` (capture -> sink receive).
    """
    rows = [json.loads(line) for line in trace_path.read_text().splitlines() if line.strip()]
    if not rows:
        return {}, 0.0, 0, 0.0

    def diff(a, b):
        """Seconds between header timestamps ``a`` and ``b`` for each frame that has both."""
        return [(r[b] - r[a]) / 1e9 for r in rows if a in r and b in r]

    lat = {"e2e": pct(diff("t_capture_ns", "t_sink_ns")),
           "capture_to_detector": pct(diff("t_capture_ns", "t_detector_ns")),
           "detector_to_classifier": pct(diff("t_detector_ns", "t_classifier_ns")),
           "classifier_to_sink": pct(diff("t_classifier_ns", "t_sink_ns"))}
    sink_t = sorted(r["t_sink_ns"] for r in rows)
    span = (sink_t[-1] - sink_t[0]) / 1e9
    fps = (len(rows) - 1) / span if span > 0 else 0.0
    return lat, round(fps, 2), len(rows), round(sum(r["faces"] for r in rows) / len(rows), 3)


def run_pipeline(source: str, realtime: bool, model: str, threads: dict, out: Path | None,
                 max_batch: int | None, hwm: int = 1) -> dict:
    """Run the stack once on ``source``; the pipeline half of the report."""
    from services.orchestrator.options import StackOptions
    from services.orchestrator.runner import run_stack
    tmp = Path(tempfile.mkdtemp(prefix="agegender-bench-"))
    trace = tmp / "trace.jsonl"
    extra = {"classifier": [f"--max-batch={max_batch}"]} if max_batch else {}
    opts = StackOptions(sources=[source], out_dir=out, realtime=realtime, model=model,
                        threads=threads, http_base_port=0, trace_path=trace,
                        service_args=extra, log_level="WARNING", hwm=hwm)
    sampler = ProcessSampler()
    t0 = time.monotonic()
    code, summary = run_stack(opts, progress=sys.stderr.isatty(), on_started=sampler.start)
    wall = time.monotonic() - t0
    procs = sampler.stop()
    lat, fps, frames, fpf = stage_latencies(trace) if trace.exists() else ({}, 0.0, 0, 0.0)
    return {"mode": "pipeline (4 processes, ipc://)",
            "realtime": realtime, "exit_code": code, "frames": frames, "faces_per_frame": fpf,
            "fps": fps, "latency_s": lat, "drops": summary["drops"],
            "malformed": summary["malformed"], "restarts": summary["restarts"],
            "processes": procs,
            "cpu_s_total": round(sum(p["cpu_s"] for p in procs.values()), 2),
            "threads": threads, "hwm": hwm, "wall_s_incl_startup": round(wall, 1)}


def run_serial(source: str, model: str, threads: int, max_frames: int = 0) -> dict:
    """The seed's way in this process: read -> detect -> classify each face alone."""
    from common.process import set_thread_budget
    set_thread_budget(threads)
    import cv2

    from common.models import load_model
    from common.detectors import make_detector
    me = psutil.Process()
    detector = make_detector("ssd", threads=threads)
    clf = load_model(model, threads=threads)
    clf.warmup(1)
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        raise click.ClickException(f"cannot open {source}")
    lat, faces, peak = [], 0, me.memory_info().rss
    cpu0 = sum(me.cpu_times()[:2])
    t_start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        ok, frame = cap.read()
        if not ok or (max_frames and len(lat) >= max_frames):
            break
        for det in detector.detect(frame):
            clf.predict([det.crop(frame, clf.crop_aspect)])  # one face at a time, as the seed did
            faces += 1
        lat.append(time.perf_counter() - t0)
        if len(lat) % 10 == 0:
            peak = max(peak, me.memory_info().rss)
    wall = time.perf_counter() - t_start
    cap.release()
    peak = max(peak, me.memory_info().rss)
    n = len(lat)
    return {"mode": "serial (one process, one face per model call)", "frames": n,
            "faces_per_frame": round(faces / n, 3) if n else 0.0,
            "fps": round(n / wall, 2) if wall else 0.0, "latency_s": {"per_frame": pct(lat)},
            "cpu_s": round(sum(me.cpu_times()[:2]) - cpu0, 2),
            "peak_rss_mib": round(peak / 2**20, 1), "threads": threads}


@click.command()
@click.option("--source", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Video file to benchmark on.")
@click.option("--baseline", type=click.Choice(["none", "serial"]), default="none",
              show_default=True, help="Also run the seed's serial loop and report the ratio.")
@click.option("--realtime", is_flag=True, help="Pace the file at its native frame rate "
              "(latency at source rate) instead of as fast as possible.")
@click.option("--model", default="compact", show_default=True, help="Age/gender model.")
@click.option("--threads", "threads", multiple=True, metavar="N|SERVICE=N",
              help="Thread budget per service (default 1 each).")
@click.option("--serial-threads", type=click.IntRange(1, 64), default=os.cpu_count() or 1,
              show_default=True, help="Threads of the serial baseline (the whole machine).")
@click.option("--max-batch", type=click.IntRange(1, 1024), default=None,
              help="Classifier max batch (default: its config).")
@click.option("--hwm", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="ZeroMQ high-water mark of the data sockets.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write annotated.mp4/events.jsonl (costs sink CPU).")
def main(source, baseline, realtime, model, threads, serial_threads, max_batch, hwm, out):
    """Benchmark the pipeline (and optionally the serial baseline); print JSON."""
    from services.orchestrator.options import parse_threads
    source = str(Path(source).resolve())
    report = {"source": source, "cpu_cores": os.cpu_count(),
              "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
              "pipeline": run_pipeline(source, realtime, model, parse_threads(threads), out,
                                       max_batch, hwm)}
    if baseline == "serial":
        report["serial"] = run_serial(source, model, serial_threads)
        s_fps = report["serial"]["fps"]
        report["fps_ratio_pipeline_over_serial"] = (
            round(report["pipeline"]["fps"] / s_fps, 2) if s_fps else None)
    e2e = report["pipeline"]["latency_s"].get("e2e", {})
    if realtime and e2e:
        report["budget"] = {"e2e_p95_s": e2e.get("p95"), "limit_s": 0.5,
                            "within": bool(e2e.get("p95") is not None and e2e["p95"] < 0.5)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
