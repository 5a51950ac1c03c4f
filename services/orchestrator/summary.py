"""The run's summary: counts scraped from the services' metrics, and its printed form."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from common.redact import redact_obj

log = logging.getLogger("agegender.run")


#: The summary's JSON file in the output folder.
SUMMARY_NAME = "summary.json"


def write_summary_file(path: Path, summary: dict) -> None:
    """Write the summary as JSON to ``path`` (atomic replace; a failure is logged)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, path)
    except OSError as exc:
        log.error("could not write the summary to %s: %s", path, exc)


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


def video_readable(path: Path) -> bool:
    """True when OpenCV opens the video and decodes its first frame (a file whose writer
    was killed before it wrote the MP4 index is not)."""
    import cv2
    cap = cv2.VideoCapture(str(path))
    try:
        return bool(cap.isOpened() and cap.read()[0])
    finally:
        cap.release()


def written_outputs(out_dir: Path | None, since: float = 0.0
                    ) -> tuple[list[str], list[str]]:
    """``(outputs, unreadable)``: the annotated videos, events and people files the sink
    wrote that can be read (absolute paths; an empty JSON Lines file is not an output, nor
    a file
    last written before ``since``, Unix seconds: an earlier run's), and the videos left
    unreadable (a sink killed while writing them)."""
    if out_dir is None:
        return [], []
    out = Path(out_dir).resolve()

    def fresh(p: Path) -> bool:
        """Whether ``p`` is a file written by this run (modified at or after ``since``)."""
        return p.is_file() and p.stat().st_mtime >= since

    videos = [p for p in sorted(out.glob("annotated*.mp4")) if fresh(p)]
    readable = [p for p in videos if video_readable(p)]
    extra = [p for p in (out / "events.jsonl", out / "people.jsonl")
             if fresh(p) and p.stat().st_size > 0]
    return ([str(p) for p in readable + extra],
            [str(p) for p in videos if p not in readable])


def people_counts(path: Path | None) -> dict | None:
    """``{"total": n, "by_gender": {gender: n}}`` of a people.jsonl (one person event a
    line; a torn or unreadable line is skipped), or ``None`` when there is no such file."""
    if path is None or not path.is_file():
        return None
    by_gender: dict[str, int] = {}
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            gender = json.loads(line).get("gender") or "unknown"
        except (ValueError, AttributeError):
            continue
        by_gender[gender] = by_gender.get(gender, 0) + 1
    return {"total": sum(by_gender.values()), "by_gender": by_gender}


def small_face_streams(text: str):
    """Yield the streams the detector warned about (``agegender_detector_small_face_
    warnings_total{stream}`` above 0 in a Prometheus text exposition): faces narrower
    than ``expected_min_face_px`` are missed at their frame size."""
    if not text:
        return
    from prometheus_client.parser import text_string_to_metric_families
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            if sample.name == "agegender_detector_small_face_warnings_total" \
                    and sample.value > 0 and "stream" in sample.labels:
                yield sample.labels["stream"]


