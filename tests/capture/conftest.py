"""Capture test fixtures: the real RTSP server fixture (``rtsp_server``), and RTSP over
TCP for live sources opened directly (the capture service sets it at start-up)."""

import pytest

from services.capture.live import prefer_rtsp_over_tcp
from tests.rtsp_server import rtsp_server  # noqa: F401  (registers the fixture)


@pytest.fixture(autouse=True, scope="session")
def _rtsp_over_tcp():
    """What the capture service does at start-up, for sources the tests open directly."""
    prefer_rtsp_over_tcp()
