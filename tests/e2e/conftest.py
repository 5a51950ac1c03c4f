"""End-to-end fixtures: the real model, stack runs, a real RTSP server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT, free_port

MODEL = os.environ.get("AGEGENDER_E2E_MODEL", "compact")


@pytest.fixture(scope="session")
def model_name() -> str:
    """The real shipped model (``models/compact``); skip with a reason while it is absent.

    ``AGEGENDER_E2E_MODEL`` may name another model folder (developers only)."""
    path = Path(MODEL)
    if not (path / "meta.json").is_file() and not (ROOT / "models" / MODEL / "meta.json").is_file():
        pytest.skip(f"model {MODEL!r} is not in models/ yet (issue 'Models' ships it)")
    return MODEL


def read_events(path: Path) -> list[dict]:
    """The events.jsonl objects, in file order."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def descendants(pid: int) -> list[psutil.Process]:
    """All processes below ``pid`` (empty when it is gone)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    """The processes of ``procs`` still running (zombies count as gone)."""
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.fixture
def rtsp_server():
    """``start(clip, loop=True) -> url``: a GStreamer RTSP server on 127.0.0.1 playing
    ``clip`` (tests/rtsp/serve.py, run by the system Python that has PyGObject)."""
    if not Path("/usr/bin/python3").exists() or shutil.which("gst-inspect-1.0") is None:
        pytest.skip("GStreamer / system python3 with PyGObject not installed")
    procs = []

    def start(clip: Path, loop: bool = True) -> str:
        port = free_port()
        args = ["/usr/bin/python3", str(ROOT / "tests" / "rtsp" / "serve.py"),
                "--clip", str(clip), "--port", str(port)] + (["--loop"] if loop else [])
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.startswith("READY"):
                return line.split()[1]
            if proc.poll() is not None:
                break
        pytest.skip(f"RTSP server did not start: {proc.stderr.read()[-500:]}")

    yield start
    for p in procs:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
