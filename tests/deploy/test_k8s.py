"""Kubernetes manifests: kustomize renders each overlay, every object validates against the
Kubernetes OpenAPI schemas offline (kubernetes-validate bundles them), and the containers
use only real commands, config variables and ports."""

from __future__ import annotations

import copy
import shutil
import subprocess

import pytest
import yaml

from services import cli
from tests.deploy import helpers as h

kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
K8S_VERSION = "1.30.0"
OVERLAYS = sorted(p.parent.name for p in (h.K8S / "overlays").glob("*/kustomization.yaml"))
BASE_FILES = sorted(p for p in (h.K8S / "base").glob("*.yaml") if p.name != "kustomization.yaml")


def kustomize_command() -> list[str]:
    """``kubectl kustomize`` (kustomize is built into kubectl) or a standalone kustomize."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    pytest.skip("neither kustomize nor kubectl is installed; base manifests are still "
                "validated file by file")


def render(overlay: str) -> list[dict]:
    """The overlay's objects as kustomize renders them (offline)."""
    res = subprocess.run(kustomize_command() + [str(h.K8S / "overlays" / overlay)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return [d for d in yaml.safe_load_all(res.stdout) if d]


def validate(doc: dict) -> None:
    """Strict schema validation (unknown fields are errors)."""
    kv.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("path", BASE_FILES, ids=lambda p: p.name)
def test_base_manifests_validate(path):
    # Given each base manifest file, then every object in it passes strict schema validation.
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        validate(doc)


def test_validator_rejects_a_broken_manifest():
    # Given a valid Deployment with a misspelt field, then the validator refuses it
    # (the check above can fail).
    doc = yaml.safe_load((h.K8S / "base" / "sink.yaml").read_text().split("\n---")[0])
    bad = copy.deepcopy(doc)
    bad["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kv.ValidationError):
        validate(bad)


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request):
    return request.param, render(request.param)


def test_overlay_renders_and_validates(rendered):
    overlay, docs = rendered
    kinds = sorted(d["kind"] for d in docs)
    assert kinds.count("Deployment") + kinds.count("StatefulSet") >= 4, kinds
    for doc in docs:
        validate(doc)


def workloads(docs):
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]


def container_env(c: dict) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in c.get("env", [])}


def test_containers_use_real_commands_variables_and_ports(rendered):
    # Given each container, then it runs an agegender service subcommand, sets only that
    # config's variables (values validate), its http containerPort and scrape annotation
    # equal the config's HTTP port, and it has /healthz liveness and /readyz readiness probes.
    _, docs = rendered
    seen = set()
    for w in workloads(docs):
        pod = w["spec"]["template"]
        for c in pod["spec"]["containers"]:
            command = (c.get("args") or [None])[0]
            assert command in cli.SERVICES, f"{w['metadata']['name']}: {command!r}"
            seen.add(command)
            env = container_env(c)
            unknown = set(env) - h.env_names(command)
            assert not unknown, f"{w['metadata']['name']}: {sorted(unknown)}"
            cfg = h.build_config(command, env)
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            assert ports["http"] == cfg.http_port
            assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(cfg.http_port)
            assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert c["livenessProbe"]["httpGet"]["port"] in ("http", cfg.http_port)
            for field in ("input", "output"):
                if hasattr(cfg, field):
                    mode, addrs = h.endpoint_addresses(getattr(cfg, field))
                    if mode == "bind":
                        assert addrs[0][1] in ports.values(), f"{command}.{field} port"
            assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert seen == set(h.PIPELINE)


def test_connect_addresses_resolve_to_services_that_bind_them(rendered):
    # Given the rendered objects, when each connect address is resolved like cluster DNS
    # (Service name, or <pod>.<headless service> for StatefulSet pods), then it reaches a
    # workload of the expected next stage whose config binds that port.
    overlay, docs = rendered
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    by_labels = []
    for w in workloads(docs):
        c = w["spec"]["template"]["spec"]["containers"][0]
        command = c["args"][0]
        by_labels.append((w, command, h.build_config(command, container_env(c))))

    def target(host: str):
        pod_index = None
        if "." in host:  # StatefulSet pod: name-<i>.<service>
            pod, svc_name = host.split(".", 1)
            svc = services[svc_name]
            assert svc["spec"].get("clusterIP") == "None", f"{svc_name} must be headless"
            pod_index = int(pod.rsplit("-", 1)[1])
        else:
            svc = services[host]
        sel = svc["spec"]["selector"]
        matches = [(w, cmd, cfg) for w, cmd, cfg in by_labels
                   if all(w["spec"]["template"]["metadata"]["labels"].get(k) == v
                          for k, v in sel.items())]
        assert len(matches) == 1, f"{host}: selects {len(matches)} workloads"
        w = matches[0][0]
        if pod_index is not None:
            assert w["kind"] == "StatefulSet" and w["spec"]["serviceName"] == svc["metadata"]["name"]
            assert pod_index < w["spec"].get("replicas", 1), f"{host}: no such replica"
        return svc, matches[0]

    expected = {("detector", "input"): ("capture", "output"),
                ("detector", "output"): ("classifier", "input"),
                ("classifier", "output"): ("sink", "input")}
    for w, command, cfg in by_labels:
        for field, host, port in h.connections(cfg):
            svc, (_, tcommand, tcfg) = target(host)
            want_cmd, want_field = expected[(command, field)]
            assert tcommand == want_cmd, f"{overlay}: {command}.{field} -> {host}"
            bmode, baddrs = h.endpoint_addresses(getattr(tcfg, want_field))
            assert bmode == "bind" and baddrs[0][1] == port, f"{host}:{port}"
            assert port in [p["port"] for p in svc["spec"]["ports"]]


def test_gpu_overlay_requests_gpus_for_detector_and_classifier():
    if "gpu" not in OVERLAYS:
        pytest.skip("no gpu overlay")
    docs = render("gpu")
    for w in workloads(docs):
        c = w["spec"]["template"]["spec"]["containers"][0]
        gpus = c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
        if c["args"][0] in ("detector", "classifier"):
            assert gpus == 1 and c["image"].endswith(":gpu"), w["metadata"]["name"]
        else:
            assert gpus is None and c["image"].endswith(":cpu"), w["metadata"]["name"]
