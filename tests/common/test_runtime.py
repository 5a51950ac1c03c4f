"""The service runtime's lifecycle state (``/healthz``, ``/readyz``) and exit reasons."""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from common.config import ServiceConfig
from common.health import Health
from common.metrics import StageMetrics
from common.process import EXIT_CONFIG, EXIT_REASON_ENV, read_exit_reason
from common.service import ServiceRuntime
from common.states import InvalidTransition, ServiceState
from tests.conftest import free_port


def _get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def runtime():
    """``runtime(**cfg) -> ServiceRuntime`` (not entered), with its own registry and stop."""
    def make(**cfg):
        return ServiceRuntime("capture", ServiceConfig(http_host="127.0.0.1", **cfg),
                              stop=threading.Event(), registry=CollectorRegistry(),
                              signals=False)
    return make


def test_health_moves_only_along_allowed_transitions():
    # given a fresh health record
    h = Health(StageMetrics("sink"))
    assert h.state is ServiceState.STARTING and not h.ready()
    # when it loads, runs, drains and stops
    for state in ("loading", ServiceState.RUNNING, ServiceState.DRAINING, "stopped"):
        h.enter(state)
    # then it ends stopped, was ready once, and nothing leaves "stopped"
    assert h.state is ServiceState.STOPPED and h.was_ready and not h.ready()
    with pytest.raises(InvalidTransition, match="stopped -> running"):
        h.enter(ServiceState.RUNNING)
    with pytest.raises(ValueError):
        Health(StageMetrics("sink")).enter("dancing")


def test_healthz_and_readyz_show_the_state(runtime):
    # given a runtime serving HTTP, still loading
    port = free_port()
    with runtime(http_port=port) as rt:
        rt.health.enter(ServiceState.LOADING)
        # then it is alive but not ready, and both say "loading"
        code, body = _get(port, "/healthz")
        assert body.pop("heartbeat_age_s") >= 0
        assert (code, body) == (200, {"ok": True, "state": "loading", "stage": "capture"})
        assert _get(port, "/readyz")[0] == 503
        # when it runs
        rt.health.enter(ServiceState.RUNNING)
        rt.health.beat()
        # then it is ready, and the heartbeat's age (seconds since the loop's last tick)
        # is shown and fresh again after the beat
        code, body = _get(port, "/readyz")
        assert 0 <= body.pop("heartbeat_age_s") < rt.health.timeout_s
        assert (code, body) == (200, {"ok": True, "state": "running", "stage": "capture"})


def test_a_refusal_is_written_to_the_exit_reason_file(runtime, tmp_path, monkeypatch):
    # given a runtime told where its exit reason goes
    path = tmp_path / "capture.exit.json"
    monkeypatch.setenv(EXIT_REASON_ENV, str(path))
    # when the service refuses its input
    with runtime() as rt:
        code = rt.refuse("cannot open source: no such file or folder: x.mp4")
    # then it returns exit code 2 and the reason is in the file
    assert code == EXIT_CONFIG == 2
    data = read_exit_reason(path)
    assert data["reason"] == "cannot open source: no such file or folder: x.mp4"
    assert data["refused"] is True


def test_a_service_that_logs_an_error_before_ready_leaves_it_as_the_reason(
        runtime, tmp_path, monkeypatch):
    # given a service that logs an error and returns 2 without calling refuse()
    path = tmp_path / "detector.exit.json"
    monkeypatch.setenv(EXIT_REASON_ENV, str(path))
    with runtime():
        logging.getLogger("detector").error("cannot load detector: %s", "bad model")
    # then that error is its (implicit) exit reason
    assert read_exit_reason(path) == {"reason": "cannot load detector: bad model",
                                      "refused": False, "pid": read_exit_reason(path)["pid"]}


def test_an_error_after_ready_is_not_an_exit_reason(runtime, tmp_path, monkeypatch):
    # given a service that got ready, then logged an error and stopped
    path = tmp_path / "sink.exit.json"
    monkeypatch.setenv(EXIT_REASON_ENV, str(path))
    with runtime() as rt:
        rt.health.enter(ServiceState.RUNNING)
        logging.getLogger("sink").error("one frame could not be written")
    # then no exit reason is written (it did not refuse to start)
    assert not path.exists()


def test_cli_usage_error_is_written_as_the_exit_reason(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from services.cli import main
    # given the exit-reason file set as `agegender run` sets it
    path = tmp_path / "detector.exit.json"
    monkeypatch.setenv(EXIT_REASON_ENV, str(path))
    # when a service is started with an option out of bounds
    result = CliRunner().invoke(main, ["detector", "--input-size", "99999"])
    # then click refuses it (exit 2) and the reason names the option
    assert result.exit_code == 2
    assert "input_size" in read_exit_reason(path)["reason"]


def test_cli_option_that_click_cannot_parse_is_written_as_the_exit_reason(tmp_path,
                                                                          monkeypatch):
    from click.testing import CliRunner

    from services.cli import main
    # given the exit-reason file set as `agegender run` sets it
    path = tmp_path / "classifier.exit.json"
    monkeypatch.setenv(EXIT_REASON_ENV, str(path))
    # when a service gets a number option that is not a number, or an unknown option
    for args, named in ((["--second-opinion-cpu-share", "abc"], "'abc' is not a valid float"),
                        (["--no-such-option"], "--no-such-option")):
        path.unlink(missing_ok=True)
        result = CliRunner().invoke(main, ["classifier", *args])
        # then click refuses it (exit 2) and its message is the reason
        assert result.exit_code == 2
        assert named in read_exit_reason(path)["reason"]
