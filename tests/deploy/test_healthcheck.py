"""deploy/healthcheck.py, the image's HEALTHCHECK: which URL it probes and what it reports,
against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import free_port
from tests.deploy import helpers as h

spec = importlib.util.spec_from_file_location("healthcheck", h.DEPLOY / "healthcheck.py")
healthcheck = importlib.util.module_from_spec(spec)
spec.loader.exec_module(healthcheck)


@pytest.fixture
def http_server():
    """``start(status) -> port``: a server answering every GET with ``status``."""
    servers = []

    def start(status: int) -> int:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                body = b'{"ok": %s}' % (b"true" if status == 200 else b"false")
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                return None

        srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv.server_address[1]

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def test_candidates_come_from_arguments_then_override_then_set_ports_then_defaults():
    assert healthcheck.candidate_urls(["http://x:1/healthz"], {}) == ["http://x:1/healthz"]
    assert healthcheck.candidate_urls([], {"AGEGENDER_HEALTHCHECK_URL": "http://y/healthz",
                                           "AGEGENDER_SINK_HTTP_PORT": "1"}) == ["http://y/healthz"]
    assert healthcheck.candidate_urls([], {"AGEGENDER_SINK_HTTP_PORT": "9200",
                                           "AGEGENDER_CAPTURE_HTTP_PORT": "0"}) == [
        "http://127.0.0.1:9200/healthz"]
    defaults = healthcheck.candidate_urls([], {})
    assert defaults == [f"http://127.0.0.1:{p}/healthz" for p in (9101, 9102, 9103, 9104)]


def test_default_ports_match_the_service_configs():
    # The fallback ports are the configs' http_port defaults.
    for command in h.PIPELINE:
        default = h.config_class(command).model_fields["http_port"].default
        assert healthcheck.DEFAULT_PORTS[command.upper()] == default


def test_healthy_service_passes_and_unhealthy_or_absent_fails(http_server, capsys):
    ok_port, sick_port = http_server(200), http_server(503)
    assert healthcheck.main([f"http://127.0.0.1:{ok_port}/healthz"]) == 0
    assert healthcheck.main([f"http://127.0.0.1:{sick_port}/healthz"]) == 1
    assert "HTTP 503" in capsys.readouterr().err
    assert healthcheck.main([f"http://127.0.0.1:{free_port()}/healthz"]) == 1
    # any healthy candidate is enough (one service per container)
    assert healthcheck.main([f"http://127.0.0.1:{free_port()}/healthz",
                             f"http://127.0.0.1:{ok_port}/healthz"]) == 0
