"""The run's summary: counts scraped from the services' metrics, and its printed form."""

from __future__ import annotations

from pathlib import Path


def parse_metrics(text: str):
    """Yield ``(metric_name, "stage/reason", value)`` for labelled counter samples in a
    Prometheus text exposition (parsed with ``prometheus_client.parser``)."""
    if not text:
        return
    from prometheus_client.parser import text_string_to_metric_families
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            if sample.name.endswith("_total") and "reason" in sample.labels:
                key = f"{sample.labels.get('stage', '?')}/{sample.labels['reason']}"
                yield sample.name, key, sample.value


def written_outputs(out_dir: Path | None) -> list[str]:
    """The annotated videos and events file the sink actually wrote (absolute paths)."""
    if out_dir is None:
        return []
    out = Path(out_dir).resolve()
    return [str(p) for p in [*sorted(out.glob("annotated*.mp4")), out / "events.jsonl"]
            if p.is_file()]


def build_summary(status: dict, metrics: dict[str, str], restarts: dict[str, int],
                  elapsed_s: float, gave_up: str | None = None, refused: dict | None = None,
                  outputs: list[str] | None = None, stalls: list[dict] | None = None) -> dict:
    """Frames, faces, fps, e2e latency percentiles (s), drops and malformed messages
    by stage and reason, restarts by service.

    Args:
        status: the sink's last status (:mod:`services.sink.stats`).
        metrics: each service's last Prometheus text.
        restarts: restarts by service.
        elapsed_s: wall-clock duration of the run (seconds).
        gave_up: the service the watchdog gave up on.
        refused: ``{"service", "error"}`` of a refusal.
        outputs: files the sink wrote.
        stalls: ``{"service", "reason", "t"}`` of each stall the watchdog found.
    """
    drops: dict[str, float] = {}
    malformed: dict[str, float] = {}
    for text in metrics.values():
        for name, key, value in parse_metrics(text):
            if value and name == "agegender_frames_dropped_total":
                drops[key] = drops.get(key, 0) + value
            elif value and name == "agegender_messages_malformed_total":
                malformed[key] = malformed.get(key, 0) + value
    frames = status.get("frames", 0)
    return {
        "frames": frames, "faces": status.get("faces", 0),
        "faces_per_frame": (status.get("faces", 0) / frames) if frames else 0.0,
        "fps": status.get("fps", 0.0), "elapsed_s": elapsed_s,
        "latency_s": status.get("latency_s", {}), "streams": status.get("streams", {}),
        "drops": drops, "malformed": malformed, "restarts": dict(restarts),
        "gave_up": gave_up, "refused": refused, "outputs": list(outputs or []),
        "stalls": list(stalls or []),
    }


def format_summary(s: dict) -> str:
    """Human-readable summary lines."""
    lat = s.get("latency_s") or {}

    def ms(key):
        """Latency percentile ``key`` in milliseconds, or '-' when unknown."""
        v = lat.get(key)
        return "-" if v is None else f"{v * 1000:.0f} ms"

    def counts(d):
        """``{label: count}`` as 'label n, ...' or 'none'."""
        return ", ".join(f"{k} {v:g}" for k, v in sorted(d.items())) or "none"

    lines = [
        "agegender run summary",
        f"  frames       {s['frames']}  ({counts(s.get('streams', {}))})",
        f"  faces        {s['faces']}  ({s['faces_per_frame']:.2f} per frame)",
        f"  fps          {s['fps']:.1f}  (over {s['elapsed_s']:.1f} s wall clock)",
        f"  e2e latency  p50 {ms('p50')}  p95 {ms('p95')}  p99 {ms('p99')}",
        f"  drops        {counts(s['drops'])}",
        f"  malformed    {counts(s['malformed'])}",
        f"  restarts     {counts({k: v for k, v in s['restarts'].items() if v})}",
    ]
    stalled: dict[str, int] = {}
    for event in s.get("stalls") or []:
        stalled[event["service"]] = stalled.get(event["service"], 0) + 1
    if stalled:
        last = (s["stalls"])[-1]
        lines.append(f"  STALLED      {counts(stalled)} (killed and restarted; last: "
                     f"{last['service']}, {last['reason']})")
    if s.get("gave_up"):
        lines.append(f"  GAVE UP on   {s['gave_up']} (crashed too often)")
    if s["frames"] == 0 and not s.get("refused"):
        lines.append("  WARNING      no frame reached the sink (see drops above)")
    if s.get("refused"):
        lines.append(f"  FAILED       {s['refused']['service']}: {s['refused']['error']}")
    if s.get("outputs"):
        lines.append(f"  outputs      {', '.join(s['outputs'])}")
    return "\n".join(lines)
