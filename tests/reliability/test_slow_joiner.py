"""Issue 5, point 3: slow joiner. Messages sent right after sockets connect can be lost;
frames may be lossy, end of stream may not. A short file run always ends with every
service seeing end of stream, whatever order the processes start in and however late a
peer joins.

The four real services are started WITHOUT waiting for readiness, in a different order
each run (capture first, sink last, ...), on a 41-frame clip with ``--realtime false``.
The classifier stays up across runs after the first (it takes ~10 s to load TensorFlow);
capture, detector and sink are fresh processes every run.
"""

from __future__ import annotations

import json
import random
import time

import pytest

from tests.conftest import free_port
from tests.reliability import helpers

pytestmark = pytest.mark.slow

CLIP = "face-demographics-walking-and-pause.mp4"  # 41 frames, 480x270
ORDERS = [
    ("capture", "detector", "sink", "classifier"),   # classifier (slowest) last
    ("capture", "classifier", "detector", "sink"),   # sink joins last
    ("sink", "detector", "capture", "classifier"),
    ("detector", "capture", "sink", "classifier"),
    ("capture", "sink", "detector", "classifier"),
]


def _eos_seen(port) -> float:
    return helpers.metric(helpers.scrape(port), "agegender_messages_received_total",
                          kind="eos")


def test_short_file_run_always_ends_with_eos_everywhere(tmp_path, clip):
    path = clip(CLIP)
    ep = {k: free_port() for k in ("frames", "faces", "results")}
    args = {
        "capture": ["--sources", f"clip={path}", "--realtime", "false",
                    "--output", f"bind:tcp://127.0.0.1:{ep['frames']}"],
        "detector": ["--input", f"connect:tcp://127.0.0.1:{ep['frames']}",
                     "--output", f"connect:tcp://127.0.0.1:{ep['faces']}"],
        "classifier": ["--input", f"bind:tcp://127.0.0.1:{ep['faces']}",
                       "--output", f"connect:tcp://127.0.0.1:{ep['results']}"],
        "sink": ["--input", f"bind:tcp://127.0.0.1:{ep['results']}", "--expected-streams",
                 "1", "--metrics-only", "true"],
    }
    common = ["--threads", "1", "--log-level", "INFO"]
    classifier = None
    running: list[helpers.Service] = []
    rng = random.Random(5)
    try:
        for run, order in enumerate(ORDERS):
            status = tmp_path / f"status{run}.json"
            svcs = {}
            for name in order:
                if name == "classifier" and classifier is not None:
                    continue
                extra = ["--status-path", str(status)] if name == "sink" else []
                svc = helpers.Service(name, common + args[name] + extra, free_port(),
                                      log_path=tmp_path / f"{name}{run}.log").start()
                running.append(svc)
                svcs[name] = svc
                time.sleep(rng.uniform(0.0, 0.5))  # join at an arbitrary moment
            classifier = classifier or svcs["classifier"]
            svcs["classifier"] = classifier
            # when the short file has been played: the sink exits by itself after EOS
            try:
                rc = svcs["sink"].proc.wait(120)
            except Exception:
                pytest.fail(f"run {run} {order}: sink never saw end of stream\n"
                            + "\n".join(f"--- {n}\n{s.log_tail(800)}" for n, s in svcs.items()))
            # then every stage saw the end of stream and the sink got every frame
            assert rc == 0, svcs["sink"].log_tail()
            st = json.loads(status.read_text())
            assert st.get("frames") == 41, (run, order, st)
            assert _eos_seen(svcs["detector"].http_port) == 1
            assert _eos_seen(classifier.http_port) == run + 1
            capture_rc = svcs["capture"].proc.wait(30)
            assert capture_rc == 0, svcs["capture"].log_tail()
            for name in ("detector",):
                svcs[name].terminate()
    finally:
        for svc in running:
            svc.kill()
