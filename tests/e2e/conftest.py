"""End-to-end fixtures: the real model, event files, process checks; the real RTSP server
fixture comes from :mod:`tests.rtsp_server`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT
from tests.rtsp_server import rtsp_server  # noqa: F401  (real RTSP server fixture)

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
