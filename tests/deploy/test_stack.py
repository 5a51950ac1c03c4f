"""The compose wiring without Docker: the four services as real processes on loopback TCP.

Each process gets the environment its compose service has (docker-compose.yml), with
service names replaced by 127.0.0.1, ports by free ones, the shared clip as the source and
a temporary out_dir. The test waits for every ``/healthz`` and ``/readyz`` (in compose's
``depends_on`` order), waits until frames reach the sink, scrapes every ``/metrics`` with
prometheus-client's parser and checks that every catalogued metric is served by the service
that owns it, with its type and labels. It also runs the image's health-check script
against the live services.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from common.metrics import FRAME_DROP_REASONS
from tests.conftest import free_port
from tests.deploy import helpers as h

CLIP = "face-demographics-walking-and-pause.mp4"
ORDER = ("sink", "classifier", "detector", "capture")  # compose depends_on order
READY_TIMEOUT_S = float(os.environ.get("AGEGENDER_TEST_READY_TIMEOUT_S", "240"))
FLOW_TIMEOUT_S = 120.0
HEALTHCHECK = h.DEPLOY / "healthcheck.py"


def agegender_cmd() -> list[str]:
    """The ``agegender`` console script next to this interpreter, else ``python -m``."""
    exe = shutil.which("agegender", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "services.cli"]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def loopback_environments(clip: Path | None, out_dir: Path, capture_service: str = "capture",
                          rtsp_demo_url: str | None = None) -> tuple[dict, dict]:
    """Per command: the compose service's environment rewritten for loopback processes.

    Args:
        clip: file source for the ``capture`` service (``None`` keeps the compose sources).
        out_dir: the sink's out_dir.
        capture_service: which compose capture service runs (``capture`` or, for the demo
            profile, ``capture-demo``).
        rtsp_demo_url: where the demo RTSP server listens here (replaces rtsp-demo:8554).

    Returns ``(environments, http_ports)``.
    """
    model = h.load_compose(h.COMPOSE)
    services = {n: s for n, s in model["services"].items()
                if h.service_command(s) in h.PIPELINE
                and (n == capture_service or h.service_command(s) != "capture")}
    assert sorted(h.service_command(s) for s in services.values()) == sorted(h.PIPELINE)
    # every bound (service, port) gets a free loopback port
    bound: dict[tuple[str, int], int] = {}
    for name, svc in services.items():
        for key, value in svc["environment"].items():
            if key.endswith(("_INPUT", "_OUTPUT")):
                mode, addrs = h.endpoint_addresses(value)
                if mode == "bind":
                    bound[(name, addrs[0][1])] = free_port()
    envs, http_ports = {}, {}
    for name, svc in services.items():
        command = h.service_command(svc)
        prefix = h.env_prefix(command)
        env = {}
        for key, value in svc["environment"].items():
            if key.endswith(("_INPUT", "_OUTPUT")):
                mode, addrs = h.endpoint_addresses(value)
                if mode == "bind":
                    value = f"bind:tcp://127.0.0.1:{bound[(name, addrs[0][1])]}"
                else:  # keep the addresses of services that run here (capture-demo: profile)
                    live = [f"tcp://127.0.0.1:{bound[a]}" for a in addrs if a in bound]
                    assert live, f"{name}.{key}: no running service among {addrs}"
                    value = "connect:" + ",".join(live)
            env[key] = str(value)
        http_ports[command] = free_port()
        env[f"{prefix}HTTP_PORT"] = str(http_ports[command])
        env[f"{prefix}HTTP_HOST"] = "127.0.0.1"
        env[f"{prefix}THREADS"] = "1"       # a shared 2-core machine
        if command == "capture" and clip is not None:
            env[f"{prefix}SOURCES"] = json.dumps([f"walk={clip}"])
            env[f"{prefix}LOOP"] = "true"
        if command == "capture" and rtsp_demo_url is not None:
            env[f"{prefix}SOURCES"] = env[f"{prefix}SOURCES"].replace(
                "rtsp://rtsp-demo:8554/demo", rtsp_demo_url)
            assert rtsp_demo_url in env[f"{prefix}SOURCES"]
        if command == "sink":
            env[f"{prefix}OUT_DIR"] = str(out_dir)
        h.build_config(command, env)  # the rewritten environment still validates
        envs[command] = env
    return envs, http_ports


def metrics(port: int) -> dict:
    """``{name: family}`` from one scrape; counters under their ``_total`` name."""
    status, body = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    fams = {}
    for fam in text_string_to_metric_families(body.decode()):
        fams[fam.name + ("_total" if fam.type == "counter" else "")] = fam
    return fams


def sample_value(fam, name: str, **labels) -> float:
    return sum(s.value for s in fam.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.fixture
def stack(clip, tmp_path):
    """The base compose services on the shared clip; yields ``(procs, http_ports, log_tail)``."""
    envs, ports = loopback_environments(clip(CLIP), tmp_path / "out")
    yield from run_stack(envs, ports, tmp_path)


@pytest.fixture
def demo_stack(clip, tmp_path):
    """The demo profile: the RTSP demo server looping the clip, read by capture-demo."""
    from tests.deploy.test_rtsp_demo import SERVER, system_python_with_gst_rtsp
    py = system_python_with_gst_rtsp()
    port = free_port()
    log_path = tmp_path / "rtsp-demo.log"
    with open(log_path, "wb") as log_file:
        server = subprocess.Popen([py, str(SERVER), "--host", "127.0.0.1", "--port", str(port),
                                   "--clip", str(clip(CLIP))], stdout=log_file,
                                  stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "serving rtsp://" not in log_path.read_text():
            assert server.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        envs, ports = loopback_environments(None, tmp_path / "out", "capture-demo",
                                            f"rtsp://127.0.0.1:{port}/demo")
        yield from run_stack(envs, ports, tmp_path)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=5)


def run_stack(envs: dict, ports: dict, tmp_path: Path):
    """Start the services like compose does (depends_on order, each healthy before the
    next), wait until all are ready; yield ``(procs, http_ports, log_tail)``; stop them."""
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("AGEGENDER_")}
    procs: dict[str, subprocess.Popen] = {}
    logs: dict[str, Path] = {}

    def log_tail() -> str:
        return "\n".join(f"--- {s} ---\n" + logs[s].read_text()[-3000:] for s in logs)

    try:
        for command in ORDER:
            logs[command] = tmp_path / f"{command}.log"
            with open(logs[command], "wb") as log_file:
                procs[command] = subprocess.Popen(
                    agegender_cmd() + [command], env={**base_env, **envs[command]},
                    stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + READY_TIMEOUT_S
            while http_get(f"http://127.0.0.1:{ports[command]}/healthz", 2)[0] != 200:
                assert procs[command].poll() is None, (
                    f"{command} exited {procs[command].returncode}\n{log_tail()}")
                assert time.monotonic() < deadline, f"{command} not healthy\n{log_tail()}"
                time.sleep(0.3)
        for command in ORDER:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while http_get(f"http://127.0.0.1:{ports[command]}/readyz", 2)[0] != 200:
                assert procs[command].poll() is None, f"{command} exited\n{log_tail()}"
                assert time.monotonic() < deadline, f"{command} not ready\n{log_tail()}"
                time.sleep(0.3)
        yield procs, ports, log_tail
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for command, p in procs.items():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_compose_wiring_on_loopback_serves_every_catalogued_metric(stack):
    procs, ports, log_tail = stack
    # Given the four services healthy and ready, when frames of the clip flow, then the
    # sink receives result frames end to end.
    wait_for_sink_frames(ports, log_tail)

    # When every /metrics is scraped and parsed with prometheus-client's parser,
    scraped = {command: metrics(port) for command, port in ports.items()}
    # then every catalogued metric is on the service that owns it, with type and labels.
    problems = []
    for entry in h.catalogue().values():
        for command in entry.services:
            if command == "run":
                continue  # agegender run's orchestrator, not a compose service
            fam = scraped[command].get(entry.name)
            if fam is None:
                problems.append(f"{entry.name} missing on {command}")
                continue
            if fam.type != entry.type:
                problems.append(f"{entry.name} on {command} is a {fam.type}, catalogue says "
                                f"{entry.type}")
            labels = {k for s in fam.samples for k in s.labels if k != "le"}
            if fam.samples and labels != set(entry.labels):
                problems.append(f"{entry.name} on {command} has labels {sorted(labels)}, "
                                f"catalogue says {sorted(entry.labels)}")
    assert not problems, "\n".join(problems)

    # Bounded labels are created at zero: every drop reason is there on every stage.
    for command in h.PIPELINE:
        fam = scraped[command]["agegender_frames_dropped_total"]
        reasons = {s.labels["reason"] for s in fam.samples
                   if s.name == "agegender_frames_dropped_total"}
        assert reasons == set(FRAME_DROP_REASONS), command

    # The frames really went through every stage, per stream.
    cap = scraped["capture"]["agegender_frames_captured_total"]
    assert sample_value(cap, "agegender_frames_captured_total", stream="walk") > 0
    assert sample_value(scraped["capture"]["agegender_source_up"], "agegender_source_up",
                        stream="walk") == 1
    e2e = scraped["sink"]["agegender_e2e_latency_seconds"]
    assert sample_value(e2e, "agegender_e2e_latency_seconds_count") > 0
    for command in ("detector", "classifier", "sink"):
        fam = scraped[command]["agegender_messages_received_total"]
        assert sample_value(fam, "agegender_messages_received_total", stage=command) > 0, command

    # The sink serves its live MJPEG page at / on the published HTTP port.
    status, body = http_get(f"http://127.0.0.1:{ports['sink']}/")
    assert status == 200 and b"<" in body[:200]

    # The image's health check passes against each live service and fails on a closed port.
    for command, port in ports.items():
        ok = subprocess.run([sys.executable, str(HEALTHCHECK),
                             f"http://127.0.0.1:{port}/healthz"], capture_output=True,
                            text=True, timeout=30)
        assert ok.returncode == 0, ok.stderr
        from_env = subprocess.run(
            [sys.executable, str(HEALTHCHECK)], capture_output=True, text=True, timeout=30,
            env={"PATH": os.environ.get("PATH", ""),
                 f"{h.env_prefix(command)}HTTP_PORT": str(port)})
        assert from_env.returncode == 0, from_env.stderr
    closed = subprocess.run([sys.executable, str(HEALTHCHECK),
                             f"http://127.0.0.1:{free_port()}/healthz"],
                            capture_output=True, text=True, timeout=30)
    assert closed.returncode == 1 and "unhealthy" in closed.stderr

    # And every process is still running (nothing crashed while scraped).
    assert all(p.poll() is None for p in procs.values()), log_tail()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_services_stop_cleanly_on_sigterm(stack):
    # Given the running stack, when each service gets SIGTERM (what `docker compose stop`
    # sends), then it exits 0 within the compose stop_grace_period.
    procs, _, log_tail = stack
    grace = float(h.load_compose(h.COMPOSE)["services"]["sink"]["stop_grace_period"].rstrip("s"))
    for command in reversed(ORDER):  # compose stops dependants first
        p = procs[command]
        p.send_signal(signal.SIGTERM)
        try:
            code = p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{command} ignored SIGTERM for {grace} s\n{log_tail()}")
        assert code == 0, f"{command} exited {code}\n{log_tail()}"


def wait_for_sink_frames(ports: dict, log_tail, n: int = 5) -> None:
    deadline = time.monotonic() + FLOW_TIMEOUT_S
    while True:
        sink = metrics(ports["sink"])
        if sample_value(sink["agegender_sink_frames_total"], "agegender_sink_frames_total") >= n:
            return
        assert time.monotonic() < deadline, f"no result frames reached the sink\n{log_tail()}"
        time.sleep(1.0)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_profile_rtsp_camera_reaches_the_sink(demo_stack):
    # Given the demo profile's wiring (the RTSP demo server, capture-demo reading it, the
    # detector connected to capture and capture-demo), when it runs, then the live stream
    # "demo" is up and its frames reach the sink end to end.
    procs, ports, log_tail = demo_stack
    wait_for_sink_frames(ports, log_tail)
    cap = metrics(ports["capture"])
    assert sample_value(cap["agegender_source_up"], "agegender_source_up", stream="demo") == 1
    assert sample_value(cap["agegender_frames_captured_total"],
                        "agegender_frames_captured_total", stream="demo") > 0
    e2e = metrics(ports["sink"])["agegender_e2e_latency_seconds"]
    assert sample_value(e2e, "agegender_e2e_latency_seconds_count") > 0
    assert all(p.poll() is None for p in procs.values()), log_tail()
