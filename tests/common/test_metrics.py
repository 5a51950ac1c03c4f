"""Shared metrics: drop reasons created at zero, the one inference-time histogram."""

from __future__ import annotations

from common.metrics import FRAME_DROP_REASONS, StageMetrics, inference_seconds


def test_shutdown_is_a_drop_reason_created_at_zero():
    m = StageMetrics("classifier")
    assert "shutdown" in FRAME_DROP_REASONS
    get = m.registry.get_sample_value
    assert get("agegender_frames_dropped_total",
               {"stage": "classifier", "reason": "shutdown"}) == 0
    m.drop("shutdown", 3)
    assert get("agegender_frames_dropped_total",
               {"stage": "classifier", "reason": "shutdown"}) == 3


def test_inference_seconds_is_declared_once_per_registry_with_its_labels():
    m = StageMetrics("detector")
    child = inference_seconds(m.registry, "detector", "ssd")
    get = m.registry.get_sample_value
    labels = {"stage": "detector", "model": "ssd"}
    assert get("agegender_inference_seconds_count", labels) == 0    # created at zero
    child.observe(0.02)
    assert get("agegender_inference_seconds_count", labels) == 1
    assert get("agegender_inference_seconds_bucket", dict(labels, le="0.025")) == 1
