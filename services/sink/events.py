"""The sink's record outputs: the events.jsonl contract and the per-stage trace.

events.jsonl (one JSON object per frame, one line each, flushed per line)::

    {"stream": str, "seq": int, "t_capture": float (Unix seconds),
     "latency_s": float (sink receive time - capture time, seconds),
     "width": int, "height": int (pixels),
     "faces": [{"box": [x1, y1, x2, y2] (int pixels, clipped, x2/y2 exclusive),
                "confidence": float (0..1, detector, 4 decimals),
                "age": float (years) or null,
                "age_range": [low, high] (years) or null,
                "gender": "female" | "male" or null,
                "gender_confidence": float (0.5..1) or null,
                "track": int (the person's track id, given by the detector: unique per
                         stream, also across detector restarts),
                "quality": float (0..1)}]}

Age, age range and gender are the person's fused answer so far (all classified faces of
its track up to this frame, weighted by quality: :mod:`services.sink.people`); they are
null until the track's first face was classified. ``quality`` is the face's quality
(0..1, :mod:`common.quality`). Each face is :func:`common.faces.face_json` of the face
map (the same form ``agegender predict`` prints), with its track and quality.

people.jsonl: one person event per line (:mod:`services.sink.people`), written when the
person's track ends, at the end of its stream or when the sink stops.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from common import faces
from common.faces import face_json
from services.sink.outputs import Output, SinkResult

#: Keys of each events.jsonl object, in order.
EVENT_KEYS = ("stream", "seq", "t_capture", "latency_s", "width", "height", "faces")
#: Keys of each face in an event, in order (:func:`common.faces.face_json` with ``track``
#: and ``quality``).
FACE_KEYS = (*faces.FACE_KEYS, "track", "quality")


def event_record(header: dict, latency_s: float) -> dict:
    """The events.jsonl object of one ``result`` header (see the module docstring).

    Args:
        header: decoded ``result`` header.
        latency_s: end-to-end latency of the frame (seconds).
    """
    return {"stream": header["stream"], "seq": int(header["seq"]),
            "t_capture": header["t_capture_ns"] / 1e9, "latency_s": float(latency_s),
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


class PeopleOutput(Output):
    """people.jsonl: one line per person event (:meth:`write_person`); frames are not
    written here.

    Args:
        path: the file (its folder is created).
        append: continue an existing file instead of replacing it.
    """

    name = "people"

    def __init__(self, path: Path, append: bool = False):
        self.path = Path(path)
        self.append = append
        self.file: JsonLines | None = None

    def open(self) -> None:
        """Create or open the file."""
        self.file = JsonLines(self.path, append=self.append)

    def write(self, result: SinkResult) -> None:
        """Frames are not person events: nothing to write."""

    def write_person(self, event: dict) -> None:
        """Write one person event as one line."""
        self.file.write(event)

    def close(self) -> None:
        """Close the file."""
        if self.file is not None:
            self.file.close()