def build_summary(status: dict, metrics: dict[str, str], restarts: dict[str, int],
                  elapsed_s: float, gave_up: str | None = None, refused: dict | None = None,
                  outputs: list[str] | None = None, stalls: list[dict] | None = None,
                  unreadable: list[str] | None = None, capture: dict | None = None,
                  people: dict | None = None) -> dict:
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
        unreadable: videos a killed sink left unreadable.
        people: :func:`people_counts` of the run's people.jsonl (``None``: none written).
        capture: capture's last status (:func:`services.capture.playback.write_status`):
            live sources' states go to ``sources``, files skipped and why to ``skipped``,
            video files that ended short of the frames they state to ``short_files``.

    ``fps`` is over the frames' own span at the sink (first to last frame, ``span_s``),
    not over the run's wall clock with its start-up; ``per_stream`` has each stream's
    frames, fps and ``gap`` (seqs of a file stream that never reached the sink: frames
    lost with a killed process); ``sink_breaks`` the earlier sink processes a restarted
    sink continued from.

    Every string in it (stream names, the refusal, paths, source errors) is passed
    through :func:`common.redact.redact`: the summary is printed and written to
    ``--summary-json`` and ``OUT/summary.json``.

    ``drops`` also has the sink's MQTT events not delivered (``mqtt/<reason>``, e.g.
    ``mqtt/closed``: still waiting for an absent broker when the sink stopped).
    """
    drops: dict[str, float] = {}
    malformed: dict[str, float] = {}
    for text in metrics.values():
        for name, key, value in parse_metrics(text):
            if value and name == "agegender_frames_dropped_total":
                drops[key] = drops.get(key, 0) + value
            elif value and name == "agegender_messages_malformed_total":
                malformed[key] = malformed.get(key, 0) + value
            elif value and name == "agegender_mqtt_dropped_total":  # events, not frames
                key = "mqtt/" + key.split("/", 1)[1]
                drops[key] = drops.get(key, 0) + value
    small_faces = sorted({stream for text in metrics.values()
                          for stream in small_face_streams(text)})
    frames = status.get("frames", 0)
    per_stream = {name: {"frames": st.get("frames", 0), "fps": st.get("fps", 0.0),
                         "gap": 0 if st.get("live") else st.get("missing", 0),
                         "live": bool(st.get("live"))}
                  for name, st in (status.get("stream_stats") or {}).items()}
    return redact_obj({
        "frames": frames, "faces": status.get("faces", 0),
        "faces_per_frame": (status.get("faces", 0) / frames) if frames else 0.0,
        "fps": status.get("fps", 0.0), "span_s": status.get("span_s", 0.0),
        "elapsed_s": elapsed_s,
        "latency_s": status.get("latency_s", {}), "streams": status.get("streams", {}),
        "per_stream": per_stream, "sink_breaks": list(status.get("breaks") or []),
        "unreadable": list(unreadable or []),
        "sources": {name: {k: st.get(k) for k in ("state", "since", "reconnects",
                                                   "last_error", "frames_read", "sent")}
                    for name, st in ((capture or {}).get("streams") or {}).items()
                    if st.get("live")},
        "skipped": list((capture or {}).get("skipped") or []),
        "short_files": {name: {k: st.get(k) for k in ("stated_frames", "short", "damaged")}
                        for name, st in ((capture or {}).get("streams") or {}).items()
                        if st.get("short")},
        "small_faces": small_faces,
        "drops": drops, "malformed": malformed, "restarts": dict(restarts),
        "gave_up": gave_up, "refused": refused, "outputs": list(outputs or []),
        "stalls": list(stalls or []), "people": people,
    })


#: Skipped input files listed one per line in the printed summary (all are in the JSON).
MAX_SKIPPED_SHOWN = 10


def plural(n: int, word: str, words: str | None = None) -> str:
    """``"1 face"``, ``"2 faces"``: ``n`` and the word in the number ``n`` calls for."""
    return f"{n} {word if n == 1 else (words or word + 's')}"


def source_state(name: str, src: dict, now: float | None = None) -> str:
    """A live source's state in words: ``"cam0 down since 22:41:03 (for 12 s), never up;
    reconnect attempt 4; last error: cannot open rtsp://127.0.0.1:8599/x"``."""
    import time
    state = src.get("state") or "?"
    text = f"{name} {state}"
    since = src.get("since")
    if isinstance(since, (int, float)):
        now = time.time() if now is None else now
        text += (f" since {time.strftime('%H:%M:%S', time.localtime(since))} "
                 f"(for {max(now - since, 0):.0f} s)")
    if not src.get("frames_read"):
        text += ", never up"
    if src.get("reconnects"):
        text += f"; reconnect attempt {src['reconnects']}"
    if src.get("last_error"):
        text += f"; last error: {src['last_error']}"
    return text


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
    ]
    if s.get("people") is not None:
        lines.append(f"  people       {s['people']['total']}  "
                     f"({counts(s['people']['by_gender'])}; people.jsonl)")
    lines += [
        f"  fps          {s['fps']:.1f}  (frames at the sink over {s.get('span_s', 0):.1f} "
        f"s from the first to the last; run {s['elapsed_s']:.1f} s in all)",
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
    per_stream = s.get("per_stream") or {}
    if len(per_stream) > 1:
        lines.append("  per stream   " + ", ".join(
            f"{k} {v['frames']} ({v['fps']:.1f} fps)" for k, v in sorted(per_stream.items())))
    gaps = {k: v["gap"] for k, v in per_stream.items() if v.get("gap")}
    if gaps:
        lines.append(f"  LOST         {counts(gaps)} (frames sent that never reached the "
                     "sink, by stream: lost with a killed or restarted service)")
    for b in s.get("sink_breaks") or []:
        lines.append(f"  sink break   a restarted sink continued after "
                     f"{plural(b['frames'], 'frame')} (next seq "
                     f"{counts(b.get('next_seq') or {})})")
    if s.get("unreadable"):
        lines.append(f"  UNREADABLE   {', '.join(s['unreadable'])} (not an output: its "
                     "writer was killed, or could not finish it, before the index)")
    if s.get("gave_up"):
        lines.append(f"  GAVE UP on   {s['gave_up']} (crashed too often)")
    for name, src in sorted((s.get("sources") or {}).items()):
        if src.get("state") != "up" or not src.get("frames_read"):
            lines.append(f"  SOURCE       {source_state(name, src)}")
    for name in s.get("small_faces") or []:
        lines.append(f"  SMALL FACES  {name}: at its frame size the detector misses faces "
                     "narrower than expected_min_face_px (detector settings tiles, "
                     "max_tile_side: docs/detectors.md)")
    for name, f in sorted((s.get("short_files") or {}).items()):
        lines.append(f"  SHORT        {name}: the file ended after "
                     f"{f['stated_frames'] - f['short']} of the {f['stated_frames']} frames "
                     f"it states ({plural(f.get('damaged') or 0, 'damaged frame')} skipped, "
                     "decode_error)")
    skipped = s.get("skipped") or []
    for item in skipped[:MAX_SKIPPED_SHOWN]:
        lines.append(f"  SKIPPED      {item['file']}: {item['reason']}")
    if len(skipped) > MAX_SKIPPED_SHOWN:
        lines.append(f"  SKIPPED      ... and {plural(len(skipped) - MAX_SKIPPED_SHOWN, 'more file')}"
                     " (all of them in summary.json / --summary-json)")
    if s["frames"] == 0 and not s.get("refused"):
        down = [k for k, v in (s.get("sources") or {}).items() if not v.get("frames_read")]
        why = (f": source {', '.join(sorted(down))} never delivered one (see SOURCE above)"
               if down else " (see drops above)" if s.get("drops") else "")
        lines.append(f"  WARNING      no frame reached the sink{why}")
    if s.get("refused"):
        lines.append(f"  FAILED       {s['refused']['service']}: {s['refused']['error']}")
    if s.get("outputs"):
        lines.append(f"  outputs      {', '.join(s['outputs'])}")
    return "\n".join(lines)
