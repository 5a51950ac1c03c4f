"""Where each stream of a capture is, kept in a small file so a restarted capture resumes.

``agegender run`` restarts a capture that crashed (or stalled and was killed); without a
record the new process would replay every file from frame 0 and send each ``(stream,
seq)`` a second time. The capture writes, **before** it hands a frame to ZeroMQ, what
comes next for its stream::

    {"streams": {"<stream>": {"seq": int (next seq; every lower one was sent or lost),
                              "position": int (the source's position after the frame:
                                  frames read from a video file, files of a folder,
                                  frames of the demo, in the current pass),
                              "pass": int (0-based, for --loop),
                              "ended": bool (its end of stream was being sent),
                              "media": {"after_ns": int (media time of the frame, ns
                                            from the start of its pass),
                                        "pass_start_ns": int (media time the pass
                                            started at)} (finite sources; a video
                                  file is resumed by seeking to that time, which is
                                  fast and exact where frame numbers are not)}},
     "pid": int}

Written before the send, a record is never behind what was sent: a capture killed between
the write and the send loses that one frame (a gap, reported), never sends it twice. A
new capture reads the file, continues each file at ``position`` and numbers frames from
``seq`` (live sources too), and re-sends the end of stream of streams that had ended
(the sink ignores a repeated one).

The file is rewritten in place with one ``pwrite`` per frame (no rename, a few
microseconds): a write of a few hundred bytes to a regular file is not torn by the
death of the process that issued it, and the text is padded with spaces to the longest
length written so far, so a shorter record never leaves the end of a longer one behind.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def read_positions(path: Path | None) -> dict[str, dict]:
    """The per-stream records of a position file (``{}`` when there is none or it cannot
    be read: the capture then starts from the beginning, logged)."""
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text() or "{}")
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("position file %s unreadable (%s): starting every stream from the "
                    "beginning", path, exc)
        return {}
    streams = data.get("streams") if isinstance(data, dict) else None
    if not isinstance(streams, dict):
        return {}
    out = {}
    for name, rec in streams.items():
        if isinstance(rec, dict) and isinstance(rec.get("seq"), int) and rec["seq"] >= 0:
            out[str(name)] = {"seq": rec["seq"],
                              "position": max(int(rec.get("position") or 0), 0),
                              "pass": max(int(rec.get("pass") or 0), 0),
                              "ended": bool(rec.get("ended", False))}
            media = rec.get("media")
            if isinstance(media, dict) and all(
                    isinstance(media.get(k), int) and media[k] >= 0
                    for k in ("after_ns", "pass_start_ns")):
                out[str(name)]["media"] = {k: media[k] for k in ("after_ns", "pass_start_ns")}
    return out


class PositionFile:
    """Writes the position file (see the module docstring).

    Args:
        path: the file (created; its earlier content is what :func:`read_positions`
            returned before this object was made, and is kept until overwritten).
        streams: the records to start from (the resumed ones).
    """

    def __init__(self, path: Path, streams: dict[str, dict] | None = None):
        self.path = Path(path)
        self.streams: dict[str, dict] = {k: dict(v) for k, v in (streams or {}).items()}
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        self._width = os.fstat(self._fd).st_size

    def record(self, stream: str, seq: int, position: int = 0, pass_: int = 0,
               ended: bool = False, media: dict | None = None) -> None:
        """Record that ``stream`` continues with ``seq`` (and, for finite sources, at
        ``position`` of pass ``pass_``, after the frame at ``media``: see the module
        docstring); ``ended`` once its end of stream is sent."""
        self.streams[stream] = {"seq": int(seq), "position": int(position),
                                "pass": int(pass_), "ended": bool(ended)}
        if media is not None:
            self.streams[stream]["media"] = {k: int(v) for k, v in media.items()}
        data = json.dumps({"streams": self.streams, "pid": os.getpid()},
                          separators=(",", ":")).encode()
        self._width = max(self._width, len(data))
        os.pwrite(self._fd, data.ljust(self._width), 0)

    def close(self) -> None:
        """Close the file (it stays, for a capture started after this one)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
