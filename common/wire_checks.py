"""Validation of wire messages (:mod:`common.wire` is the schema and codec): the error
taxonomy, the limits fields are checked against, and the field checks
:func:`common.wire.decode` runs.

:func:`common.wire.decode` raises :class:`DecodeError` whose ``reason`` is one of
:data:`DROP_REASONS` so callers can drop and count. One taxonomy, checked in this
order (the first that applies is the reason):

* ``oversize``: the whole message or its header is larger than allowed;
* ``not_msgpack``: the header frame is not one complete msgpack document (garbage,
  truncated, a container or string announcing more than the limits) or its top level is
  not a map;
* ``bad_field``: a map key that is not a string (an int, bytes, a list: at any depth; the
  map itself is well-formed msgpack, its field names are wrong), or a field missing, of the
  wrong type or out of range;
* ``bad_version``: ``v`` is not :data:`common.wire.SCHEMA_VERSION`;
* ``bad_kind``: ``kind`` is not one of :data:`common.wire.KINDS`, or (counted by
  :class:`common.sockets.Receiver`) a valid kind this input does not take, such as a
  ``result`` sent to the detector's frame input;
* ``size_mismatch``: the payload frames disagree with the header (count or bytes).
"""

from __future__ import annotations

import math
import re
from typing import Any

#: Largest accepted optional ``fps`` header field (frames/s).
MAX_FPS = 1000
#: Largest accepted ``age`` in a result (years).
MAX_AGE_YEARS = 150
GENDERS = ("female", "male")
#: Keypoints per face when a face map has ``keypoints``.
NUM_KEYPOINTS = 6
#: Largest accepted track id (a signed 64-bit int; ids are time-based, see
#: docs/pipeline.md).
MAX_TRACK_ID = 2 ** 63 - 1
#: Most track ids one ``ended_tracks`` list may hold.
MAX_ENDED_TRACKS = 10_000
# Stream names end up in metric labels and file names (annotated_<stream>.mp4).
_BAD_STREAM = re.compile(r"[/\\\x00-\x1f\x7f]")
#: Reasons a message can be rejected; metrics labels are created from this tuple.
DROP_REASONS = (
    "not_msgpack",
    "oversize",
    "bad_version",
    "bad_kind",
    "bad_field",
    "size_mismatch",
)


class DecodeError(ValueError):
    """A message failed validation; ``reason`` is one of :data:`DROP_REASONS`."""

    def __init__(self, reason: str, detail: str):
        assert reason in DROP_REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail




class NonStringKey(Exception):
    """A msgpack map with a key that is not a string (its type name is the message)."""


def string_map(pairs: list) -> dict:
    """msgpack ``object_pairs_hook``: a dict of ``pairs``, every key a ``str``.

    Raises:
        NonStringKey: a key of another type (int, bytes, list, ...).
    """
    out = {}
    for key, value in pairs:
        if not isinstance(key, str):
            raise NonStringKey(type(key).__name__)
        out[key] = value
    return out


def require(h: dict, key: str, types: tuple, kind_detail: str = "") -> Any:
    """``h[key]`` when it is of one of ``types`` (a bool is never a number).

    Raises:
        DecodeError: ``bad_field``, the key missing or of another type.
    """
    if key not in h:
        raise DecodeError("bad_field", f"missing {key!r}{kind_detail}")
    value = h[key]
    # bool is an int subclass: never accept it where a number is expected
    if isinstance(value, bool) and bool not in types:
        raise DecodeError("bad_field", f"{key!r} has type bool")
    if not isinstance(value, types):
        raise DecodeError("bad_field", f"{key!r} has type {type(value).__name__}")
    return value


