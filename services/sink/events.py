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
                "age": float (years) or null,
                "age_range": [low, high] (years) or null,
                "gender": "female" | "male" or null,
                "gender_confidence": float (0.5..1) or null,
                "track": int (the person's track id, given by the detector: unique per
                         stream, also across detector and sink restarts),
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
import os
from pathlib import Path
from typing import Callable

from common import faces
from common.faces import face_json
from services.sink.outputs import Output, SinkResult

#: Keys of each events.jsonl object, in order.
EVENT_KEYS = ("stream", "seq", "t_capture", "t_media", "latency_s", "width", "height",
              "faces")
#: Keys of each face in an event, in order (:func:`common.faces.face_json` with ``track``
#: and ``quality``).
FACE_KEYS = (*faces.FACE_KEYS, "track", "quality")


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


def cut_torn_line(path: Path) -> int:
    """Cut a last line without its newline (a writer killed in the middle of it) off a
    JSON Lines file; returns the bytes cut (0 when the file ends with a whole line or
    does not exist)."""
    try:
        with open(path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return 0
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return 0
            pos = size
            while pos > 0:  # back to the last newline, in 64 KiB steps
                step = min(65536, pos)
                f.seek(pos - step)
                chunk = f.read(step)
                nl = chunk.rfind(b"\n")
                if nl >= 0:
                    pos = pos - step + nl + 1
                    break
                pos -= step
            f.truncate(pos)
            return size - pos
    except FileNotFoundError:
        return 0


def read_tail(path: Path, offset: int) -> tuple[list[dict], int]:
    """The JSON objects of the whole lines of ``path`` from byte ``offset`` on, and the
    offset after them (a line that is not a JSON object is skipped)."""
    records = []
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            for line in f:
                if not line.endswith(b"\n"):
                    break
                offset += len(line)
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    records.append(obj)
    except FileNotFoundError:
        pass
    return records, offset


class JsonLines:
    """Append-only JSON Lines file, flushed after every line.

    Attributes:
        bytes: the file's size in bytes after the last line written (ASCII JSON: one
            character is one byte).
    """

    def __init__(self, path: Path, append: bool = False):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        if append:
            cut_torn_line(path)
        self._f = open(path, "a" if append else "w", encoding="utf-8")
        self.bytes = self._f.seek(0, os.SEEK_END)

    def write(self, obj: dict) -> None:
        """Write ``obj`` as one line and flush it to the OS (one ``write`` call for
        lines up to the buffer size, 8 KiB: a line is not torn by a kill of the process
        after it was handed over)."""
        line = json.dumps(obj, separators=(",", ":")) + "\n"
        self._f.write(line)
        self._f.flush()
        self.bytes += len(line)

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

    fatal_errors = (OSError,)  # a file that cannot be written loses what it should keep

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
        """Write the frame's record as one line.

        Raises:
            OSError: the line could not be written (``[Errno 28] No space left on
                device``...); the message names the file.
        """
        try:
            self.file.write(self.record(result))
        except OSError as exc:
            raise type(exc)(exc.errno, f"cannot write {self.path}: {exc.strerror}") from None

    def close(self) -> None:
        """Close the file (what could not be written is not retried)."""
        if self.file is not None:
            file, self.file = self.file, None
            try:
                file.close()
            except OSError as exc:
                raise type(exc)(exc.errno, f"cannot write {self.path}: {exc.strerror}") \
                    from None


def events_output(path: Path, append: bool = False) -> JsonLinesOutput:
    """events.jsonl (see the module docstring)."""
    return JsonLinesOutput("events", path, lambda r: event_record(r.header, r.latency_s),
                           append)


def trace_output(path: Path, append: bool = False) -> JsonLinesOutput:
    """The per-stage timestamp trace (benchmarks; see :func:`trace_record`)."""
    return JsonLinesOutput("trace", path, lambda r: trace_record(r.header, r.t_sink_ns),
                           append)


class PeopleOutput(JsonLinesOutput):
    """people.jsonl: one line per person event (:meth:`write_person`); frames are not
    written here.

    Args:
        path: the file (its folder is created).
        append: continue an existing file instead of replacing it.
    """

    def __init__(self, path: Path, append: bool = False):
        super().__init__("people", path, lambda r: {}, append)

    def write(self, result: SinkResult) -> None:
        """Frames are not person events: nothing to write."""

    def write_person(self, event: dict) -> None:
        """Write one person event as one line.

        Raises:
            OSError: the line could not be written; the message names the file.
        """
        try:
            self.file.write(event)
        except OSError as exc:
            raise type(exc)(exc.errno, f"cannot write {self.path}: {exc.strerror}") from None
