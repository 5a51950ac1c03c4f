"""The sink over real ZeroMQ sockets: events.jsonl contract, MP4 files, live view, exit."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request

import cv2
import numpy as np
import pytest
import zmq
from prometheus_client import CollectorRegistry

from common import wire
from services.sink.config import SinkConfig
from services.sink.draw import face_label
from services.sink.events import EVENT_KEYS, FACE_KEYS
from services.sink.main import main
from tests.conftest import free_port, wait_http
from tests.waits import HANG_S, wait_for


def result_message(stream, seq, n_faces, width=160, height=120, age_range=True, fps=12.0,
                   classified=True, ended_tracks=(), answers=None, t_media_ns=None):
    """A ``result`` frame of ``n_faces`` faces standing still: face ``i`` is track
    ``i + 1``, quality 0.5; classified (``28.4``, ``[26, 31]``, female for even ``i``
    else male, 0.75) unless ``classified`` is false; ``answers`` overrides face ``i``'s
    prediction fields."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, :, 1] = 60 + seq
    faces = []
    for i in range(n_faces):
        f = {"box": [10 + 40 * i, 20, 40 + 40 * i, 60], "confidence": 0.8, "track": i + 1,
             "quality": 0.5, "classify": bool(classified)}
        if classified:
            f.update(age=28.4, gender="female" if i % 2 == 0 else "male",
                     gender_confidence=0.75)
            if age_range:
                f["age_range"] = [26, 31]
            f.update((answers or {}).get(i, {}))
        faces.append(f)
    t = time.time_ns()
    header = wire.frame_header(stream, seq, t - 50_000_000, width, height, fps=fps,
                               t_detector_ns=t - 30_000_000, t_classifier_ns=t - 10_000_000)
    header.update(kind="result", faces=faces)
    if ended_tracks:
        header["ended_tracks"] = list(ended_tracks)
    if t_media_ns is not None:
        header["t_media_ns"] = t_media_ns
    return wire.encode_frame(header, image)


def eos(stream, seq):
    return wire.encode({"kind": "eos", "stream": stream, "seq": seq,
                        "t_capture_ns": time.time_ns()})


class SinkRun:
    """A sink running :func:`services.sink.main.main` in a thread, fed over ipc://."""

    def __init__(self, cfg: SinkConfig, ctx: zmq.Context, endpoint: str):
        self.cfg, self.ctx, self.endpoint = cfg, ctx, endpoint
        self.registry = CollectorRegistry()
        self.stop = threading.Event()
        self.result: dict = {}
        self.sockets: list = []
        self.thread = threading.Thread(target=lambda: self.result.setdefault(
            "rc", main(cfg, stop=self.stop, registry=self.registry)), daemon=True)

    def push(self) -> zmq.Socket:
        """A PUSH socket connected to the sink's input (a classifier worker)."""
        sock = self.ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoint)
        self.sockets.append(sock)
        return sock

    def ended(self, timeout_s: float = 10.0) -> bool:
        """Wait for the sink to exit by itself; ``True`` when it did."""
        self.thread.join(timeout_s)
        return not self.thread.is_alive()

    def metric(self, name: str, **labels) -> float | None:
        """A sample of the sink's registry."""
        return self.registry.get_sample_value(name, labels)


@pytest.fixture
def start_sink(tmp_path):
    """``start_sink(**config) -> SinkRun``: a sink on ``ipc://`` with a free HTTP port,
    ready to receive; stopped and cleaned up at teardown."""
    ctx = zmq.Context()
    runs: list[SinkRun] = []

    def start(wait: bool = True, **overrides) -> SinkRun:
        ep = f"ipc://{tmp_path}/results{len(runs)}"
        config = dict(input=f"bind:{ep}", http_port=free_port(), http_host="127.0.0.1",
                      hwm=100)
        config.update(overrides)
        run = SinkRun(SinkConfig(**config), ctx, ep)
        runs.append(run)
        run.thread.start()
        if wait:
            wait_ready(run.cfg.http_port)
        return run

    yield start
    for run in runs:
        run.stop.set()
        run.thread.join(5)
        for sock in run.sockets:
            sock.close(0)
    ctx.term()


