"""Issue 12 items 1-2: camera credentials never show, whatever a user runs.

Real processes, as a user starts them, with camera URLs whose servers are not listening
(every open and reconnect is logged): everything a user or another local user can see
(console, ``--summary-json``, the kept log folder, ``/healthz``, ``/metrics``, the status
file, the children's command lines in ``ps``) is searched for each secret part of the URLs.
Each test also checks that it did see the (redacted) URLs, so it cannot pass by seeing
nothing.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.e2e.conftest import alive, descendants
from tests.waits import wait_for

AGEGENDER = [sys.executable, "-m", "services.cli"]


def camera_urls(port: int) -> list[str]:
    """The credential forms of issue 12 item 1, on a port where nothing listens: '@' in
    the password, an e-mail address as user name, percent-escapes, query parameters."""
    return [f"rtsp://admin:P@ssw0rd2024@127.0.0.1:{port}/s1",
            f"rtsp://ops@example.com:Secret-42@127.0.0.1:{port}/s2",
            f"rtsp://viewer:p%40ss%2Fw0rd@127.0.0.1:{port}/s3",
            f"rtsp://127.0.0.1:{port}/s4?user=camuser&password=Query-Pw7&channel=1"]


#: The parts of :func:`camera_urls` (and the ftp URL below) that must never show.
SECRETS = ["P@ssw0rd2024", "ssw0rd2024", "admin:", "ops@example.com", "example.com:",
           "Secret-42", "viewer:", "p%40ss", "p@ss/w0rd", "camuser", "Query-Pw7",
           "Ftp-Secret9", "ftpuser"]


def assert_no_secret(where: str, text: str) -> None:
    """Fail naming ``where`` and the secret when any of :data:`SECRETS` is in ``text``."""
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} shown in {where}: " \
            f"...{text[max(0, text.find(secret) - 200):text.find(secret) + 100]}..."


def get(port: int, path: str) -> str:
    """Body of ``GET http://127.0.0.1:port/path`` (also for 503 answers)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.read().decode()


def start(args: list[str], tmp_path: Path) -> subprocess.Popen:
    """``agegender ARGS`` in its own process group, output to files in ``tmp_path``."""
    return subprocess.Popen(AGEGENDER + args, stdout=open(tmp_path / "stdout.txt", "w"),
                            stderr=open(tmp_path / "stderr.txt", "w"),
                            stdin=subprocess.DEVNULL, start_new_session=True)


def stop(proc: subprocess.Popen, sig: int = signal.SIGINT, timeout_s: float = 30) -> int:
    """Signal the process group, wait for the exit code (SIGKILL if it hangs)."""
    try:
        os.killpg(proc.pid, sig)
        return proc.wait(timeout_s)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def reconnects_logged(text: str, streams: int) -> bool:
    """Every one of ``streams`` live streams logged its second reconnect attempt."""
    return all(re.search(rf"stream cam{i}: reconnecting to .*\(attempt 2\)", text)
               for i in range(streams))


def test_capture_never_shows_camera_credentials(tmp_path):
    # Given `agegender capture` with four camera URLs carrying credentials in every form
    # a camera URL carries them, and nothing listening on their port
    urls = camera_urls(free_port())
    http = free_port()
    args = ["capture", *[a for u in urls for a in ("--sources", u)],
            "--output", f"bind:ipc://{tmp_path}/frames.sock", "--http-port", str(http),
            "--open-timeout-s", "1", "--reconnect-min-s", "0.2", "--reconnect-max-s", "0.5"]
    proc = start(args, tmp_path)
    try:
        # When each source has been opened and reopened twice (logged each time)
        wait_for(lambda: reconnects_logged((tmp_path / "stderr.txt").read_text(), len(urls)),
                 120, "two reconnect attempts per stream")
        health, metrics = get(http, "/healthz"), get(http, "/metrics")
    finally:
        stop(proc, signal.SIGTERM)
    stderr = (tmp_path / "stderr.txt").read_text()
    # Then the log lines show each camera, host and path, and none of the secrets
    assert "rtsp://***@127.0.0.1" in stderr and "/s4?user=***&password=***&channel=1" in stderr
    assert json.loads(health)["stage"] == "capture" and 'stream="cam3"' in metrics
    for where, text in [("the console", stderr + (tmp_path / "stdout.txt").read_text()),
                        ("/healthz", health), ("/metrics", metrics)]:
        assert_no_secret(where, text)