def is_number(value: Any) -> bool:
    """True for a finite int or float that is not a bool."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def is_track(value: Any) -> bool:
    """True for an int track id in ``1..MAX_TRACK_ID`` (not a bool)."""
    return (isinstance(value, int) and not isinstance(value, bool)
            and 1 <= value <= MAX_TRACK_ID)


def check_face(face: Any, kind: str, width: int, height: int) -> None:
    """Validate one ``faces`` entry: every field a consumer formats or compares."""
    if not isinstance(face, dict):
        raise DecodeError("bad_field", "each face must be a map")
    check_box(face.get("box"), width, height)
    conf = face.get("confidence")
    if not is_number(conf) or not 0.0 <= conf <= 1.0:
        raise DecodeError("bad_field", f"face confidence {conf!r} is not a number in 0..1")
    if "keypoints" in face:
        check_keypoints(face["keypoints"], width, height)
    if not is_track(face.get("track")):
        raise DecodeError("bad_field", f"face track {face.get('track')!r} is not an int "
                          f">= 1")
    quality = face.get("quality")
    if not is_number(quality) or not 0.0 <= quality <= 1.0:
        raise DecodeError("bad_field", f"face quality {quality!r} is not a number in 0..1")
    if (kind == "faces" or "classify" in face) and not isinstance(face.get("classify"), bool):
        raise DecodeError("bad_field", f"face classify {face.get('classify')!r} is not a "
                          "bool")
    if kind != "result":
        return
    present = [k for k in ("age", "gender", "gender_confidence") if k in face]
    if not present:
        if face.get("age_range") is not None:
            raise DecodeError("bad_field", "age_range on a face that was not classified")
        return
    if len(present) != 3:
        raise DecodeError("bad_field", f"a classified face needs age, gender and "
                          f"gender_confidence, has only {present}")
    age = face.get("age")
    if not is_number(age) or not 0.0 <= age <= MAX_AGE_YEARS:
        raise DecodeError("bad_field", f"age {age!r} is not a number in 0..{MAX_AGE_YEARS}")
    if face.get("gender") not in GENDERS:
        raise DecodeError("bad_field", f"gender {face.get('gender')!r}")
    gconf = face.get("gender_confidence")
    if not is_number(gconf) or not 0.0 <= gconf <= 1.0:
        raise DecodeError("bad_field", f"gender_confidence {gconf!r} is not a number in 0..1")
    rng = face.get("age_range")
    if rng is not None and not (isinstance(rng, list) and len(rng) == 2
                                and all(is_number(a) for a in rng) and rng[0] <= rng[1]):
        raise DecodeError("bad_field", f"age_range {rng!r} is not [low, high] years")


def check_ended_tracks(h: dict) -> None:
    """``ended_tracks``, when present: a list of distinct track ids."""
    if "ended_tracks" not in h:
        return
    ended = h["ended_tracks"]
    if not isinstance(ended, list) or len(ended) > MAX_ENDED_TRACKS \
            or not all(is_track(t) for t in ended) or len(set(ended)) != len(ended):
        raise DecodeError("bad_field", "ended_tracks must be a list of distinct track ids "
                          f"(ints >= 1, at most {MAX_ENDED_TRACKS})")


def check_fusion(h: dict) -> None:
    """``fusion``, when present: a map of names to finite numbers, ``rho`` in 0..1."""
    if "fusion" not in h:
        return
    fusion = h["fusion"]
    if not isinstance(fusion, dict) or not all(is_number(v) for v in fusion.values()):
        raise DecodeError("bad_field", "fusion must be a map of names to finite numbers")
    if "rho" in fusion and not 0.0 <= fusion["rho"] <= 1.0:
        raise DecodeError("bad_field", f"fusion rho {fusion['rho']!r} is not in 0..1")


def check_keypoints(kps: Any, width: int, height: int) -> None:
    """Exactly :data:`NUM_KEYPOINTS` ``[x, y]`` pairs of finite numbers within the frame."""
    if not isinstance(kps, list) or len(kps) != NUM_KEYPOINTS:
        raise DecodeError("bad_field", f"keypoints must be a list of {NUM_KEYPOINTS} [x, y]")
    for p in kps:
        if not (isinstance(p, list) and len(p) == 2 and all(is_number(c) for c in p)):
            raise DecodeError("bad_field", f"keypoint {p!r} is not [x, y] finite numbers")
        if not (0 <= p[0] <= width and 0 <= p[1] <= height):
            raise DecodeError("bad_field", f"keypoint {p} outside {width}x{height}")


def check_box(box: Any, width: int, height: int) -> None:
    """``[x1, y1, x2, y2]`` finite numbers, a non-empty box within the frame."""
    if not isinstance(box, list) or len(box) != 4:
        raise DecodeError("bad_field", "box must be a list of 4 numbers")
    for c in box:
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c):
            raise DecodeError("bad_field", "box coordinates must be finite numbers")
    x1, y1, x2, y2 = box
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        raise DecodeError("bad_field", f"box {box} outside {width}x{height} or empty")


def check_header(h: dict) -> None:
    """The fields every message has (``v`` and ``kind`` checked before): ``stream``,
    ``seq``, ``t_capture_ns``, optional ``live``, ``still``, ``fps``, ``t_media_ns`` and every
    ``t_<stage>_ns``.

    Raises:
        DecodeError: ``bad_field``.
    """
    stream = require(h, "stream", (str,))
    if not stream or len(stream) > 128 or _BAD_STREAM.search(stream) or stream in (".", ".."):
        raise DecodeError("bad_field", "stream name must have 1-128 characters, no path "
                          "separators or control characters")
    for flag in ("live", "still"):
        if not isinstance(h.get(flag, False), bool):
            raise DecodeError("bad_field", f"{flag!r} must be a bool")
    fps = h.get("fps")
    if fps is not None and not (is_number(fps) and 0 < fps <= MAX_FPS):
        raise DecodeError("bad_field", f"fps {fps!r} is not a number in (0, {MAX_FPS}]")
    seq = require(h, "seq", (int,))
    t_cap = require(h, "t_capture_ns", (int,))
    if seq < 0 or t_cap < 0:
        raise DecodeError("bad_field", "seq and t_capture_ns must be >= 0")
    t_media = h.get("t_media_ns", 0)
    if isinstance(t_media, bool) or not isinstance(t_media, int) or t_media < 0:
        raise DecodeError("bad_field", f"t_media_ns {t_media!r} is not an int >= 0")
    for key, value in h.items():
        if key.startswith("t_") and key.endswith("_ns") and (
                isinstance(value, bool) or not isinstance(value, int)):
            raise DecodeError("bad_field", f"{key!r} must be an int")
