"""docker-compose.yml, its GPU override and example overrides: valid for a real compose
implementation, and every command, variable, port and address exists in the CLI/config."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from services import cli
from tests.deploy import helpers as h

FULL = ["--profile", "demo", "--profile", "monitoring"]
VARIANTS = {
    "base": ([h.COMPOSE], []),
    "demo": ([h.COMPOSE], ["--profile", "demo"]),
    "monitoring": ([h.COMPOSE], ["--profile", "monitoring"]),
    "demo+monitoring": ([h.COMPOSE], FULL),
    "mqtt": ([h.COMPOSE], ["--profile", "mqtt"]),
    "gpu": ([h.COMPOSE, h.COMPOSE_GPU], []),
    "gpu+demo+monitoring": ([h.COMPOSE, h.COMPOSE_GPU], FULL),
    **{f"example:{p.stem}": ([h.COMPOSE, p], FULL) for p in h.COMPOSE_EXAMPLES},
}
EXPECTED_SERVICES = {
    "base": {"capture", "detector", "classifier", "sink"},
    "demo": {"capture", "detector", "classifier", "sink", "rtsp-demo", "capture-demo"},
    "monitoring": {"capture", "detector", "classifier", "sink", "prometheus", "grafana"},
    "mqtt": {"capture", "detector", "classifier", "sink", "mosquitto"},
}


def compose(files: list[Path], profiles: list[str], *args: str) -> subprocess.CompletedProcess:
    """Run docker-compose (v1, offline ``config`` mode) in the repository root."""
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is not installed (Debian package docker-compose)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGEGENDER_")}
    cmd = [exe]
    for f in files:
        cmd += ["-f", str(f)]
    return subprocess.run(cmd + profiles + list(args), cwd=h.ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_compose_config_is_valid(variant):
    # Given a compose file combination, when docker-compose checks it, then it passes.
    files, profiles = VARIANTS[variant]
    res = compose(files, profiles, "config", "-q")
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("variant", list(EXPECTED_SERVICES))
def test_profiles_add_their_services(variant):
    # Given a profile, when the services active under it are listed (no profile key, or the
    # profile in it: the compose spec's rule), then exactly the profile's extras join.
    active = set(VARIANTS[variant][1][1::2])
    services = h.load_compose(h.COMPOSE)["services"]
    on = {n for n, s in services.items() if not s.get("profiles") or active & set(s["profiles"])}
    assert on == EXPECTED_SERVICES[variant]


def agegender_services(model: dict) -> dict[str, dict]:
    """Compose services that run an ``agegender`` subcommand."""
    return {name: svc for name, svc in model["services"].items()
            if h.service_command(svc) in cli.SERVICES}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_command_variable_and_value_exists_in_the_cli_config(variant):
    # Given the merged compose model, when its agegender services are read,
    # then each runs a real subcommand, uses only its config's variables, and those validate.
    files, _ = VARIANTS[variant]
    model = h.load_compose(*files)
    services = agegender_services(model)
    assert {h.service_command(s) for s in services.values()} == set(h.PIPELINE)
    commands = set(cli.main.commands)
    for name, svc in services.items():
        command = h.service_command(svc)
        assert command in commands, f"{name}: unknown command {command!r}"
        env = svc.get("environment") or {}
        assert isinstance(env, dict), f"{name}: use the map form of environment"
        unknown = set(env) - h.env_names(command)
        assert not unknown, f"{name}: {sorted(unknown)} are not fields of {command}'s config"
        cfg = h.build_config(command, env)  # raises when a value does not validate
        assert cfg.http_port, f"{name}: HTTP port disabled, health checks would fail"


def http_port(svc: dict) -> int:
    command = h.service_command(svc)
    return h.build_config(command, svc.get("environment") or {}).http_port


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_health_checks_probe_the_service_http_port(variant):
    # Given each agegender service, when its health check runs, then it GETs /healthz on the
    # port its config serves, with the helper script the image installs.
    files, _ = VARIANTS[variant]
    for name, svc in agegender_services(h.load_compose(*files)).items():
        test = svc["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "/usr/local/bin/agegender-healthcheck"], name
        assert test[3] == f"http://127.0.0.1:{http_port(svc)}/healthz", name


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_endpoints_wire_capture_detector_classifier_sink(variant):
    # Given the merged model with all profiles, when every connect address is resolved
    # against the compose services, then it reaches a service binding that port, and the
    # chain capture -> detector -> classifier -> sink is complete.
    files, _ = VARIANTS[variant]
    services = agegender_services(h.load_compose(*files))
    binds: dict[tuple[str, int], str] = {}  # (service name, port) -> bound input/output
    for name, svc in services.items():
        cfg = h.build_config(h.service_command(svc), svc.get("environment") or {})
        for field in ("input", "output"):
            if hasattr(cfg, field):
                mode, addrs = h.endpoint_addresses(getattr(cfg, field))
                if mode == "bind":
                    assert addrs[0][0] == "*", f"{name}.{field} must bind all interfaces"
                    binds[(name, addrs[0][1])] = f"{h.service_command(svc)}.{field}"
    expected_target = {("detector", "input"): "capture.output",
                       ("detector", "output"): "classifier.input",
                       ("classifier", "output"): "sink.input"}
    seen = set()
    for name, svc in services.items():
        command = h.service_command(svc)
        cfg = h.build_config(command, svc.get("environment") or {})
        for field, host, port in h.connections(cfg):
            target = binds.get((host, port))
            assert target == expected_target[(command, field)], (
                f"{name}.{field} connects to {host}:{port}, which is {target!r}")
            seen.add(target)
    assert seen == set(expected_target.values())


def test_gpu_override_reserves_gpus_for_detector_and_classifier_only():
    # Given the GPU override, then detector and classifier build VARIANT=gpu and reserve an
    # NVIDIA GPU, and capture and sink stay on the CPU image.
    model = h.load_compose(h.COMPOSE, h.COMPOSE_GPU)
    for name, svc in model["services"].items():
        devices = (svc.get("deploy", {}).get("resources", {}).get("reservations", {})
                   .get("devices", []))
        if name in ("detector", "classifier"):
            assert svc["build"]["args"]["VARIANT"] == "gpu"
            assert svc["image"].endswith(":gpu")
            assert devices and devices[0]["driver"] == "nvidia"
            assert "gpu" in devices[0]["capabilities"]
        else:
            assert not devices, name


def test_sink_publishes_mjpeg_page_and_output_volume():
    # Given the base file, then the sink's HTTP port is published and out_dir is a volume.
    sink = h.load_compose(h.COMPOSE)["services"]["sink"]
    port = http_port(sink)
    assert any(p.endswith(f":{port}") for p in sink["ports"])
    out_dir = sink["environment"]["AGEGENDER_SINK_OUT_DIR"]
    assert any(v.split(":")[1] == out_dir for v in sink["volumes"])


def test_prometheus_scrapes_every_service_on_its_http_port():
    # Given prometheus.yml, then each compose service running agegender is discovered by its
    # name on the port its config serves.
    import yaml
    prom = yaml.safe_load((h.DEPLOY / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "agegender")
    scraped = {(n, sd["port"]) for sd in job["dns_sd_configs"] for n in sd["names"]}
    model = h.load_compose(h.COMPOSE)  # profiles: all services are in the model
    for name, svc in agegender_services(model).items():
        assert (name, http_port(svc)) in scraped, name
    assert {n for n, _ in scraped} <= set(model["services"])


def test_dockerfile_final_stage_is_non_root_without_build_tools():
    # Given deploy/Dockerfile, when its stages are read, then the final stage runs
    # `agegender` as a non-root user with a /healthz check, copies the venv from the build
    # stage and installs no compiler.
    dockerfile_parse = pytest.importorskip("dockerfile_parse")
    parser = dockerfile_parse.DockerfileParser(str(h.DEPLOY / "Dockerfile"))
    instructions = parser.structure
    froms = [i for i, ins in enumerate(instructions) if ins["instruction"] == "FROM"]
    assert len(froms) >= 2, "multi-stage build expected"
    final = instructions[froms[-1]:]
    text = {ins["instruction"]: ins["value"] for ins in final}
    user = text["USER"].split(":")[0]
    assert user not in ("root", "0")
    assert "agegender-healthcheck" in text["HEALTHCHECK"]
    assert "agegender" in text["ENTRYPOINT"]
    runs = " ".join(ins["value"] for ins in final if ins["instruction"] == "RUN")
    for tool in ("build-essential", "gcc", "g++", "make ", "-dev "):
        assert tool not in runs, f"final stage installs {tool!r}"
    copies = [ins["value"] for ins in final if ins["instruction"] == "COPY"]
    assert any(c.startswith("--from=build") and "/opt/venv" in c for c in copies)
    assert any(" models " in f" {c} " or c.endswith("models ./models") for c in copies)
    # every local COPY source exists (README.md is the lead's and may land later)
    for ins in instructions:
        if ins["instruction"] == "COPY" and "--from" not in ins["value"]:
            for src in [s for s in ins["value"].split()[:-1] if not s.startswith("--")]:
                if src != "README.md":
                    assert (h.ROOT / src).exists(), f"COPY source {src} missing"


def test_dockerignore_keeps_local_state_out_of_the_build_context():
    lines = {ln.strip() for ln in (h.ROOT / ".dockerignore").read_text().splitlines()}
    for pattern in (".venv", ".git", ".pytest_cache", ".hypothesis", "out", "tests"):
        assert pattern in lines, pattern


def test_deploy_doc_lists_every_environment_variable():
    # Given docs/deploy.md, then every AGEGENDER_<SERVICE>_<FIELD> of every service appears.
    doc = h.DEPLOY_DOC.read_text()
    missing = sorted(v for c in h.PIPELINE for v in h.env_names(c) if v not in doc)
    assert not missing, f"docs/deploy.md misses {missing}"


def test_compose_knobs_are_documented():
    # Given the ${VAR} knobs in the compose files, then docs/deploy.md explains each.
    doc = h.DEPLOY_DOC.read_text()
    knobs = set()
    for f in [h.COMPOSE, h.COMPOSE_GPU]:
        knobs |= set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", f.read_text()))
    missing = sorted(k for k in knobs if k not in doc)
    assert not missing, f"docs/deploy.md misses {missing}"


def test_deploy_doc_config_reference_is_current():
    # Given the generated configuration reference, then it matches the config classes
    # (defaults and descriptions included).
    import importlib.util
    spec = importlib.util.spec_from_file_location("config_reference",
                                                  h.DEPLOY / "config_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = h.DEPLOY_DOC.read_text()
    assert mod.update(text) == text, "run: python deploy/config_reference.py"


def test_mqtt_profile_points_the_sink_at_its_broker():
    # Given the base file, when the sink's MQTT output is switched on (as the comment says),
    # then its broker URL names the profile's Mosquitto 2 service, on the port its
    # configuration listens on, and the output stays off by default
    from services.sink.mqtt_config import broker_address
    model = h.load_compose(h.COMPOSE)
    env = model["services"]["sink"]["environment"]
    assert h.build_config("sink", env).mqtt is False
    cfg = h.build_config("sink", {**env, "AGEGENDER_SINK_MQTT": "true"})
    address = broker_address(cfg.mqtt_url)
    broker = model["services"][address.host]
    assert broker["profiles"] == ["mqtt"] and broker["image"] == "eclipse-mosquitto:2"
    conf = (h.DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    assert f"listener {address.port}" in conf
