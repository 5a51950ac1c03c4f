"""The sink's live view of faces and /metrics behind a bearer token or basic auth, with a
real HTTP client (issue 12 item 3); probes stay open unless told; a warning when faces are
served to the network without authentication."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
import zmq

from services.sink.config import SinkConfig
from tests.conftest import ROOT, free_port
from tests.sink.test_sink import SinkRun, start_sink  # noqa: F401  (fixture)
from tests.waits import HANG_S, wait_for

TOKEN = "t0k3n-for-tests"
BASIC = "viewer:pass:with-colon"
PATHS = ("/", "/stream.mjpg", "/snapshot.jpg", "/metrics")


def status(port: int, path: str, authorization: str | None = None) -> tuple[int, dict]:
    """``(status, headers)`` of a GET (status 0: nothing listens); a streaming answer is
    closed after its headers."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if authorization:
        req.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)
    except OSError:  # not listening yet
        return 0, {}


def basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def test_token_or_basic_auth_guard_the_live_view_and_metrics(start_sink, tmp_path):
    # Given a sink whose live view and metrics require a token (from a file) or basic auth
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    sink = start_sink(http_auth_token_file=token_file, http_basic_auth=BASIC)
    port = sink.cfg.http_port
    for path in PATHS:
        # When a client asks without credentials or with wrong ones, then 401 with a
        # challenge a browser answers with its login prompt
        code, headers = status(port, path)
        assert code == 401, path
        assert 'Basic realm="agegender"' in headers["WWW-Authenticate"]
        for wrong in ("Bearer nope", "Bearer " + TOKEN[:-1], basic("viewer:nope"),
                      "Basic !!!", "Digest x", TOKEN):
            assert status(port, path, wrong)[0] == 401, (path, wrong)
    # When it gives the token or the user and password, then the pages are served
    # (/snapshot.jpg answers 503 until a first frame: past the authentication)
    for auth in ("Bearer " + TOKEN, basic(BASIC)):
        assert [status(port, p, auth)[0] for p in PATHS] == [200, 200, 503, 200]
    # and the probes stay open for health checks
    assert status(port, "/healthz")[0] == 200 and status(port, "/readyz")[0] == 200


def test_probes_can_require_the_credentials_too(tmp_path):
    # Given a sink whose probes require the token too
    port = free_port()
    cfg = SinkConfig(input=f"bind:ipc://{tmp_path}/r.sock", http_port=port,
                     http_host="127.0.0.1", http_auth_token=TOKEN, http_auth_probes=True)
    ctx = zmq.Context()
    sink = SinkRun(cfg, ctx, "")
    sink.thread.start()
    try:
        # Then a probe with the token is answered, one without is refused
        wait_for(lambda: status(port, "/readyz", "Bearer " + TOKEN)[0] == 200, HANG_S,
                 "the sink ready")
        assert status(port, "/healthz")[0] == 401 and status(port, "/readyz")[0] == 401
    finally:
        sink.stop.set()
        sink.thread.join(5)
        ctx.term()


def test_open_sink_serves_as_before(start_sink):
    # Given no credentials configured (the default), then nothing asks for any
    sink = start_sink()
    assert [status(sink.cfg.http_port, p)[0] for p in PATHS] == [200, 200, 503, 200]


@pytest.mark.parametrize("host, warned", [("0.0.0.0", True), ("127.0.0.1", False)])
def test_warning_when_faces_are_served_to_the_network_without_auth(start_sink, capfd,
                                                                    host, warned):
    # Given a sink started on its own with its default host 0.0.0.0 (compose, k8s)
    start_sink(http_host=host)
    # Then its log warns that the live view of faces is open to anyone who reaches it
    text = capfd.readouterr().err
    assert ("live view of people's faces" in text) == warned
    if warned:
        assert "http_basic_auth or http_auth_token" in text


def test_unreadable_credentials_file_is_a_refusal_with_exit_code_2(tmp_path):
    # Given `agegender sink` with a token file that does not exist
    http = free_port()
    res = subprocess.run([sys.executable, "-m", "services.cli", "sink", "--http-port",
                          str(http), "--input", f"bind:ipc://{tmp_path}/r.sock",
                          "--http-auth-token-file", str(tmp_path / "absent")],
                         capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env={**os.environ,
                              "AGEGENDER_EXIT_REASON_FILE": str(tmp_path / "why.json")})
    # Then it exits 2 naming the setting and the file, and writes that as its exit reason
    assert res.returncode == 2, res.stderr
    assert "http_auth_token_file: cannot read" in res.stderr
    assert "http_auth_token_file" in (tmp_path / "why.json").read_text()
