"""The sink's running statistics (frames, faces, fps, exact latency percentiles) and the
status file ``agegender run`` reads for its progress bar and summary."""

from __future__ import annotations

import json
import os
import time
from collections import deque
from pathlib import Path

import numpy as np


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
