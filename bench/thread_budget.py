"""Thread-budget benchmark: classifier throughput with and without per-process budgets
while four services share the machine (issue 5, point 10).

    python -m bench.thread_budget [--seconds 20] [--batch 16]

For each configuration it starts four real worker processes at the same moment, like the
four services of ``agegender run``:

* ``classifier``: the shipped age/gender model on Keras/TensorFlow
  (``load_model("compact", runtime="keras")``: the TensorFlow thread pools and tracing are
  what this benchmark looks at; the CPU default is ONNX Runtime) classifying
  batches of ``--batch`` face crops (120x120 BGR) in a loop -> crops/s;
* ``detector``: the real SSD face detector on a 1280x720 frame in a loop -> frames/s;
* ``capture`` and ``sink`` stand-ins: OpenCV work they really do (resize + JPEG encode of
  a 1280x720 frame, the sink's MJPEG view) -> frames/s.

Configurations: ``budget`` (each process calls :func:`common.process.set_thread_budget`
with ``--threads`` before importing TensorFlow, as ``ServiceRuntime`` does) and
``no_budget`` (OMP/TF/OpenCV defaults: one thread per core in every process), plus
``classifier_alone`` with the budget and nothing else running, for reference.
The classifier also reports ``trace_count`` after predicting every batch size from 1 to
``--batch`` (it must stay at the warm-up count: no retrace per batch size).

Each process also reports ``per_cpu_s`` (work per CPU-second it used): on a machine
shared with other jobs a process with more threads simply takes a bigger share of the
CPU, so ``per_s`` alone rewards oversubscription; ``per_cpu_s`` shows its cost.
Prints one JSON line per configuration (budget and no_budget interleaved, ``--repeat``
rounds) and a final summary of means. Numbers, never pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def worker(role: str, budget: int, start_at: float, seconds: float, batch: int) -> dict:
    """Run one role until ``start_at + seconds`` (wall clock); return its throughput."""
    import numpy as np
    if budget:
        from common.process import set_thread_budget
        set_thread_budget(budget)
    import cv2
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    out: dict = {"role": role}
    if role == "classifier":
        from common.models import load_model
        model = load_model("compact", threads=budget or None, runtime="keras")
        model.warmup(batch)
        after_warmup = model.trace_count
        for n in range(1, batch + 1):
            model.predict([frame[:120, :120]] * n)
        out["trace_count_warmup"] = after_warmup
        out["trace_count_after_all_sizes"] = model.trace_count
        crops = [frame[y:y + 120, x:x + 120] for x, y in
                 zip(range(0, 1100, 70), range(0, 600, 37))][:batch]
        step = lambda: model.predict(crops)  # noqa: E731
        unit = len(crops)
    elif role == "detector":
        from common.detectors.ssd import SSDDetector
        det = SSDDetector(threads=budget or None)
        det.detect(frame)
        step = lambda: det.detect(frame)  # noqa: E731
        unit = 1
    else:  # capture / sink stand-ins: resize + JPEG encode
        def step():
            """One unit of OpenCV work (resize + JPEG encode)."""
            small = cv2.resize(frame, (640, 360))
            cv2.imencode(".jpg", small)
            cv2.imencode(".jpg", frame)
        unit = 1
    while time.time() < start_at:
        time.sleep(0.01)
    done = 0
    t0 = time.perf_counter()
    c0 = time.process_time()
    while time.time() < start_at + seconds:
        step()
        done += unit
    dt = time.perf_counter() - t0
    cpu = time.process_time() - c0
    out.update(per_s=round(done / dt, 2), cpu_s=round(cpu, 2),
               per_cpu_s=round(done / max(cpu, 1e-9), 2),
               wall_s=round(dt, 2), threads=budget or "default")
    return out


def run_config(name: str, roles: list[str], budget: int, seconds: float, batch: int,
               setup_s: float) -> dict:
    """Start one process per role, synchronised; collect their JSON results."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    if not budget:
        for var in BUDGET_VARS:
            env.pop(var, None)
    start_at = time.time() + setup_s
    procs = [subprocess.Popen([sys.executable, "-m", "bench.thread_budget", "--worker", role,
                               "--budget", str(budget), "--start-at", str(start_at),
                               "--seconds", str(seconds), "--batch", str(batch)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for role in roles]
    results = {}
    for role, p in zip(roles, procs):
        out, _ = p.communicate(timeout=setup_s + seconds + 120)
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        results[role] = json.loads(lines[-1]) if lines else {"error": f"exit {p.returncode}"}
    return {"config": name, "budget_threads": budget or "default", "cpus": os.cpu_count(),
            "seconds": seconds, "results": results}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per config")
    p.add_argument("--batch", type=int, default=16, help="crops per classifier call")
    p.add_argument("--threads", type=int, default=1, help="per-process budget")
    p.add_argument("--repeat", type=int, default=2, help="budget/no_budget rounds")
    p.add_argument("--setup", type=float, default=25.0,
                   help="seconds allowed for model loading before the synchronised start")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--budget", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.budget, args.start_at, args.seconds,
                                args.batch)), flush=True)
        return 0
    four = ["classifier", "detector", "capture", "sink"]
    # interleaved and repeated: a shared machine's background load drifts
    configs = [("budget", four, args.threads), ("no_budget", four, 0)] * args.repeat \
        + [("classifier_alone", ["classifier"], args.threads)]
    rows = []
    for name, roles, budget in configs:
        row = run_config(name, roles, budget, args.seconds, args.batch, args.setup)
        print(json.dumps(row), flush=True)
        rows.append(row)
    summary: dict = {"summary": True}
    for row in rows:
        for role, r in row["results"].items():
            for key in ("per_s", "per_cpu_s"):
                if key in r:
                    summary.setdefault(f"{row['config']}_{role}_{key}", []).append(r[key])
    summary = {k: (round(sum(v) / len(v), 2) if isinstance(v, list) else v)
               for k, v in summary.items()}
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
