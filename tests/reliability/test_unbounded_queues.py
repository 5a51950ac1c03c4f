"""Issue 5, point 4: a stage that needs 1 s per message behind a 720p live source.

A real slow consumer process (``tests.reliability.procs slow-consumer``: a
:class:`common.sockets.Receiver` that sleeps 1 s per message) stands in for the
classifier behind the real detector. In front: either synthetic 1280x720 live frames at
30 fps (``procs live-producer``, what a live capture sends) or the real capture service
reading the 720p clip from a real RTSP server on 127.0.0.1.

Expected: the age of each processed frame stays bounded (no creep), the RSS of every
process stays flat, and the frames that could not be processed are counted as drops by
stage and reason (capture ``queue_full``, detector ``superseded``, consumer ``stale``).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import free_port
from tests.reliability import helpers
from tests.rtsp_server import rtsp_server  # noqa: F401  (registers the fixture)

pytestmark = pytest.mark.slow

DURATION_S = 25.0
WARMUP_S = 8.0
MAX_FRAME_AGE_S = 2.0


class Proc:
    """A helper process (procs.py) whose JSON-line stdout is collected."""

    def __init__(self, args, http_port):
        self.http_port = http_port
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.reliability.procs", *args,
                                      "--http-port", str(http_port)], cwd=helpers.ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        self.lines: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                continue

    def kill(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _drops(port) -> dict[str, float]:
    out = {}
    for (name, labels), v in helpers.scrape(port).items():
        if name == "agegender_frames_dropped_total" and v:
            d = dict(labels)
            out[f"{d['stage']}/{d['reason']}"] = v
    return out


@pytest.mark.parametrize("source", ["synthetic-720p30", "rtsp-720p"])
def test_slow_consumer_behind_live_720p_keeps_age_and_memory_bounded(source, tmp_path,
                                                                     rtsp_server, clip):
    frames_port, faces_port = free_port(), free_port()
    procs: dict[str, object] = {}
    try:
        # given a 1 s/message consumer in place of the classifier
        consumer = Proc(["slow-consumer", "--input", f"bind:tcp://127.0.0.1:{faces_port}",
                         "--sleep", "1.0", "--max-frame-age-s", str(MAX_FRAME_AGE_S)],
                        free_port())
        procs["consumer"] = consumer
        # and the real detector between it and a live 720p source
        det = helpers.Service("detector", [
            "--input", f"connect:tcp://127.0.0.1:{frames_port}",
            "--output", f"connect:tcp://127.0.0.1:{faces_port}", "--threads", "1",
            "--max-frame-age-s", str(MAX_FRAME_AGE_S), "--log-level", "WARNING"],
            free_port(), log_path=tmp_path / "detector.log").start()
        procs["detector"] = det
        det.wait_ready(60)
        if source == "synthetic-720p30":
            cap = Proc(["live-producer", "--output", f"bind:tcp://127.0.0.1:{frames_port}",
                        "--fps", "30", "--width", "1280", "--height", "720"], free_port())
            cap_port = cap.http_port
        else:
            server = rtsp_server(clip("walking-and-pause-720p-loop.mp4"), loop=True)
            cap = helpers.Service("capture", [
                "--sources", f"cam={server.url}", "--output",
                f"bind:tcp://127.0.0.1:{frames_port}", "--log-level", "WARNING"],
                free_port(), log_path=tmp_path / "capture.log").start()
            cap.wait_ready(60, path="/healthz")
            cap_port = cap.http_port
        procs["capture"] = cap
        pids = {n: p.proc.pid for n, p in procs.items()}

        # when it runs for DURATION_S
        t0 = time.monotonic()
        rss: dict[str, list[float]] = {n: [] for n in pids}
        while time.monotonic() - t0 < DURATION_S:
            time.sleep(2.0)
            for n, pid in pids.items():
                assert procs[n].proc.poll() is None, f"{n} died"
                if time.monotonic() - t0 >= WARMUP_S:
                    rss[n].append(helpers.rss_mb(pid))
        drops = {**_drops(cap_port), **_drops(det.http_port), **_drops(consumer.http_port)}
        ages = [ln["age_s"] for ln in consumer.lines if ln.get("kind") == "faces"]

        # then processed frames are never older than the stale limit plus one hop, and
        # their age does not creep up over the run
        assert len(ages) >= DURATION_S / 2, f"only {len(ages)} frames processed"
        assert max(ages) <= MAX_FRAME_AGE_S + 0.5, ages
        # (ages start near zero while the queues fill: compare the middle and last thirds)
        third = len(ages) // 3
        assert statistics.median(ages[2 * third:]) \
            <= statistics.median(ages[third:2 * third]) + 0.5, ages
        # RSS of every process is flat after warm-up (no queue grows in memory)
        for n, series in rss.items():
            assert max(series) - series[0] < 60, f"{n} RSS {series}"
        # what could not be processed was dropped and counted by stage and reason
        assert sum(drops.values()) > 0, drops
        assert any(k.startswith(("capture/", "detector/")) for k in drops), drops
        print(f"\n{source}: {len(ages)} processed, age median {statistics.median(ages):.2f} s "
              f"max {max(ages):.2f} s, drops {drops}, RSS MiB "
              + ", ".join(f"{n} {s[0]:.0f}->{s[-1]:.0f} (max {max(s):.0f})"
                          for n, s in rss.items()))
    finally:
        for p in procs.values():
            p.kill()
