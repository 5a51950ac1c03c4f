"""Pipeline benchmark: the four-process stack vs the seed's serial loop, as JSON.

    python -m bench.pipeline --source ../shared/videos/walking-and-pause-720p-loop.mp4 \\
        [--baseline serial] [--realtime] [--model compact-wild] [--threads classifier=2]
    python -m bench.pipeline --source CLIP --streams 4 --realtime    # 4 cameras
    python -m bench.pipeline --source a=CLIP1 --source b=CLIP2 --realtime

* Pipeline (default): ``agegender run``'s stack with capture ``realtime=false`` (as fast
  as the stack allows, backpressure, no drops). ``--realtime`` paces the file at its
  native frame rate instead: the latency a camera at that rate would see (the budget:
  end-to-end p95 < 0.5 s on a 2-core CPU machine).
  Reports fps, end-to-end and per-stage latency p50/p95/p99 from every frame's header
  timestamps (``t_capture`` -> ``t_detector`` -> ``t_classifier`` -> sink receive), drops
  by stage and reason, CPU seconds and peak RSS per service (psutil, sampled every
  0.2 s; a restarted service's processes are summed).
  Several streams: ``--source`` repeated (``[NAME=]FILE``) or ``--streams N`` (the first
  source N times, streams ``s1..sN``), all through one capture process; fps counts the
  frames of all streams.
* Detector cost (``detector``): the detector backend (``--detector-backend``, default
  BlazeFace) and the SSD (the seed's) on the same frames of the first source, one
  thread, frames interleaved; median wall and CPU ms per frame and the ratio to the SSD;
  and, in the pipeline block, the detector process's CPU ms per frame.
* Classifier work (``classifier``): crops classified and model calls, in all and per
  second of the run (the classifier's final metrics), and faces detected: the saving of
  the detector's classification schedule; ``--classify-every 1`` gives the behaviour
  before tracking (every face of every frame classified). ``--second-opinion dlib`` adds
  the classifier's gender second opinion and its cost (faces, fallbacks, ms per face and
  the share of one core it took over the run).
* People (``people``, with ``--out``): person events counted per stream and, for clips in
  ``ground_truth.json`` with people left to right, the per-person gender accuracy (each
  person event's fused gender against the person at its best face's position), per
  person the frames in which a face at their place shows the right (fused) gender, and the
  frames whose every face shows the right gender.
* ``--baseline serial``: the seed's way in one process on the same input: read a frame,
  detect with the seed's SSD, classify each face one at a time; reports fps, per-frame
  latency percentiles, CPU seconds and peak RSS; then the ratio pipeline fps / serial fps.

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

from common.models.registry import DEFAULT_MODEL


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


def prom_values(text: str | None, label: tuple[str, str] | None = None
                ) -> dict[str, float]:
    """``{sample name: value}`` of Prometheus text, summed over label sets (only those
    with ``label`` = ``(name, value)`` when given)."""
    from prometheus_client.parser import text_string_to_metric_families
    out: dict[str, float] = {}
    if not text:
        return out
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            if label is not None and sample.labels.get(label[0]) != label[1]:
                continue
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


def people_report(out: Path, sources: list[str]) -> dict:
    """Person events per stream and, against ``ground_truth.json`` next to a source
    (``people_left_to_right``), per-person and per-frame gender accuracy.

    A person event's place is its best face's box centre: the k-th of n equal vertical
    strips of the frame is the k-th person from the left (the shared clips' people stand
    side by side)."""
    people = [json.loads(x) for x in (out / "people.jsonl").read_text().splitlines()
              if x.strip()] if (out / "people.jsonl").is_file() else []
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()
              if x.strip()] if (out / "events.jsonl").is_file() else []
    report = {}
    for spec in sources:
        name, _, path = spec.rpartition("=")
        stream = name or Path(path).stem
        mine = [p for p in people if p["stream"] == stream]
        entry = {"people": len(mine),
                 "genders": [p["gender"] for p in sorted(
                     mine, key=lambda p: p["best_face"]["box"][0])][:12]}
        truth_file = Path(path).parent / "ground_truth.json"
        truth = json.loads(truth_file.read_text()).get(Path(path).name, {}) \
            if truth_file.is_file() else {}
        want = [p["gender"] for p in truth.get("people_left_to_right") or []]
        frames = [e for e in events if e["stream"] == stream]
        if want and frames and mine:
            width = frames[0]["width"]

            def place(box):
                """Index of the ground-truth person (left to right) whose share of the
                frame width holds the box's centre."""
                return min(len(want) - 1, int((box[0] + box[2]) / 2 / width * len(want)))
            right = sum(p["gender"] == want[place(p["best_face"]["box"])] for p in mine)
            entry["person_gender_accuracy"] = round(right / len(mine), 3)
            # per person (place): frames in which a face there shows the right gender
            seen, ok = [0] * len(want), [0] * len(want)
            for e in frames:
                for f in e["faces"]:
                    if f.get("gender"):
                        k = place(f["box"])
                        seen[k] += 1
                        ok[k] += f["gender"] == want[k]
            entry["person_frames_right"] = [f"{o}/{n}" for o, n in zip(ok, seen)]
            full = [e for e in frames if len(e["faces"]) == len(want)]
            entry["frames_all_right"] = f"{sum([f['gender'] for f in sorted(e['faces'], key=lambda f: f['box'][0])] == want for e in full)}/{len(full)}"
        report[stream] = entry
    return report


