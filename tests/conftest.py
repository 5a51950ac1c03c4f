"""Fixtures shared by all tests: paths to ../shared media (skipped when absent), ports."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AGEGENDER_SHARED", ROOT.parent / "shared"))
VIDEOS = SHARED / "videos"
UTKFACE = SHARED / "datasets" / "utkface" / "UTKFace"


def clip_path(name: str) -> Path:
    """Path of a clip in ../shared/videos; skips the test with a reason when absent."""
    path = VIDEOS / name
    if not path.is_file():
        pytest.skip(f"shared clip {path} is absent (tests read ../shared/videos)")
    return path


@pytest.fixture
def clip():
    """``clip(name) -> Path`` for clips in ../shared/videos (skip when absent)."""
    return clip_path


@pytest.fixture(scope="session")
def ground_truth() -> dict:
    """The hand-annotated ../shared/videos/ground_truth.json (skip when absent)."""
    path = VIDEOS / "ground_truth.json"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return json.loads(path.read_text())


@pytest.fixture
def utkface_dir() -> Path:
    """The shared UTKFace folder (skip when absent)."""
    if not UTKFACE.is_dir():
        pytest.skip(f"{UTKFACE} is absent")
    return UTKFACE


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port: int, path: str = "/healthz", timeout_s: float = 60.0) -> None:
    """Wait until ``http://127.0.0.1:port{path}`` answers 200 (a service process is up:
    its signal handlers are installed before its HTTP server starts).

    Raises:
        AssertionError: not within ``timeout_s``.
    """
    import time
    import urllib.request
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"nothing answered 200 on :{port}{path} within {timeout_s} s")


@pytest.fixture
def port():
    """A free TCP port on 127.0.0.1."""
    return free_port()