@pytest.mark.slow
def test_run_never_shows_camera_credentials(tmp_path, model_name):
    # Given `agegender run` with the same camera URLs (nothing listening)
    urls = camera_urls(free_port())
    summary = tmp_path / "summary.json"
    args = ["run", *[a for u in urls for a in ("--source", u)], "--no-progress",
            "--http-base-port", "0", "--model", model_name, "--summary-json", str(summary),
            "--service-arg", "capture=--open-timeout-s=1",
            "--service-arg", "capture=--reconnect-min-s=0.2",
            "--service-arg", "capture=--reconnect-max-s=0.5"]
    proc = start(args, tmp_path)
    seen: list[tuple[str, str]] = []
    try:
        # When all four services run and capture reconnected twice to each camera
        def capture_process():
            return next((p for p in descendants(proc.pid)
                         if "capture" in p.cmdline()[3:4]), None)
        capture = wait_for(capture_process, 300, "the capture service")
        cmdline = capture.cmdline()
        logs = Path(cmdline[cmdline.index("--metrics-file") + 1]).parent
        wait_for(lambda: reconnects_logged((logs / "capture.log").read_text(), len(urls)),
                 120, "two reconnect attempts per stream")
        # every process's command line is readable by any local user (ps)
        seen += [(f"the command line of {' '.join(p.cmdline()[2:4])}", " ".join(p.cmdline()))
                 for p in descendants(proc.pid)]
        for p in descendants(proc.pid):
            args_p = p.cmdline()
            if "--http-port" in args_p:
                port = int(args_p[args_p.index("--http-port") + 1])
                for path in ("/healthz", "/metrics"):
                    seen.append((f"{args_p[3]} {path}", get(port, path)))
        seen += [(f"the log {f.name}", f.read_text(errors="replace"))
                 for f in logs.iterdir() if f.is_file()]
        seen += [(f"the run folder's {f.name}", f.read_text(errors="replace"))
                 for f in logs.parent.glob("*.json")]
        children = descendants(proc.pid)
        # and the user presses Ctrl-C
        rc = stop(proc)
    finally:
        if proc.poll() is None:
            stop(proc, signal.SIGKILL)
    stdout, stderr = (tmp_path / "stdout.txt").read_text(), (tmp_path / "stderr.txt").read_text()
    # Then the run ended normally, its logs showed the cameras redacted
    assert rc == 0, stderr[-2000:]
    capture_log = dict(seen)["the log capture.log"]
    assert "rtsp://***@127.0.0.1" in capture_log and "user=***&password=***" in capture_log
    assert any("stage" in text for where, text in seen if where.endswith("/healthz"))
    # and no secret is anywhere: console, summary, summary JSON, logs, HTTP, command lines
    assert "agegender run summary" in stdout
    seen += [("the console", stdout + stderr), ("--summary-json", summary.read_text())]
    for where, text in seen:
        assert_no_secret(where, text)
    assert alive(children) == []


@pytest.mark.slow
def test_refused_source_keeps_logs_without_credentials(tmp_path, model_name):
    # Given a camera URL and a file source behind an ftp:// URL with a password that
    # capture cannot open (error path: the stack stops with exit code 2, logs kept)
    urls = [camera_urls(free_port())[0], "ftp://ftpuser:Ftp-Secret9@127.0.0.1/clip.mp4"]
    summary = tmp_path / "summary.json"
    args = ["run", *[a for u in urls for a in ("--source", u)], "--no-progress",
            "--http-base-port", "0", "--model", model_name, "--summary-json", str(summary)]
    proc = start(args, tmp_path)
    try:
        rc = proc.wait(300)
    finally:
        if proc.poll() is None:
            stop(proc, signal.SIGKILL)
    stdout, stderr = (tmp_path / "stdout.txt").read_text(), (tmp_path / "stderr.txt").read_text()
    # Then it exits 2 naming the file it could not open, redacted
    assert rc == 2, stderr[-2000:]
    assert "no such file or folder: ftp://***@127.0.0.1/clip.mp4" in stdout
    kept = Path(re.search(r"service logs kept in (\S+)", stderr).group(1))
    try:
        logs = {f.name: f.read_text(errors="replace") for f in kept.iterdir() if f.is_file()}
        # and the kept capture log shows the camera it opened first, redacted
        assert "rtsp://***@127.0.0.1" in logs["capture.log"]
        refusal = json.loads(summary.read_text())["refused"]
        assert refusal["service"] == "capture" and "ftp://***@" in refusal["error"]
        # and no secret anywhere: console, summary JSON, every kept file
        for where, text in [("the console", stdout + stderr),
                            ("--summary-json", summary.read_text()),
                            *[(f"the kept {name}", text) for name, text in logs.items()]]:
            assert_no_secret(where, text)
    finally:
        import shutil
        shutil.rmtree(kept.parent, ignore_errors=True)


@pytest.mark.parametrize("command", ["run", "capture"])
def test_invalid_stream_name_is_one_clear_line_without_the_secret(tmp_path, command):
    # Given the spec of issue 12 item 2: a stream name with a space before a camera URL
    spec = "Front Door=rtsp://admin:Hunter2-Secret@127.0.0.1:8554/x"
    summary = tmp_path / "summary.json"
    args = ([command, "--source", spec, "--summary-json", str(summary), "--no-progress"]
            if command == "run" else [command, "--sources", spec])
    # When it is run
    res = subprocess.run(AGEGENDER + args, capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    # Then it exits 2 (usage error) with a line that says the stream name is invalid and
    # which names are allowed
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "invalid stream name 'Front Door'" in ln]
    assert len(lines) == 1 and "Allowed: 1-64 letters, digits" in lines[0], res.stderr
    assert "no spaces" in lines[0]
    # and the secret shows nowhere: console, summary JSON (none is written), log folders
    for secret in ("Hunter2", "admin:"):
        assert secret not in res.stdout + res.stderr
    assert not summary.exists()
    assert list(tmp_path.iterdir()) == []