def run_pipeline(sources: list[str], realtime: bool, model: str, threads: dict,
                 out: Path | None, max_batch: int | None, hwm: int = 1,
                 detector_backend: str | None = None, classify_every: int | None = None,
                 second_opinion: str | None = None) -> dict:
    """Run the stack once on ``sources`` (``[NAME=]FILE``); the pipeline half of the
    report."""
    from services.orchestrator.options import StackOptions
    from services.orchestrator.runner import run_stack
    tmp = Path(tempfile.mkdtemp(prefix="agegender-bench-"))
    trace = tmp / "trace.jsonl"
    extra = {"classifier": [f"--max-batch={max_batch}"]} if max_batch else {}
    if classify_every is not None:
        extra["detector"] = [f"--classify-every={classify_every}"]
    backend = {"detector_backend": detector_backend} if detector_backend else {}
    opts = StackOptions(sources=list(sources), out_dir=out, realtime=realtime, model=model,
                        second_opinion=second_opinion,
                        threads=threads, http_base_port=0, trace_path=trace,
                        service_args=extra, log_level="WARNING", hwm=hwm, **backend)
    sampler = ProcessSampler()
    t0 = time.monotonic()
    code, summary = run_stack(opts, progress=sys.stderr.isatty(), on_started=sampler.start)
    wall = time.monotonic() - t0
    procs = sampler.stop()
    lat, fps, frames, fpf = stage_latencies(trace) if trace.exists() else ({}, 0.0, 0, 0.0)
    det_cpu = procs.get("detector", {}).get("cpu_s")
    # the classifier's final metrics (its metrics file, read by the stack at the end)
    cls = prom_values(getattr(sampler._stack.children.get("classifier"), "last_metrics",
                              None) if sampler._stack else None)
    span = frames / fps if fps else 0.0
    crops = cls.get("agegender_faces_classified_total", 0.0)
    calls = cls.get("agegender_classifier_batch_size_count", 0.0)
    classifier = {"classify_every": classify_every if classify_every is not None
                  else "default (about 1 s)",
                  "faces": round(fpf * frames), "crops_classified": int(crops),
                  "model_calls": int(calls),
                  "crops_per_s": round(crops / span, 2) if span else None,
                  "model_calls_per_s": round(calls / span, 2) if span else None,
                  "faces_per_crop": round(fpf * frames / crops, 2) if crops else None}
    used = cls.get("agegender_second_opinions_total", 0.0)
    fallback = cls.get("agegender_second_opinion_fallbacks_total", 0.0)
    if used + fallback:
        op_s = cls.get("agegender_second_opinion_seconds_sum", 0.0)
        last = getattr(sampler._stack.children.get("classifier"), "last_metrics", None)
        over, small = (prom_values(last, label=("reason", r)).get(
            "agegender_second_opinion_fallbacks_total", 0.0) for r in ("budget", "small"))
        classifier["second_opinion"] = {
            "faces": int(used + fallback), "used": int(used),
            "no_answer": int(fallback - over - small), "over_budget": int(over),
            "small": int(small),
            "ms_per_face": round(1e3 * op_s / max(1.0, used + fallback - over - small), 1),
            "cpu_share_of_one_core": round(op_s / span, 3) if span else None}
    return {"mode": "pipeline (4 processes, ipc://)", "streams": len(sources),
            "detector_backend": opts.detector_backend,
            "realtime": realtime, "exit_code": code, "frames": frames, "faces_per_frame": fpf,
            "fps": fps, "latency_s": lat, "drops": summary["drops"],
            "malformed": summary["malformed"], "restarts": summary["restarts"],
            "processes": procs,
            "cpu_s_total": round(sum(p["cpu_s"] for p in procs.values()), 2),
            "detector_cpu_ms_per_frame": round(1e3 * det_cpu / frames, 2)
            if det_cpu and frames else None,
            "threads": threads, "hwm": hwm, "wall_s_incl_startup": round(wall, 1),
            "classifier": classifier,
            **({"people": people_report(out, sources)} if out is not None else {})}


def run_serial(source: str, model: str, threads: int, max_frames: int = 0) -> dict:
    """The seed's way in this process: read -> detect -> classify each face alone."""
    from common.process import set_thread_budget
    set_thread_budget(threads)
    import cv2

    from common.crops import face_crop
    from common.detectors import make_detector
    from common.models import load_model
    me = psutil.Process()
    detector = make_detector("ssd", threads=threads)  # the seed's detector
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
            # one face at a time, as the seed did
            clf.predict([face_crop(frame, det.box, None, clf.crop_aspect)])
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


