"""The sink's records: the events.jsonl contract, latency statistics, the status file.

events.jsonl (one JSON object per frame, one line each, flushed per line)::

    {"stream": str, "seq": int, "t_capture": float (Unix seconds),
     "latency_s": float (sink receive time - capture time, seconds),
     "width": int, "height": int (pixels),
     "faces": [{"box": [x1, y1, x2, y2] (int pixels, clipped, x2/y2 exclusive),
                "confidence": float (0..1, detector),
                "age": float (years),
                "age_range": [low, high] (years) or null when the model gives none,
                "gender": "female" | "male",
                "gender_confidence": float (0..1),
                "track": int (face track id, per stream, from 1) or null}]}

Age, age range and gender are medians over the face's track (the sink's
``track_window`` last frames, :mod:`services.sink.tracking`); ``track_window`` 1 gives the
classifier's per-frame values.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from pathlib import Path

import numpy as np

#: Keys of each events.jsonl object, in order.
EVENT_KEYS = ("stream", "seq", "t_capture", "latency_s", "width", "height", "faces")
#: Keys of each face in an event, in order.
FACE_KEYS = ("box", "confidence", "age", "age_range", "gender", "gender_confidence", "track")


def event_record(header: dict, latency_s: float) -> dict:
    """The events.jsonl object of one ``result`` header (see the module docstring).

    Args:
        header: decoded ``result`` header.
        latency_s: end-to-end latency of the frame (seconds).
    """
    faces = []
    for f in header.get("faces", []):
        rng = f.get("age_range")
        faces.append({
            "box": [int(round(v)) for v in f["box"]],
            "confidence": float(f["confidence"]),
            "age": None if f.get("age") is None else float(f["age"]),
            "age_range": None if rng is None else [int(rng[0]), int(rng[1])],
            "gender": f.get("gender"),
            "gender_confidence": None if f.get("gender_confidence") is None
            else float(f["gender_confidence"]),
            "track": None if f.get("track") is None else int(f["track"]),
        })
    return {"stream": header["stream"], "seq": int(header["seq"]),
            "t_capture": header["t_capture_ns"] / 1e9, "latency_s": float(latency_s),
            "width": int(header["width"]), "height": int(header["height"]), "faces": faces}


def trace_record(header: dict, t_sink_ns: int) -> dict:
    """One trace line: stream, seq, faces count and every ``t_*_ns`` stamp (ns)."""
    rec = {"stream": header["stream"], "seq": header["seq"],
           "faces": len(header.get("faces", []))}
    rec.update({k: v for k, v in header.items() if k.startswith("t_") and k.endswith("_ns")})
    rec["t_sink_ns"] = int(t_sink_ns)
    return rec


class JsonLines:
    """Append-only JSON Lines file, flushed after every line."""

    def __init__(self, path: Path, append: bool = False):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._f = open(path, "a" if append else "w", encoding="utf-8")

    def write(self, obj: dict) -> None:
        """Write ``obj`` as one line and flush it to the OS."""
        self._f.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self._f.flush()

    def close(self) -> None:
        """Close the file."""
        self._f.close()


def percentiles(values, qs=(50, 95, 99)) -> dict:
    """``{"p50": ..., ...}`` of ``values`` (``None`` each when empty)."""
    if len(values) == 0:
        return {f"p{q}": None for q in qs}
    arr = np.asarray(values, dtype=np.float64)
    return {f"p{q}": float(np.percentile(arr, q)) for q in qs}


class SinkStats:
    """Running counts and exact end-to-end latency percentiles (last ``keep`` frames).

    Args:
        keep: number of most recent latencies kept for percentiles.
        clock: monotonic clock (seconds).
    """

    def __init__(self, keep: int = 100_000, clock=time.monotonic):
        self.clock = clock
        self.frames = 0
        self.faces = 0
        self.latencies: deque[float] = deque(maxlen=keep)
        self.streams: dict[str, int] = {}
        self.ended: list[str] = []
        self.t_first: float | None = None
        self.t_last: float | None = None

    def add(self, stream: str, latency_s: float, faces: int) -> None:
        """Count one frame of ``stream`` with ``faces`` faces and its latency (seconds)."""
        now = self.clock()
        if self.t_first is None:
            self.t_first = now
        self.t_last = now
        self.frames += 1
        self.faces += faces
        self.latencies.append(latency_s)
        self.streams[stream] = self.streams.get(stream, 0) + 1

    def fps(self) -> float:
        """Frames per second between the first and the last frame received."""
        if self.frames < 2 or self.t_last == self.t_first:
            return 0.0
        return (self.frames - 1) / (self.t_last - self.t_first)

    def snapshot(self, done: bool = False) -> dict:
        """A JSON-ready status: frames, faces, fps, latency percentiles (s), streams."""
        lat = percentiles(self.latencies)
        lat["mean"] = float(np.mean(self.latencies)) if self.latencies else None
        lat["max"] = float(np.max(self.latencies)) if self.latencies else None
        return {"frames": self.frames, "faces": self.faces, "fps": self.fps(),
                "latency_s": lat, "streams": dict(self.streams), "ended": list(self.ended),
                "done": done, "time": time.time()}


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write ``obj`` to ``path`` so readers never see a half-written file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)
