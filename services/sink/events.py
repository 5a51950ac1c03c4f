"""The sink's record outputs: the events.jsonl contract and the per-stage trace.

events.jsonl (one JSON object per frame, one line each, flushed per line)::

    {"stream": str, "seq": int, "t_capture": float (Unix seconds),
     "t_media": float (the frame's media time, seconds since the stream's first frame:
                the file's own timestamps, a live source's time since its first frame)
                or null when the frame carries none,
     "latency_s": float (sink receive time - capture time, seconds),
     "width": int, "height": int (pixels),
     "faces": [{"box": [x1, y1, x2, y2] (int pixels, clipped, x2/y2 exclusive),
                "confidence": float (0..1, detector, 4 decimals),
                "age": float (years),
                "age_range": [low, high] (years) or null when the model gives none,
                "gender": "female" | "male",
                "gender_confidence": float (0..1),
                "track": int (face track id, per stream, from 1) or null}]}

Age, age range and gender are medians over the face's track (the sink's
``track_window`` last frames, :mod:`services.sink.tracking`); ``track_window`` 1 gives the
classifier's per-frame values. Each face is :func:`common.faces.face_json` of the face
map (the same form ``agegender predict`` prints), with its track.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from common import faces
from common.faces import face_json
from services.sink.outputs import Output, SinkResult

#: Keys of each events.jsonl object, in order.
EVENT_KEYS = ("stream", "seq", "t_capture", "t_media", "latency_s", "width", "height",
              "faces")
#: Keys of each face in an event, in order (:func:`common.faces.face_json` with ``track``).
FACE_KEYS = (*faces.FACE_KEYS, "track")


def event_record(header: dict, latency_s: float) -> dict:
    """The events.jsonl object of one ``result`` header (see the module docstring).

    Args:
        header: decoded ``result`` header.
        latency_s: end-to-end latency of the frame (seconds).
    """
    t_media = header.get("t_media_ns")
    return {"stream": header["stream"], "seq": int(header["seq"]),
            "t_capture": header["t_capture_ns"] / 1e9,
            "t_media": None if t_media is None else round(t_media / 1e9, 6),
            "latency_s": float(latency_s),
            "width": int(header["width"]), "height": int(header["height"]),
            "faces": [face_json(f, track=True) for f in header.get("faces", [])]}


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


class JsonLinesOutput(Output):
    """An output that writes one JSON line per result frame (``record(result)``).

    Args:
        name: output name (``events``, ``trace``).
        path: the file (its folder is created).
        record: the JSON object of one result frame.
        append: continue an existing file instead of replacing it.
    """

    def __init__(self, name: str, path: Path, record: Callable[[SinkResult], dict],
                 append: bool = False):
        self.name = name
        self.path = Path(path)
        self.record = record
        self.append = append
        self.file: JsonLines | None = None

    def open(self) -> None:
        """Create or open the file."""
        self.file = JsonLines(self.path, append=self.append)

    def write(self, result: SinkResult) -> None:
        """Write the frame's record as one line."""
        self.file.write(self.record(result))

    def close(self) -> None:
        """Close the file."""
        if self.file is not None:
            self.file.close()


def events_output(path: Path, append: bool = False) -> JsonLinesOutput:
    """events.jsonl (see the module docstring)."""
    return JsonLinesOutput("events", path, lambda r: event_record(r.header, r.latency_s),
                           append)


def trace_output(path: Path, append: bool = False) -> JsonLinesOutput:
    """The per-stage timestamp trace (benchmarks; see :func:`trace_record`)."""
    return JsonLinesOutput("trace", path, lambda r: trace_record(r.header, r.t_sink_ns),
                           append)
