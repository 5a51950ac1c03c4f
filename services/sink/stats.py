"""The sink's running statistics (frames, faces, fps, exact latency percentiles, per
stream: seq gaps) and the status file ``agegender run`` reads for its
progress bar and summary.

The status file is also what a restarted sink continues from (``append``): its counts,
each stream's next seq, and how much of events.jsonl it covered
(``events_bytes``), so frames written after the last status are counted from the
file's tail (:func:`services.sink.events.read_events_tail`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import deque
from pathlib import Path

import numpy as np

from common.redact import redact_obj


def percentiles(values, qs=(50, 95, 99)) -> dict:
    """``{"p50": ..., ...}`` of ``values`` (``None`` each when empty)."""
    if len(values) == 0:
        return {f"p{q}": None for q in qs}
    arr = np.asarray(values, dtype=np.float64)
    return {f"p{q}": float(np.percentile(arr, q)) for q in qs}


def span_fps(frames: int, t_first: float | None, t_last: float | None) -> float:
    """Frames per second over the frames' own span: ``(frames - 1) / (t_last - t_first)``
    (0 with fewer than two frames or no span)."""
    if frames < 2 or t_first is None or t_last is None or t_last <= t_first:
        return 0.0
    return (frames - 1) / (t_last - t_first)


@dataclasses.dataclass
class StreamStats:
    """Counts of one stream at the sink.

    Attributes:
        frames: result frames received. faces: faces in them.
        next_seq: one past the highest seq seen (or announced by its end of stream).
        missing: seqs below ``next_seq`` that never arrived (frames lost between capture
            and sink: for files, a gap; for live sources, also the frames dropped on
            purpose upstream, which are counted where they were dropped).
        live: the stream's frames are live.
        t_first, t_last: wall clock (Unix seconds) of its first and last frame.
    """

    frames: int = 0
    faces: int = 0
    next_seq: int = 0
    missing: int = 0
    live: bool = False
    t_first: float | None = None
    t_last: float | None = None

    def add(self, seq: int, faces: int, now: float, live: bool) -> None:
        """Count one frame ``seq`` with ``faces`` faces received at ``now``."""
        if self.t_first is None:
            self.t_first = now
        self.t_last = now
        self.frames += 1
        self.faces += faces
        self.live = live
        if seq >= self.next_seq:
            self.missing += seq - self.next_seq
            self.next_seq = seq + 1
        elif self.missing:
            self.missing -= 1  # a late frame (overtaken by a later one) fills a gap

    def ended(self, frames: int) -> None:
        """Its end of stream says ``frames`` seqs were sent: the ones never seen after
        the last received are missing."""
        if frames > self.next_seq:
            self.missing += frames - self.next_seq
            self.next_seq = frames

    def fps(self) -> float:
        """Frames per second over the stream's own span."""
        return span_fps(self.frames, self.t_first, self.t_last)

    def to_json(self) -> dict:
        """JSON-ready, with ``fps``."""
        return {**dataclasses.asdict(self), "fps": self.fps()}

    @classmethod
    def from_json(cls, data: dict) -> "StreamStats":
        """From :meth:`to_json` (unknown keys ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class SinkStats:
    """Running counts and exact end-to-end latency percentiles (last ``keep`` frames).

    Args:
        keep: number of most recent latencies kept for percentiles.
        clock: wall clock (Unix seconds; the span of frames must survive a restart).
    """

    def __init__(self, keep: int = 100_000, clock=time.time):
        self.clock = clock
        self.frames = 0
        self.faces = 0
        self.latencies: deque[float] = deque(maxlen=keep)
        self.per_stream: dict[str, StreamStats] = {}
        self.ended: list[str] = []
        self.t_first: float | None = None
        self.t_last: float | None = None
        #: Bytes of events.jsonl written when the counts were taken (set by the sink).
        self.events_bytes = 0
        #: Earlier sink processes this one continues (``{"t", "frames", "next_seq"}``).
        self.breaks: list[dict] = []

    def stream(self, name: str) -> StreamStats:
        """The stats of stream ``name`` (created empty)."""
        st = self.per_stream.get(name)
        if st is None:
            st = self.per_stream[name] = StreamStats()
        return st

    def add(self, stream: str, latency_s: float | None, faces: int, seq: int = 0,
            live: bool = False, now: float | None = None) -> None:
        """Count one frame ``seq`` of ``stream`` with ``faces`` faces and its latency
        (seconds; ``None``: not known, e.g. a frame counted again from events.jsonl)."""
        now = self.clock() if now is None else now
        if self.t_first is None:
            self.t_first = now
        self.t_last = now
        self.frames += 1
        self.faces += faces
        if latency_s is not None:
            self.latencies.append(latency_s)
        self.stream(stream).add(seq, faces, now, live)

    @property
    def streams(self) -> dict[str, int]:
        """Frames per stream."""
        return {k: v.frames for k, v in self.per_stream.items()}

    def fps(self) -> float:
        """Frames per second between the first and the last frame received."""
        return span_fps(self.frames, self.t_first, self.t_last)

    def snapshot(self, done: bool = False) -> dict:
        """A JSON-ready status: frames, faces, fps (over the frames' own span), latency
        percentiles (s), frames per stream, per-stream details, what a restart needs."""
        lat = percentiles(self.latencies)
        lat["mean"] = float(np.mean(self.latencies)) if self.latencies else None
        lat["max"] = float(np.max(self.latencies)) if self.latencies else None
        return {"frames": self.frames, "faces": self.faces, "fps": self.fps(),
                "span_s": (self.t_last - self.t_first) if self.frames else 0.0,
                "t_first": self.t_first, "t_last": self.t_last,
                "latency_s": lat, "streams": self.streams,
                "stream_stats": {k: v.to_json() for k, v in self.per_stream.items()},
                "ended": list(self.ended), "events_bytes": self.events_bytes,
                "breaks": list(self.breaks), "done": done, "time": time.time()}

    @classmethod
    def from_snapshot(cls, snap: dict, **kwargs) -> "SinkStats":
        """Counts to continue from (a restarted sink): everything but the latencies."""
        st = cls(**kwargs)
        st.frames = int(snap.get("frames", 0))
        st.faces = int(snap.get("faces", 0))
        st.t_first, st.t_last = snap.get("t_first"), snap.get("t_last")
        st.per_stream = {k: StreamStats.from_json(v)
                         for k, v in (snap.get("stream_stats") or {}).items()}
        st.ended = list(snap.get("ended") or [])
        st.events_bytes = int(snap.get("events_bytes") or 0)
        st.breaks = list(snap.get("breaks") or [])
        return st


def read_status(path: Path | None) -> dict | None:
    """The status a sink wrote to ``path`` (``None`` when absent or unreadable)."""
    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write ``obj`` to ``path`` so readers never see a half-written file; every string
    in it passes :func:`common.redact.redact_obj` (a status file shows sources)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(redact_obj(obj)))
    os.replace(tmp, path)
