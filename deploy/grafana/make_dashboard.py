#!/usr/bin/env python3
"""Write deploy/grafana/dashboards/agegender.json (the provisioned Grafana dashboard).

The dashboard is generated so panels stay uniform; edit this script, run it, commit both.
``tests/deploy`` checks that the committed JSON equals this script's output and that every
metric it queries is in docs/metrics.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards" / "agegender.json"
DS = {"type": "prometheus", "uid": "agegender-prometheus"}


def panel(pid, title, targets, x, y, w=12, h=8, kind="timeseries", unit="short",
          description="", **field_defaults):
    """One panel; ``targets`` is a list of ``(promql, legend)``."""
    return {
        "id": pid, "type": kind, "title": title, "description": description,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [{"refId": chr(ord("A") + i), "datasource": DS, "expr": expr,
                     "legendFormat": legend}
                    for i, (expr, legend) in enumerate(targets)],
        "fieldConfig": {"defaults": {"unit": unit, **field_defaults}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom",
                               "calcs": ["lastNotNull", "max"]}} if kind == "timeseries" else {},
    }


def quantiles(metric, by=""):
    """p50/p95/p99 of a histogram over 1 m windows, optionally per label."""
    group = f"le{', ' + by if by else ''}"
    suffix = f" {{{{{by}}}}}" if by else ""
    return [(f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket[1m])))",
             f"p{int(q * 100)}{suffix}") for q in (0.5, 0.95, 0.99)]


def dashboard() -> dict:
    """The dashboard as a dict (Grafana schema 39)."""
    p = [
        panel(1, "Frames per second by stream",
              [("sum by (stream) (rate(agegender_frames_captured_total[1m]))", "{{stream}}")],
              0, 0, unit="fps", description="Frames captured and sent downstream per second."),
        panel(2, "End-to-end latency (capture to sink)",
              quantiles("agegender_e2e_latency_seconds"), 12, 0, unit="s",
              description="Budget: 0.5 s at p95 (alert AgegenderE2ELatencyOverBudget).",
              custom={"thresholdsStyle": {"mode": "line"}},
              thresholds={"mode": "absolute", "steps": [
                  {"color": "green", "value": None}, {"color": "red", "value": 0.5}]}),
        panel(3, "Frames dropped by stage and reason",
              [("sum by (stage, reason) (rate(agegender_frames_dropped_total[1m]))",
                "{{stage}} {{reason}}")], 0, 8, unit="fps",
              description="Lossy by design; a rising rate means a stage cannot keep up."),
        panel(4, "Source status", [("agegender_source_up", "{{stream}}")], 12, 8, w=6,
              kind="stat", description="1 = delivering frames, 0 = down or ended.",
              mappings=[{"type": "value", "options": {
                  "0": {"text": "DOWN", "color": "red"}, "1": {"text": "UP", "color": "green"}}}],
              thresholds={"mode": "absolute", "steps": [
                  {"color": "red", "value": None}, {"color": "green", "value": 1}]}),
        panel(5, "Source reconnects (15 m)",
              [("sum by (stream) (increase(agegender_source_reconnects_total[15m]))",
                "{{stream}}")], 18, 8, w=6, kind="stat"),
        panel(6, "Classifier batch fill (crops per model call)",
              [("sum(rate(agegender_classifier_batch_size_sum[1m])) / "
                "sum(rate(agegender_classifier_batch_size_count[1m]))", "mean"),
               *quantiles("agegender_classifier_batch_size")[1:2]],
              0, 16, description="Mean and p95 batch size; compare with max_batch."),
        panel(7, "Classifier inference time per call",
              quantiles("agegender_inference_seconds", "model"), 12, 16, unit="s"),
        panel(8, "Faces per second",
              [("sum(rate(agegender_faces_detected_total[1m]))", "detected"),
               ("sum by (model) (rate(agegender_faces_classified_total[1m]))",
                "classified {{model}}")], 0, 24, unit="short"),
        panel(9, "Stage processing time p95",
              [("histogram_quantile(0.95, sum by (le, stage) "
                "(rate(agegender_stage_seconds_bucket[1m])))", "{{stage}}")], 12, 24, unit="s"),
        panel(10, "Frame age at receive p95 (per stage)",
              [("histogram_quantile(0.95, sum by (le, stage) "
                "(rate(agegender_frame_age_seconds_bucket[1m])))", "{{stage}}")], 0, 32,
              unit="s", description="now - t_capture when a stage receives a frame."),
        panel(11, "Queue depth per stage", [("sum by (stage) (agegender_queue_depth)",
                                             "{{stage}}")], 12, 32),
        panel(12, "Malformed messages by stage and reason",
              [("sum by (stage, reason) (rate(agegender_messages_malformed_total[5m]))",
                "{{stage}} {{reason}}")], 0, 40, unit="short"),
        panel(13, "Messages through each stage",
              [("sum by (stage, kind) (rate(agegender_messages_sent_total[1m]))",
                "sent {{stage}} {{kind}}"),
               ("sum by (stage, kind) (rate(agegender_messages_received_total[1m]))",
                "received {{stage}} {{kind}}")], 12, 40),
        panel(14, "Seconds since each loop ticked",
              [("time() - agegender_heartbeat_timestamp_seconds", "{{stage}}")], 0, 48,
              unit="s", description="/healthz fails past heartbeat_timeout_s."),
        panel(15, "Process restarts and stalls (agegender run, 1 h)",
              [("sum by (service) (increase(agegender_process_restarts_total[1h]))",
                "restarts {{service}}"),
               ("sum by (service) (increase(agegender_process_stalls_total[1h]))",
                "stalls {{service}}")], 12, 48, kind="stat"),
        panel(16, "People counted by gender and age band (1 h)",
              [("sum by (gender, age_band) (increase(agegender_people_total[1h]))",
                "{{gender}} {{age_band}}")], 0, 56, kind="barchart",
              description="One per person event (a face track that ended), by fused gender "
              "and age band (docs/metrics.md)."),
        panel(17, "People in view and dwell time",
              [("sum by (stream) (agegender_people_in_view)", "in view {{stream}}"),
               ("histogram_quantile(0.5, sum by (le, stream) "
                "(rate(agegender_person_dwell_seconds_bucket[15m])))",
                "median dwell s {{stream}}")], 12, 56,
              description="Open face tracks now, and the median time a counted person "
              "stayed (seconds)."),
        panel(18, "Classifier work saved by the tracker's schedule",
              [("sum(rate(agegender_faces_detected_total[5m]))", "faces detected /s"),
               ("sum(rate(agegender_faces_classified_total[5m]))", "faces classified /s")],
              0, 64, description="The detector classifies a track's first face, clearly "
              "better faces and one per classify_every frames; the rest are followed only."),
    ]
    return {
        "uid": "agegender-pipeline",
        "title": "agegender pipeline",
        "description": "Capture, detector, classifier and sink: throughput, latency, drops, "
                       "sources, batching. Metrics: docs/metrics.md.",
        "tags": ["agegender"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "5s",
        "time": {"from": "now-15m", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "panels": p,
    }


def render() -> str:
    """The dashboard JSON text exactly as committed."""
    return json.dumps(dashboard(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}", file=sys.stderr)
