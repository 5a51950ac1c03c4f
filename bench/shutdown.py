"""Shutdown benchmark: seconds from SIGTERM to process exit, per service and state.

    python -m bench.shutdown [--repeat 3] [--clip ../shared/videos/walking-and-pause-720p-loop.mp4]

The product's target is that every service is gone within 2 s of SIGTERM (compose and
Kubernetes then never need to SIGKILL it). The tests only fail on a hang (10 s); this
prints the real figure, so a slow machine shows up as a number, not a failed test.

Cases (real ``agegender`` processes on 127.0.0.1, their downstream peer absent):

* ``capture/file``: capture playing a clip in a loop, nobody downstream (blocking sends);
* ``detector|classifier|sink/idle``: ready, no input;
* ``detector|classifier|sink/busy``: fed valid messages at about 30 per second
  (the classifier runs its batches, the sink writes its files).

Prints one JSON object: per case the runs (seconds), their maximum, the target and
whether every run was within it. Timings taken while other work runs are noisy.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
from pathlib import Path

import zmq

#: Seconds within which a service should be gone after SIGTERM.
TARGET_S = 2.0
DEFAULT_CLIP = Path(__file__).resolve().parents[1].parent / "shared" / "videos" / \
    "walking-and-pause-720p-loop.mp4"


class Feeder:
    """Pushes valid messages into a service's input at about 30 per second."""

    def __init__(self, ctx: zmq.Context, port: int, make, affinity: bool = False):
        if affinity:  # the detector takes frames by stream affinity, as capture sends them
            from tests.frames import FrameSource
            self.sock = FrameSource(ctx, f"connect:tcp://127.0.0.1:{port}")
        else:
            self.sock = ctx.socket(zmq.PUSH)
            self.sock.setsockopt(zmq.LINGER, 0)
            self.sock.connect(f"tcp://127.0.0.1:{port}")
        self.make = make
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        seq = 0
        while not self.stop.is_set():
            try:
                self.sock.send_multipart(self.make(seq=seq), flags=zmq.NOBLOCK)
            except zmq.Again:
                pass
            seq += 1
            self.stop.wait(1 / 30)

    def close(self) -> None:
        """Stop feeding and close the socket."""
        self.stop.set()
        self.thread.join(2)
        self.sock.close(0)


def time_exit(name: str, args: list[str], feed, workdir: Path) -> float:
    """Start ``agegender NAME ARGS``, wait until ready (and fed, when ``feed``), SIGTERM
    it and return the seconds it took to exit (``inf`` when it had to be killed)."""
    from tests.conftest import free_port
    from tests.reliability.helpers import Service
    in_port = free_port()
    ctx = zmq.Context()
    svc = Service(name, [a.format(input=in_port, output=free_port()) for a in args],
                  free_port(), log_path=workdir / f"{name}.log")
    feeder = None
    try:
        svc.start()
        svc.wait_ready(300)
        if feed is not None:
            feeder = Feeder(ctx, in_port, feed, affinity=name == "detector")
            svc.wait_metric("agegender_messages_received_total", 1, stage=name)
        return svc.terminate(timeout_s=30)
    finally:
        if feeder is not None:
            feeder.close()
        svc.kill()
        ctx.term()


def cases(clip: Path, out_dir: Path) -> dict:
    """``{case: (service, args, feed or None)}``."""
    from tests.reliability import helpers as h
    io = ["--input", "bind:tcp://127.0.0.1:{input}", "--output",
          "connect:tcp://127.0.0.1:{output}", "--threads", "1"]
    sink = ["--input", "bind:tcp://127.0.0.1:{input}", "--out-dir", str(out_dir)]

    def frame(seq):
        """A valid 1280x720 ``frame`` message with sequence number ``seq``."""
        return h.valid_frame(seq=seq, width=1280, height=720)

    def faces(seq):
        """A valid 640x480 ``faces`` message with sequence number ``seq``."""
        return h.valid_faces(seq=seq, width=640, height=480)

    def result(seq):
        """A valid 1280x720 ``result`` message with sequence number ``seq``."""
        return h.valid_result(seq=seq, width=1280, height=720)

    return {
        "capture/file": ("capture", ["--sources", str(clip), "--loop", "true", "--output",
                                     "bind:tcp://127.0.0.1:{output}"], None),
        "detector/idle": ("detector", io, None), "detector/busy": ("detector", io, frame),
        "classifier/idle": ("classifier", io, None),
        "classifier/busy": ("classifier", io, faces),
        "sink/idle": ("sink", sink, None), "sink/busy": ("sink", sink, result),
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: prints the JSON report; exit status 0."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=3, help="runs per case (default 3)")
    p.add_argument("--clip", type=Path, default=DEFAULT_CLIP, help="clip for capture/file")
    p.add_argument("--only", default="", help="run only cases starting with this")
    args = p.parse_args(argv)
    report = {}
    with tempfile.TemporaryDirectory(prefix="agegender-bench-shutdown-") as tmp:
        for case, (name, svc_args, feed) in cases(args.clip, Path(tmp) / "out").items():
            if not case.startswith(args.only) or (name == "capture" and not args.clip.is_file()):
                continue
            runs = [round(time_exit(name, svc_args, feed, Path(tmp)), 3)
                    for _ in range(args.repeat)]
            report[case] = {"runs_s": runs, "max_s": max(runs), "target_s": TARGET_S,
                            "within": max(runs) < TARGET_S}
            print(case, runs, file=sys.stderr, flush=True)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