def _detector_cost(source: str, backend: str, max_frames: int = 100) -> dict:
    """Median ms per frame of ``backend`` and of the SSD on up to ``max_frames`` evenly
    spaced frames of ``source``, one thread, frames interleaved (each frame goes to both,
    the order alternating), so a busy machine slows both alike."""
    from services.detector.compare import make_backend, read_frames, time_interleaved
    frames = read_frames(source, max_frames)
    names = list(dict.fromkeys([backend, "ssd"]))
    res = time_interleaved(frames, {n: make_backend(n) for n in names})
    h, w = frames[0].shape[:2]
    out = {"size": f"{w}x{h}", "frames": len(frames)}
    for n in names:
        out[n] = {"ms_per_frame": round(float(np.median(res[n]["wall_s"])) * 1e3, 2),
                  "cpu_ms_per_frame": round(float(np.median(res[n]["cpu_s"])) * 1e3, 2),
                  "faces_per_frame": round(float(np.mean(res[n]["counts"])), 3)}
    if backend != "ssd":
        out["ratio_to_ssd"] = round(out[backend]["ms_per_frame"] / out["ssd"]["ms_per_frame"], 3)
        out["cpu_ratio_to_ssd"] = round(out[backend]["cpu_ms_per_frame"]
                                        / out["ssd"]["cpu_ms_per_frame"], 3)
    return out


def stream_sources(sources: list[str], streams: int | None) -> list[str]:
    """``[NAME=]FILE`` sources with absolute paths; with ``streams``, the first source that
    many times as streams ``s1..sN``.

    Raises:
        click.BadParameter: a file that does not exist.
    """
    out = []
    for s in sources:
        name, sep, path = s.rpartition("=")
        if not Path(path).is_file():
            raise click.BadParameter(f"no such file: {path}", param_hint="--source")
        out.append(f"{name}{sep}{Path(path).resolve()}")
    if streams:
        path = out[0].rpartition("=")[2]
        out = [f"s{i + 1}={path}" for i in range(streams)]
    return out


@click.command()
@click.option("--source", "sources", required=True, multiple=True, metavar="[NAME=]FILE",
              help="Video file to benchmark on (repeatable: one stream each).")
@click.option("--streams", type=click.IntRange(1, 64), default=None,
              help="Run the first source as this many streams.")
@click.option("--detector-backend", default=None,
              help="Detector backend of the stack [default: the detector's default].")
@click.option("--detector-cost/--no-detector-cost", default=True, show_default=True,
              help="Also time the detector and the SSD on the first source (one thread).")
@click.option("--baseline", type=click.Choice(["none", "serial"]), default="none",
              show_default=True, help="Also run the seed's serial loop and report the ratio.")
@click.option("--realtime", is_flag=True, help="Pace the file at its native frame rate "
              "(latency at source rate) instead of as fast as possible.")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Age/gender model.")
@click.option("--threads", "threads", multiple=True, metavar="N|SERVICE=N",
              help="Thread budget per service (default 1 each).")
@click.option("--serial-threads", type=click.IntRange(1, 64), default=os.cpu_count() or 1,
              show_default=True, help="Threads of the serial baseline (the whole machine).")
@click.option("--max-batch", type=click.IntRange(1, 1024), default=None,
              help="Classifier max batch (default: its config).")
@click.option("--hwm", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="ZeroMQ high-water mark of the data sockets.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write annotated.mp4/events.jsonl/people.jsonl (costs sink CPU) "
              "and report people and their gender accuracy.")
@click.option("--classify-every", type=click.IntRange(0, 100_000), default=None,
              help="The detector's classify_every (1: every face of every frame, the "
              "behaviour before tracking) [default: the detector's, about 1 s].")
@click.option("--second-opinion", type=click.Choice(["none", "dlib"]), default=None,
              help="The classifier's gender second opinion [default: its config].")
def main(sources, streams, detector_backend, detector_cost, baseline, realtime, model,
         threads, serial_threads, max_batch, hwm, out, classify_every, second_opinion):
    """Benchmark the pipeline (and optionally the serial baseline); print JSON."""
    from common.detectors import BACKENDS, DEFAULT_BACKEND
    from services.orchestrator.options import parse_threads
    if detector_backend is not None and detector_backend not in BACKENDS:
        raise click.BadParameter(f"use one of {list(BACKENDS)}", param_hint="--detector-backend")
    sources = stream_sources(list(sources), streams)
    first = sources[0].rpartition("=")[2]
    report = {"sources": sources, "cpu_cores": os.cpu_count(),
              "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
              "pipeline": run_pipeline(sources, realtime, model, parse_threads(threads), out,
                                       max_batch, hwm, detector_backend, classify_every,
                                       second_opinion)}
    if detector_cost:
        report["detector"] = _detector_cost(first, detector_backend or DEFAULT_BACKEND)
    if baseline == "serial":
        report["serial"] = run_serial(first, model, serial_threads)
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
