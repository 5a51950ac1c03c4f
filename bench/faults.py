"""Fault benchmark: kill -9 and SIGSTOP every service of a running stack, one at a time,
and measure what each fault costs.

    python -m bench.faults --source ../shared/videos/face-demographics-walking-and-pause.mp4

Runs :func:`services.orchestrator.runner.run_stack` on a looping clip (``--out`` in a
temporary folder, watchdog and stall detection on) and, once frames flow, injects for
each service in turn (capture, detector, classifier, sink): SIGKILL, then SIGSTOP. After
each fault it waits until ``--recover-frames`` more frames reached the sink and prints one
JSON line: the fault, seconds until the watchdog acted (the restart after a kill; the
stall report after a stop), seconds until frames flowed again, frames lost (seq gaps at
the sink, summed over streams, during the fault) and the restarts and stalls so far. At
the end: one JSON summary with the run's own summary (frames, per-stream gaps, sink
breaks) and whether events.jsonl holds a repeated ``(stream, seq)``.

Numbers only; nothing passes or fails here (the tests in ``tests/e2e/test_supervision.py``
do that). Timings taken on a shared machine are noisy: repeat and compare.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from common.models.registry import DEFAULT_MODEL

DEFAULT_SOURCE = str(Path(__file__).resolve().parents[2] / "shared" / "videos"
                     / "face-demographics-walking-and-pause.mp4")
SERVICES = ("capture", "detector", "classifier", "sink")


def _wait(predicate, timeout_s: float, poll_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    return None


def _missing(status: dict) -> int:
    return sum(int(s.get("missing", 0)) for s in (status.get("stream_stats") or {}).values()
               if not s.get("live"))


def inject(stack, service: str, how: str, recover_frames: int, timeout_s: float) -> dict:
    """One fault on ``service`` (``kill`` or ``stop``); what it cost."""
    child = stack.children[service]
    pid, restarts, stalls = child.pid, child.total_restarts, child.stalls
    before = stack.status()
    frames0, missing0 = before.get("frames", 0), _missing(before)
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL if how == "kill" else signal.SIGSTOP)
    acted = _wait(lambda: child.total_restarts > restarts, timeout_s)
    t_acted = time.monotonic() - t0 if acted else None
    flowing = _wait(lambda: stack.status().get("frames", 0) >= frames0 + recover_frames,
                    timeout_s)
    t_flowing = time.monotonic() - t0 if flowing else None
    if how == "stop":  # never leave a stopped process behind
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    after = stack.status()
    return {"fault": f"{how} {service}", "watchdog_acted_s": _r(t_acted),
            "frames_flowing_again_s": _r(t_flowing),
            "frames_lost": _missing(after) - missing0,
            "stalls_reported": child.stalls - stalls,
            "restarts_total": {s: c.total_restarts for s, c in stack.children.items()}}


def repeated_stream_seq(events: Path) -> tuple[int, int]:
    """``(lines, repeated)`` of an events.jsonl: how many lines, and how many of them
    repeat a ``(stream, seq)`` seen before (0 when restarts never replay a frame);
    ``(0, 0)`` when the file does not exist."""
    seen, repeated, n = set(), 0, 0
    if events.is_file():
        for raw in events.read_text().splitlines():
            e = json.loads(raw)
            key = (e["stream"], e["seq"])
            repeated += key in seen
            seen.add(key)
            n += 1
    return n, repeated


def _r(x):
    return None if x is None else round(x, 2)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: inject the faults, print one JSON line each and a summary;
    returns 0 (numbers only, 1 when the stack did not start)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default=DEFAULT_SOURCE, help="clip (looped)")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--stall-timeout-s", type=float, default=8.0)
    p.add_argument("--recover-frames", type=int, default=10,
                   help="frames at the sink after a fault that count as recovered")
    p.add_argument("--timeout-s", type=float, default=120.0,
                   help="give up waiting for recovery from one fault after this long")
    p.add_argument("--services", default=",".join(SERVICES))
    p.add_argument("--faults", default="kill,stop")
    p.add_argument("--out-json", type=Path, help="also write the summary here")
    args = p.parse_args(argv)

    from services.orchestrator.options import StackOptions
    from services.orchestrator.runner import run_stack

    out = Path(tempfile.mkdtemp(prefix="agegender-faults-"))
    # (one restart per fault within the 60 s window: allow all of them)
    opts = StackOptions(sources=[args.source], loop=True, out_dir=out, model=args.model,
                        http_base_port=0, stall_timeout_s=args.stall_timeout_s,
                        max_restarts=100)
    stop = threading.Event()
    holder: dict = {}
    t = threading.Thread(target=lambda: holder.setdefault("result", run_stack(
        opts, stop, progress=False, on_started=lambda s: holder.update(stack=s))),
        daemon=True)
    t.start()
    lines = []
    try:
        if not _wait(lambda: "stack" in holder
                     and holder["stack"].status().get("frames", 0) >= 20, 300):
            print("the stack did not start", file=sys.stderr)
            return 1
        stack = holder["stack"]
        for service in args.services.split(","):
            for how in args.faults.split(","):
                line = inject(stack, service, how, args.recover_frames, args.timeout_s)
                print(json.dumps(line), flush=True)
                lines.append(line)
    finally:
        stop.set()
        t.join(60)
    code, summary = holder.get("result", (None, {}))
    n_lines, repeated = repeated_stream_seq(out / "events.jsonl")
    result = {"faults": lines, "exit_code": code, "frames": summary.get("frames"),
              "events_lines": n_lines, "repeated_stream_seq": repeated,
              "per_stream": summary.get("per_stream"), "sink_breaks":
              len(summary.get("sink_breaks") or []), "stalls": [
                  {"service": s["service"], "reason": s["reason"]}
                  for s in summary.get("stalls") or []],
              "restarts": summary.get("restarts"), "out_dir": str(out)}
    print(json.dumps(result), flush=True)
    if args.out_json:
        args.out_json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
