"""``agegender run`` as a user runs it: the demo, Ctrl-C, a killed service, a crash loop."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import psutil
import pytest

from services.orchestrator.options import StackOptions
from services.orchestrator.runner import run_stack
from tests.conftest import clip_path
from tests.e2e.conftest import alive, descendants
from tests.waits import HANG_S, wait_for

pytestmark = pytest.mark.slow
AGEGENDER = [sys.executable, "-m", "services.cli"]


def start_cli(args, tmp_path):
    """Start ``agegender ARGS`` in its own process group (as a shell would for Ctrl-C)."""
    out = open(tmp_path / "stdout.txt", "w")
    err = open(tmp_path / "stderr.txt", "w")
    proc = subprocess.Popen(AGEGENDER + args, stdout=out, stderr=err, start_new_session=True,
                            stdin=subprocess.DEVNULL)
    return proc


def test_run_without_arguments_plays_the_demo_and_ctrl_c_leaves_nothing(tmp_path, model_name):
    # given `agegender run` with no arguments (the built-in demo, default ports)
    args = ["run"] + ([] if model_name == "compact" else ["--model", model_name])
    proc = start_cli(args, tmp_path)
    try:
        # when the four services run and frames reach the sink
        wait_for(lambda: len(descendants(proc.pid)) >= 4
                 and "capture" in (tmp_path / "stderr.txt").read_text()
                 and re.search(r"\b[1-9]\d*frame", (tmp_path / "stderr.txt").read_text()),
                 180, "frames flowing")
        children = descendants(proc.pid)
        # and the user presses Ctrl-C (SIGINT to the foreground process group)
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(10)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # then it stops without hanging (SIGTERM, SIGKILL after 3 s: about 5 s at most on an
    # idle machine), leaving no process behind, and prints a summary
    print(f"agegender run stopped {elapsed:.1f} s after Ctrl-C")
    assert elapsed < HANG_S, elapsed
    assert alive(children) == []
    stderr = (tmp_path / "stderr.txt").read_text()
    assert "built-in demo" in stderr
    stdout = (tmp_path / "stdout.txt").read_text()
    assert "agegender run summary" in stdout and "e2e latency" in stdout
    assert proc.returncode == 0


def test_demo_run_ends_by_itself(tmp_path, model_name):
    # given the demo (a finite scene) written to --out
    args = ["run", "--out", str(tmp_path / "out"), "--no-progress", "--http-base-port", "0",
            "--no-realtime", "--model", model_name]
    proc = start_cli(args, tmp_path)
    try:
        rc = proc.wait(240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # then it exits 0 by itself with the outputs
    assert rc == 0, (tmp_path / "stderr.txt").read_text()[-2000:]
    assert (tmp_path / "out" / "annotated.mp4").stat().st_size > 0
    events = (tmp_path / "out" / "events.jsonl").read_text().splitlines()
    assert len(events) > 10
    assert re.search(r"frames\s+%d\b" % len(events), (tmp_path / "stdout.txt").read_text())


def test_killed_detector_is_restarted_and_the_stream_resumes(tmp_path, model_name):
    # given the stack on a looping clip at its native frame rate
    stop = threading.Event()
    holder = {}
    opts = StackOptions(sources=[str(clip_path("face-demographics-walking-and-pause.mp4"))],
                        out_dir=tmp_path, loop=True, model=model_name, http_base_port=0)
    t = threading.Thread(target=lambda: holder.setdefault("result", run_stack(
        opts, stop, progress=False, on_started=lambda s: holder.update(stack=s))), daemon=True)
    t.start()
    try:
        wait_for(lambda: "stack" in holder and holder["stack"].status().get("frames", 0) >= 10,
                 180, "10 frames")
        stack = holder["stack"]
        old_pid = stack.children["detector"].pid
        # when the detector is killed with SIGKILL mid-run
        os.kill(old_pid, signal.SIGKILL)
        wait_for(lambda: stack.children["detector"].total_restarts == 1, 10, "a restart")
        frames_then = stack.status()["frames"]
        # then a new detector process runs and frames flow again
        wait_for(lambda: stack.status().get("frames", 0) >= frames_then + 15, 90,
                 "frames after the restart")
        assert stack.children["detector"].pid != old_pid and stack.children["detector"].running()
        # and the orchestrator's /metrics counts the restart
        with urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics",
                                    timeout=3) as r:
            text = r.read().decode()
        assert 'agegender_process_restarts_total{service="detector"} 1.0' in text
        assert 'agegender_process_restarts_total{service="classifier"} 0.0' in text
    finally:
        stop.set()
        t.join(15)
    code, summary = holder["result"]
    assert code == 0 and summary["restarts"]["detector"] == 1
    assert not psutil.pid_exists(old_pid) or psutil.Process(old_pid).status() == "zombie"


def run_to_end(args, tmp_path, timeout=120):
    """Run the CLI until it exits; ``(rc, stdout, stderr, every child pid seen)``."""
    proc = start_cli(args, tmp_path)
    children = []
    try:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            children += [c for c in descendants(proc.pid) if c not in children]
            time.sleep(0.1)
        rc = proc.wait(5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return (rc, (tmp_path / "stdout.txt").read_text(), (tmp_path / "stderr.txt").read_text(),
            children)


def test_crash_looping_service_is_given_up_on(tmp_path, model_name):
    # given a detector that crashes at every start (its input cannot be bound)
    args = ["run", "--source", str(clip_path("face-demographics-walking-and-pause.mp4")),
            "--http-base-port", "0", "--no-progress", "--model", model_name,
            "--max-restarts", "2",
            "--service-arg", f"detector=--input=bind:ipc://{tmp_path}/no/such/dir/x"]
    rc, stdout, stderr, children = run_to_end(args, tmp_path)
    # then it gives up after 2 restarts with a clear message and a non-zero exit code
    assert rc == 3, stderr[-2000:]
    assert "detector died" in stderr and "giving up" in stderr
    assert "no/such/dir" in stderr  # the crashing service's own error is shown
    assert re.search(r"restarts\s+detector 2", stdout)
    # and no process is left behind
    assert alive(children) == []


@pytest.mark.parametrize("what,service_args,message", [
    ("missing file", [], "cannot open source"),
    ("invalid detector option", ["--service-arg", "detector=--input-size=99999"], "input_size"),
])
def test_refused_configuration_stops_at_once_without_restarts(tmp_path, model_name, what,
                                                               service_args, message):
    # given a source that cannot be opened, or a service option out of bounds
    source = tmp_path / "absent.mp4" if what == "missing file" else \
        clip_path("face-demographics-walking-and-pause.mp4")
    args = ["run", "--source", str(source), "--http-base-port", "0", "--no-progress",
            "--model", model_name, "--out", str(tmp_path / "out"), *service_args]
    rc, stdout, stderr, children = run_to_end(args, tmp_path)
    # then the run exits 2 with the service's own error, without restarting it
    assert rc == 2, stderr[-2000:]
    assert "refused its configuration" in stderr and " died " not in stderr
    assert "FAILED" in stdout and message in stdout + stderr
    assert not re.search(r"restarts\s+\w+ \d", stdout)
    # and the summary names no output that was never written; nothing is left running
    assert "annotated.mp4" not in stdout
    assert alive(children) == []


def test_scrape_of_a_service_dying_mid_response_reads_as_unreachable(tmp_path, port):
    """A service killed while answering /metrics (body shorter than its
    Content-Length) must not raise into the orchestrator's loop: it reads as
    unreachable and the last good scrape is kept."""
    import socket

    from services.orchestrator.children import Child

    srv = socket.create_server(("127.0.0.1", port))

    def answer_truncated():
        conn, _ = srv.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 10462\r\n\r\npartial")

    t = threading.Thread(target=answer_truncated, daemon=True)
    t.start()
    child = Child("detector", [], port, tmp_path / "detector.log")
    child.last_metrics = "kept 1\n"
    try:
        assert child.get("/metrics") == (0, "")
        t.join(5)
        srv_thread = threading.Thread(target=answer_truncated, daemon=True)
        srv_thread.start()
        assert child.scrape() == "kept 1\n"
        srv_thread.join(5)
    finally:
        srv.close()


def test_folder_of_unreadable_images_reports_its_drops(tmp_path, model_name):
    # given a folder whose only "images" are text files
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        (folder / f"img{i}.jpg").write_text("not an image")
    args = ["run", "--source", str(folder), "--http-base-port", "0", "--no-progress",
            "--model", model_name]
    rc, stdout, stderr, children = run_to_end(args, tmp_path)
    # then the run ends normally and its summary counts the 3 drops (from the capture's
    # final metrics file: the process is gone by the time the summary is made)
    assert rc == 0, stderr[-2000:]
    assert re.search(r"drops\s+capture/bad_image 3", stdout), stdout
    assert "no frame reached the sink" in stdout
    assert alive(children) == []
