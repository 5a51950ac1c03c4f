"""Capture's per-stream state (:class:`Playback`): opening and closing the sources,
pacing, resuming from a position file, and the status file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time

from common.streams import MAX_STREAM_NAME, parse_spec
from services.capture.finite import FiniteSource
from services.capture.live import LiveSource
from services.capture.metrics import CaptureMetrics
from services.capture.sources import open_source
from services.capture.spec import SourceFrame, SourceOptions

log = logging.getLogger("capture")


@dataclasses.dataclass
class Playback:
    """Per-stream state of the send loop."""

    source: FiniteSource | LiveSource
    period_s: float             # minimum seconds between two sent frames (0 = no pacing;
                                # finite sources: the nominal rate, see gap)
    due: float = 0.0            # monotonic time the next frame may be taken
    pending: SourceFrame | None = None  # frame waiting for its turn and room downstream
    pending_at: tuple = (0, 0, None)  # (position, pass, media) of the source after it
    sent: int = 0               # next seq (frames sent or lost before it)
    seq_base: int = 0           # live sources: seq = seq_base + the reader's frame index
    ended: bool = False

    @property
    def name(self) -> str:
        """The stream name."""
        return self.source.name


def open_sources(cfg, metrics: CaptureMetrics, notify: threading.Event) -> list:
    """Open every configured source (the demo when none is configured).

    Stream names are made unique by appending ``_2``, ``_3``... to repeats.

    Raises:
        FileNotFoundError, ValueError: a finite source cannot be opened.
    """
    options = SourceOptions.from_config(cfg)
    specs = list(cfg.sources) or ["demo"]
    if not cfg.sources:
        log.info("no --sources given: playing the built-in DEMO scene")
    sources, names = [], set()
    try:
        for i, spec in enumerate(specs):
            name, _ = parse_spec(spec, i)
            base, n = name, 1
            while name in names:
                n += 1
                name = f"{base[:MAX_STREAM_NAME - len(str(n)) - 1]}_{n}"
            names.add(name)
            sources.append(open_source(spec, options, metrics, index=i, notify=notify,
                                       name=name))
    except Exception:
        close_sources(sources)
        raise
    return sources


def close_sources(sources: list, wait_s: float = 1.0) -> None:
    """Close all sources; live readers get ``wait_s`` seconds in total to finish."""
    for s in sources:
        if isinstance(s, LiveSource):
            s.request_close()  # signal all first, then join with a shared deadline
    deadline = time.monotonic() + wait_s
    for s in sources:
        if isinstance(s, LiveSource):
            if not s.join(deadline - time.monotonic()):
                log.warning("stream %s: reader still inside a read; left behind (daemon)",
                            s.name)
        else:
            s.close()


def period(cfg, source) -> float:
    """Least seconds between two frames of ``source``: ``1 / max_fps``, and a finite
    source's nominal frame interval in real-time mode."""
    cap = 1.0 / cfg.max_fps if cfg.max_fps else 0.0
    if isinstance(source, LiveSource):
        return cap
    native = 1.0 / source.fps if cfg.realtime and source.fps else 0.0
    return max(native, cap)


def gap(cfg, frame) -> float:
    """Seconds from a finite source's frame to its next one: the frame's own media
    duration in real-time mode (variable frame rates are kept), at least ``1 / max_fps``."""
    cap = 1.0 / cfg.max_fps if cfg.max_fps else 0.0
    media = frame.duration_ns / 1e9 if cfg.realtime else 0.0
    return max(media, cap)


def resume(playbacks: list[Playback], records: dict[str, dict]) -> None:
    """Continue each stream where an earlier capture left it (its position file's
    records, :mod:`services.capture.position`): files at their next frame, every stream
    numbered from its next seq. Streams that had ended stay ended (their end of stream
    is sent again: the one before may have been lost with the process)."""
    for p in playbacks:
        rec = records.get(p.name)
        if rec is None:
            continue
        p.sent = rec["seq"]
        if p.source.live:
            p.seq_base = rec["seq"]
            log.info("stream %s: resuming live numbering at seq %d (position file)",
                     p.name, p.sent)
            continue
        if rec["ended"]:
            p.ended = True
            log.info("stream %s: had ended after seq %d (position file)", p.name, p.sent - 1)
            continue
        p.source.seek(rec["position"], rec["pass"], rec.get("media"))
        log.info("stream %s: resuming at position %d of pass %d, seq %d (position file)",
                 p.name, rec["position"], rec["pass"] + 1, p.sent)


def stream_status(p: Playback) -> dict:
    """One stream's entry of the status file (see :func:`write_status`)."""
    src = p.source
    entry = {"kind": src.kind, "live": src.live, "sent": p.sent}
    if src.live:
        entry.update(state=src.state.value, since=src.since, reconnects=src.reconnects,
                     last_error=src.last_error, frames_read=src.frames_read)
    else:
        entry.update(state="ended" if p.ended else "playing",
                     skipped=getattr(src, "skipped", 0))
        if getattr(src, "ended_early", 0):  # a video file shorter than it states
            entry.update(stated_frames=src.stated_frames, short=src.ended_early,
                         damaged=src.decoder.decode_errors)
    return entry


def write_status(path, playbacks: list[Playback], done: bool = False) -> None:
    """Write capture's status file (atomic replace; a failure is logged)::

        {"streams": {"<stream>": {"kind": str, "live": bool, "sent": int,
                                  "state": "playing" | "ended" (files) or the live
                                      source's state ("connecting", "up", "down",
                                      "reconnecting", "closed"),
                                  "since": float (Unix s, live), "reconnects": int (live),
                                  "last_error": str | null (live, URI redacted),
                                  "frames_read": int (live), "skipped": int (files),
                                  "stated_frames": int, "short": int, "damaged": int
                                      (a video file that ended short of the frame
                                      count it states: by how many, and how many
                                      damaged frames were skipped)}},
         "skipped": [{"stream": str, "file": str, "reason": str}] (files of image folders
             that could not be read, the first 1000 per folder),
         "done": bool, "time": float (Unix s)}

    ``agegender run`` reads it for the console (each live source's state) and the
    summary (sources down, files skipped and why).
    """
    skipped = [{"stream": p.name, "file": f, "reason": r} for p in playbacks
               for f, r in getattr(p.source, "skipped_files", [])]
    data = {"streams": {p.name: stream_status(p) for p in playbacks}, "skipped": skipped,
            "done": done, "time": time.time()}
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError as exc:
        log.error("cannot write the status file %s: %s", path, exc)