def get(url, timeout=3):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.headers.get("Content-Type"), r.read()


def wait_ready(port):
    wait_http(port, "/readyz", 10)


def wait_for_snapshot(port, timeout_s=10.0):
    """``(status, content type, body)`` of /snapshot.jpg once it serves a frame (it
    answers 503 before the first); the last answer when ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            answer = get(f"http://127.0.0.1:{port}/snapshot.jpg")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
            answer = (503, None, b"")
        if answer[0] == 200 or time.monotonic() > deadline:
            return answer
        time.sleep(0.05)


def test_two_streams_give_events_videos_and_exit_after_both_end(start_sink, tmp_path):
    sink = start_sink(out_dir=tmp_path / "out", expected_streams=2,
                      status_path=tmp_path / "status.json",
                      trace_path=tmp_path / "trace.jsonl")
    cfg, push = sink.cfg, sink.push()
    # given 6 frames of stream "cam" and 4 of stream "door 2", then EOS on both
    for seq in range(6):
        push.send_multipart(result_message("cam", seq, 2))
    for seq in range(4):
        push.send_multipart(result_message("door 2", seq, 1, age_range=False))
    # the live view serves the newest annotated frame while the sink runs
    code, ctype, body = wait_for_snapshot(cfg.http_port)
    assert code == 200 and ctype == "image/jpeg"
    assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape == (120, 160, 3)
    code, ctype, page = get(f"http://127.0.0.1:{cfg.http_port}/")
    assert code == 200 and b'src="/stream.mjpg"' in page
    with urllib.request.urlopen(f"http://127.0.0.1:{cfg.http_port}/stream.mjpg",
                                timeout=3) as r:
        assert r.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        part = r.read(200)
    assert b"--frame" in part and b"image/jpeg" in part
    # when both streams end
    push.send_multipart(eos("cam", 6))
    push.send_multipart(eos("door 2", 4))
    # then the sink exits by itself with 0
    assert sink.ended() and sink.result["rc"] == 0
    out = cfg.out_dir
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    # and events.jsonl has one object per frame with exactly the contract's keys
    assert len(events) == 10
    for ev in events:
        assert tuple(ev) == EVENT_KEYS
        assert isinstance(ev["seq"], int) and ev["width"] == 160 and ev["height"] == 120
        assert abs(ev["t_capture"] - time.time()) < 60
        assert 0.04 < ev["latency_s"] < 5
        for face in ev["faces"]:
            assert tuple(face) == FACE_KEYS
            x1, y1, x2, y2 = face["box"]
            assert all(isinstance(v, int) for v in face["box"]) and x2 > x1 and y2 > y1
            # (every frame says the same, so the person's fused answer is the sent one)
            assert face["gender"] in ("female", "male")
            assert face["gender_confidence"] == pytest.approx(0.75)
            assert face["age"] == pytest.approx(28.4)
    cam = [e for e in events if e["stream"] == "cam"]
    assert [e["seq"] for e in cam] == list(range(6))
    assert cam[0]["faces"][0]["age_range"] == [26, 31]
    assert [e["faces"][0]["age_range"] for e in events if e["stream"] == "door 2"] == [None] * 4
    # and one annotated MP4 per stream with every frame
    for name, frames in (("annotated.mp4", 6), ("annotated_door_2.mp4", 4)):
        cap = cv2.VideoCapture(str(out / name))
        n = 0
        while cap.read()[0]:
            n += 1
        cap.release()
        assert n == frames, name
    # and the status file says done with exact counts and percentiles
    status = json.loads(cfg.status_path.read_text())
    assert status["done"] and status["frames"] == 10 and status["faces"] == 16
    assert status["latency_s"]["p50"] > 0.04
    trace = [json.loads(line) for line in cfg.trace_path.read_text().splitlines()]
    assert all(t["t_sink_ns"] > t["t_classifier_ns"] > t["t_detector_ns"] > t["t_capture_ns"]
               for t in trace)


def test_metrics_only_writes_no_files_but_measures_latency(start_sink, tmp_path):
    # given a metrics-only sink
    sink = start_sink(out_dir=tmp_path / "out", metrics_only=True, expected_streams=1)
    push = sink.push()
    # when 3 frames and EOS arrive
    for seq in range(3):
        push.send_multipart(result_message("cam", seq, 1))
    push.send_multipart(eos("cam", 3))
    # then it exits, counted 3 latencies, and wrote nothing
    assert sink.ended()
    assert sink.metric("agegender_e2e_latency_seconds_count") == 3
    # and the one face in all 3 frames is one person, counted at the end of the stream
    assert sink.metric("agegender_people_total", stream="cam", gender="female",
                       age_band="25-34") == 1
    assert not (tmp_path / "out").exists()


def test_an_events_file_that_cannot_be_created_stops_the_sink_with_exit_2(start_sink,
                                                                         tmp_path, capfd):
    # given a sink whose events file cannot be created (a folder is in its place)
    (tmp_path / "out" / "events.jsonl").mkdir(parents=True)
    sink = start_sink(wait=False, out_dir=tmp_path / "out", expected_streams=1)
    # then it stops by itself with exit code 2 (restarting cannot help) and says why,
    # naming the file, before it takes any frame
    assert sink.ended() and sink.result["rc"] == 2
    err = capfd.readouterr().err  # (the service configures its own log handler)
    assert "events.jsonl" in err and "cannot be written" in err
    assert sink.metric("agegender_sink_frames_total") == 0


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_full_disk_during_the_run_stops_the_sink_with_exit_2(start_sink, tmp_path,
                                                               capfd):
    # given a sink whose events.jsonl lands on a full disk (/dev/full fails every write
    # with ENOSPC, as a full file system does)
    out = tmp_path / "out"
    out.mkdir()
    (out / "events.jsonl").symlink_to("/dev/full")
    sink = start_sink(out_dir=out, expected_streams=1)
    push = sink.push()
    # when frames arrive
    for seq in range(4):
        push.send_multipart(result_message("cam", seq, 1))
    # then the sink stops with exit code 2 and a message naming the file and the cause
    assert sink.ended() and sink.result["rc"] == 2
    err = capfd.readouterr().err
    assert "No space left on device" in err and "events.jsonl" in err
    assert sink.metric("agegender_sink_output_errors_total", output="events") >= 1


def test_face_label_shows_range_or_age():
    assert face_label({"gender": "male", "age": 40.2, "age_range": [38, 43]}) == "male 38-43"
    assert face_label({"gender": "female", "age": 40.6, "age_range": None}) == "female 41"


@pytest.mark.slow
def test_sink_process_exits_on_sigterm_while_streaming(tmp_path):
    import signal
    import subprocess
    import sys
    # given a sink process writing files, with a live-view client attached and frames flowing
    port = free_port()
    ep = f"ipc://{tmp_path}/results"
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "sink", "--input",
                             f"bind:{ep}", "--out-dir", str(tmp_path / "out"), "--http-port",
                             str(port), "--http-host", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(ep)
    try:
        wait_ready(port)
        viewer = urllib.request.urlopen(f"http://127.0.0.1:{port}/stream.mjpg", timeout=5)
        for seq in range(20):
            push.send_multipart(result_message("cam", seq, 2))
        viewer.read(100)
        # when it gets SIGTERM
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(HANG_S + 5)
        elapsed = time.monotonic() - t0
        viewer.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        push.close(0)
        ctx.term()
    # then it exits cleanly (no hang; bench/shutdown.py times it) and the events written
    # so far are complete lines
    assert elapsed < HANG_S and proc.returncode == 0
    lines = (tmp_path / "out" / "events.jsonl").read_text().splitlines()
    assert lines and all(json.loads(line)["stream"] == "cam" for line in lines)


def test_restarted_sink_appends_events_and_keeps_the_earlier_video(tmp_path):
    from services.sink.events import JsonLines
    from services.sink.video import VideoOutput
    # given outputs of a first sink run
    first = JsonLines(tmp_path / "events.jsonl")
    first.write({"seq": 0})
    first.close()
    v = VideoOutput(tmp_path)
    v.write_frame("cam", np.zeros((32, 32, 3), np.uint8))
    v.close()
    # when a restarted sink (append=True) writes again
    again = JsonLines(tmp_path / "events.jsonl", append=True)
    again.write({"seq": 1})
    again.close()
    v2 = VideoOutput(tmp_path, append=True)
    # then the events continue the file and the video goes to a new part
    assert [json.loads(x)["seq"] for x in (tmp_path / "events.jsonl").read_text().split()] == [0, 1]
    assert v2.path_for("cam").name == "annotated.part1.mp4"


def test_video_outputs_cap_streams_and_survive_a_file_that_cannot_open(tmp_path):
    from services.sink import video
    # given a folder where the second stream's file cannot be created
    (tmp_path / "annotated_b.mp4").mkdir()
    v = video.VideoOutput(tmp_path)
    img = np.zeros((16, 16, 3), np.uint8)
    # when frames of many streams arrive
    results = {s: v.write_frame(s, img) for s in ["a", "b"] + [f"s{i}" for i in range(40)]}
    v.close()
    # then the unopenable and the over-the-cap streams are skipped, the others recorded
    assert results["a"] is True and results["b"] is False
    assert sum(results.values()) == video.MAX_VIDEO_STREAMS


def test_stream_ends_waits_for_frames_the_eos_overtook_then_for_the_grace_period():
    from services.sink.streams import StreamEnds

    now = [100.0]
    ends = StreamEnds(grace_s=5.0, clock=lambda: now[0])
    # given an eos after 3 frames that arrives before any result of that stream
    assert ends.eos("cam", 3) == []
    # when the 3 results come in, the stream ends at the third
    assert ends.result("cam") == [] and ends.result("cam") == []
    assert ends.result("cam") == ["cam"]
    # given another stream whose eos says 4 frames but only 1 result ever comes
    assert ends.eos("door", 4) == [] and ends.result("door") == []
    now[0] += 4.9
    assert ends.expire() == []          # the grace period counts from the last result
    now[0] += 0.2
    assert ends.expire() == ["door"]
    # and an eos without a frame count (or a repeated eos) ends or stays ended at once
    assert ends.eos("legacy", None) == ["legacy"] and ends.eos("cam", 3) == []
    assert ends.ended == ["cam", "door", "legacy"]


def test_eos_overtaking_results_of_another_worker_loses_no_frame(start_sink, tmp_path):
    # given a sink expecting 1 stream, fed by two "classifier workers" (two PUSH sockets)
    sink = start_sink(out_dir=tmp_path / "out", video=False, expected_streams=1,
                      eos_grace_s=5)
    fast, slow = sink.push(), sink.push()
    # when worker 1 delivers even frames and the eos (frames=6) before worker 2's odd ones
    for seq in (0, 2, 4):
        fast.send_multipart(result_message("cam", seq, 1))
    fast.send_multipart(wire.encode({"kind": "eos", "stream": "cam", "seq": 6, "frames": 6,
                                     "t_capture_ns": time.time_ns()}))
    wait_for(lambda: sink.metric("agegender_sink_streams_ended_total") == 1, 10,
             "the eos to arrive")
    assert sink.thread.is_alive()  # still waiting for the frames in flight
    for seq in (1, 3, 5):
        slow.send_multipart(result_message("cam", seq, 1))
    # then the sink ends as soon as the last frame arrived, with all 6 events written
    assert sink.ended(5)
    events = [json.loads(x) for x in (tmp_path / "out" / "events.jsonl").read_text().splitlines()]
    assert sorted(e["seq"] for e in events) == list(range(6))
