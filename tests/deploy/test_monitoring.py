"""Metrics catalogue, Grafana dashboard and Prometheus rules: valid, and every metric they
use is catalogued; the catalogue matches the metrics the code defines."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from common.metrics import StageMetrics
from tests.deploy import helpers as h

DASHBOARD = h.DEPLOY / "grafana" / "dashboards" / "agegender.json"
ALERTS = h.DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS = h.DEPLOY / "prometheus" / "prometheus.yml"
REQUIRED = {  # issue 4: the signals the catalogue must carry
    "agegender_frames_captured_total", "agegender_frames_dropped_total",
    "agegender_source_up", "agegender_source_reconnects_total",
    "agegender_faces_detected_total", "agegender_classifier_batch_size",
    "agegender_inference_seconds", "agegender_stage_seconds", "agegender_e2e_latency_seconds",
    "agegender_frame_age_seconds", "agegender_queue_depth",
    "agegender_messages_malformed_total", "agegender_process_restarts_total",
}


@pytest.fixture(scope="module")
def catalogue():
    return h.catalogue()


def test_catalogue_follows_the_naming_conventions(catalogue):
    # Given the catalogue, then names carry the prefix and units, counters end in _total and
    # nothing else does, and labels come from the bounded set.
    assert REQUIRED <= set(catalogue), sorted(REQUIRED - set(catalogue))
    bounded = {"stage", "kind", "reason", "stream", "model", "service", "output", "gender",
               "age_band"}  # gender and age_band: 3 and 8 values (docs/metrics.md)
    for e in catalogue.values():
        assert e.name.endswith("_total") == (e.type == "counter"), e.name
        if e.type == "histogram" and e.unit == "seconds":
            assert e.name.endswith("_seconds"), e.name
        assert e.labels <= bounded, (e.name, e.labels)
        assert e.meaning, e.name


def test_catalogue_lists_every_shared_stage_metric(catalogue):
    # Given StageMetrics (common/metrics.py), then each metric it registers is catalogued for
    # all four services with the same type and labels.
    reg = StageMetrics("detector").registry
    for family in reg.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert name in catalogue, name
        e = catalogue[name]
        assert e.type == family.type and set(e.services) == set(h.PIPELINE), name
        labels = {k for s in family.samples for k in s.labels if k != "le"}
        assert labels == e.labels, (name, labels)


def defined_metric_names() -> set[str]:
    """``agegender_*`` names passed to Counter/Gauge/Histogram/Summary in services/, common/."""
    names = set()
    pattern = re.compile(r"(?:Counter|Gauge|Histogram|Summary)\(\s*[\"'](agegender_[a-z0-9_]+)")
    paths = [*(h.ROOT / "services").rglob("*.py"), *(h.ROOT / "common").rglob("*.py")]
    assert paths
    for path in paths:
        names |= set(pattern.findall(path.read_text()))
    return names


def test_every_metric_defined_in_the_services_is_catalogued(catalogue):
    # Given the service code, then no metric is defined that the catalogue does not list.
    missing = sorted(defined_metric_names() - set(catalogue))
    assert not missing, f"add to docs/metrics.md: {missing}"


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def test_dashboard_is_the_generated_json_with_the_required_panels(catalogue):
    # Given the committed dashboard, then it equals make_dashboard.py's output, has unique
    # panel ids, uses the provisioned data source, and shows the panels.
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "make_dashboard", h.DEPLOY / "grafana" / "make_dashboard.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert DASHBOARD.read_text() == mod.render(), "run deploy/grafana/make_dashboard.py"
    board = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    ds = yaml.safe_load((h.DEPLOY / "grafana" / "provisioning" / "datasources" /
                         "prometheus.yml").read_text())["datasources"][0]
    assert all(p["datasource"]["uid"] == ds["uid"] for p in board["panels"])
    exprs = "\n".join(dashboard_exprs())
    assert "rate(agegender_frames_captured_total" in exprs          # fps per stream
    for q in ("0.5", "0.95", "0.99"):                                 # e2e p50/p95/p99
        assert f"histogram_quantile({q}, sum by (le) (rate(agegender_e2e_latency_seconds_bucket" in exprs
    assert "sum by (stage, reason) (rate(agegender_frames_dropped_total" in exprs
    assert "agegender_classifier_batch_size" in exprs and "agegender_source_up" in exprs


def test_dashboard_metrics_are_catalogued(catalogue):
    used = set().union(*(h.metric_names_in(e, catalogue) for e in dashboard_exprs()))
    assert used, "no metric found in the dashboard"
    assert not used - set(catalogue), sorted(used - set(catalogue))


def alert_rules() -> list[dict]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def test_alert_rules_cover_latency_sources_and_drops(catalogue):
    rules = {r["alert"]: r for r in alert_rules()}
    assert "0.5" in rules["AgegenderE2ELatencyOverBudget"]["expr"]
    assert "agegender_source_up" in rules["AgegenderSourceDown"]["expr"]
    assert "agegender_frames_dropped_total" in rules["AgegenderFrameDropsRising"]["expr"]
    for r in rules.values():
        assert r["labels"]["severity"] in ("warning", "critical")
        assert r["annotations"]["summary"] and r["annotations"]["description"]


def test_alert_metrics_are_catalogued(catalogue):
    used = set().union(*(h.metric_names_in(r["expr"], catalogue) for r in alert_rules()))
    assert not used - set(catalogue), sorted(used - set(catalogue))


def promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    return exe


def test_promtool_accepts_config_and_rules():
    for args in (["check", "config", str(PROMETHEUS)], ["check", "rules", str(ALERTS)]):
        res = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr


def test_alert_rules_fire_in_promtool_unit_tests():
    # Given synthetic series (latency over budget, a camera down, drops jumping), when
    # promtool evaluates the rules, then the expected alerts fire and no others.
    res = subprocess.run([promtool(), "test", "rules",
                          str(h.DEPLOY / "prometheus" / "alerts_test.yml")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
