"""Several detector processes (compose ``--scale detector=N``): each stream reaches one of
them, so its tracker sees every frame in order; when one dies its streams move to another
and go on with new tracks. Real processes (capture, two detectors), real TCP sockets,
real clips."""

from __future__ import annotations

import collections
import signal
import time

import pytest
import zmq

from common import wire
from tests.conftest import clip_path, free_port
from tests.reliability import helpers
from tests.waits import wait_for

pytestmark = pytest.mark.slow

STREAMS = {"walk": ("face-demographics-walking-and-pause.mp4", 41, 3),
           "pose": ("head-pose-face-detection-female-and-male.mp4", 56, 2)}


def test_two_detectors_two_streams_affinity_and_a_worker_dies(tmp_path):
    # given capture looping two clips (12 fps each) into two detector processes whose
    # faces messages arrive at one socket (a classifier's place)
    frames_port, faces_port = free_port(), free_port()
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    pull.bind(f"tcp://127.0.0.1:{faces_port}")
    detectors = [helpers.Service("detector", [
        "--input", f"connect:tcp://127.0.0.1:{frames_port}",
        "--output", f"connect:tcp://127.0.0.1:{faces_port}", "--threads", "1"],
        free_port(), log_path=tmp_path / f"detector{i}.log").start() for i in range(2)]
    capture = None
    got: list[wire.Message] = []

    def take(until, timeout_s, what):
        def step():
            assert capture is None or capture.proc.poll() is None, capture.log_tail()
            while pull.poll(50):
                got.append(wire.decode(pull.recv_multipart()))
            return until()
        return wait_for(step, timeout_s, what)

    try:
        for d in detectors:
            d.wait_ready(120)
        capture = helpers.Service("capture", [
            *[a for name, (f, _, _) in STREAMS.items()
              for a in ("--sources", f"{name}={clip_path(f)}")], "--loop", "true", "--output", f"bind:tcp://127.0.0.1:{frames_port}"],
            free_port(), log_path=tmp_path / "capture.log").start()
        # when the first pass of both clips has gone through
        take(lambda: all(sum(m.stream == s and m.seq < n for m in got) == n
                         for s, (_, n, _) in STREAMS.items()), 120, "a pass of each clip")
        first = list(got)
        # then each stream's frames all came from one detector, the two streams from
        # different ones, in order
        owner = {}
        for m in first:
            assert owner.setdefault(m.stream, m.header["detector_worker"]) == \
                m.header["detector_worker"], m.stream
        assert len(set(owner.values())) == 2
        for s in STREAMS:
            seqs = [m.seq for m in first if m.stream == s]
            assert seqs == sorted(seqs)
        # and each person kept one track id over the pass (3 and 2 people)
        for s, (_, n, people) in STREAMS.items():
            ids = {f["track"] for m in first if m.stream == s and m.seq < n
                   for f in m.header["faces"]}
            assert len(ids) == people, (s, ids)
        # when the detector of stream "walk" is killed
        victim = next(d for d in detectors
                      if f"detector worker {owner['walk']}" in d.log_tail(100_000))
        survivor = next(d for d in detectors if d is not victim)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
        t_kill, n_before = time.monotonic(), len(got)
        old_ids = {f["track"] for m in first if m.stream == "walk" for f in m.header["faces"]}
        # then "walk" moves to the other detector and goes on, with new track ids (its
        # tracks restart there), above the old ones
        take(lambda: sum(m.stream == "walk" and m.header["detector_worker"] == owner["pose"]
                         for m in got[n_before:]) >= 24, 120, "walk on the other detector")
        moved = [m for m in got[n_before:] if m.stream == "walk"
                 and m.header["detector_worker"] == owner["pose"]]
        new_ids = {f["track"] for m in moved for f in m.header["faces"]}
        assert new_ids and min(new_ids) > max(old_ids)
        assert [m.seq for m in moved] == sorted(m.seq for m in moved)
        # and "pose" stayed where it was, without a gap
        pose = [m.seq for m in got[n_before:] if m.stream == "pose"]
        assert pose and all(b == a + 1 or b == 0 for a, b in zip(pose, pose[1:]))
        waited = time.monotonic() - t_kill
        lost = capture.metric("agegender_frames_dropped_total", stage="capture",
                              reason="worker_lost")
        print(f"walk moved to the other detector {waited:.1f} s after the kill; "
              f"{lost:.0f} frame(s) counted as lost with the dead worker; "
              f"frames per stream {collections.Counter(m.stream for m in got)}")
        assert survivor.proc.poll() is None
    finally:
        for svc in [capture, *detectors]:
            if svc is not None:
                svc.kill()
        pull.close(0)
        ctx.term()
