"""Capture test fixtures: the real RTSP server fixture (``rtsp_server``)."""

from tests.rtsp_server import rtsp_server  # noqa: F401  (registers the fixture)
