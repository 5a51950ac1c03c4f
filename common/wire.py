"""Versioned wire schema and msgpack codec for every message between services.

A message is a ZeroMQ multipart message ``[header, payload...]``:

* ``header`` is a msgpack map with string keys. Always present: ``v`` (schema version,
  int), ``kind`` (one of :data:`KINDS`), ``stream`` (str, 1-128 characters, no ``/``, ``\\``
  or control characters: it becomes a metric label and part of file names), ``seq``
  (int, per stream, starting at 0) and ``t_capture_ns`` (int, wall clock at capture in ns
  since the Unix epoch). Per-stage timestamps are ints in ns named ``t_<stage>_ns``.
  Optional ``live`` (bool): the frame comes from a live source and may be dropped when
  stale. Optional ``fps`` (source frame rate, frames/s, finite, 0 < fps <= 1000).
  Optional ``t_media_ns`` (int >= 0): the frame's media time in ns since the stream's
  first frame (files: the container's presentation time, so variable frame rates keep
  their timing; live sources: the time since their first frame; image folders and the
  demo: ``index / fps``); the sink times its video by it. Capture always sets it.
  Keys are strings only, in every map of the header.
* Messages that carry an image (``frame``, ``faces``, ``result``) also carry ``width``,
  ``height`` (pixels) and ``encoding`` (``"bgr8"``: raw ``(H, W, 3) uint8`` BGR bytes in
  row-major order; ``"jpeg"``: JPEG bytes) and send the image as the first payload frame.
* ``faces`` messages carry ``faces``: a list of maps with ``box`` ``[x1, y1, x2, y2]``
  (absolute pixels, clipped to the frame, ``x2 > x1``, ``y2 > y1``), ``confidence``
  (0..1), ``track`` (int >= 1: the face's track id, unique per stream, given by the
  detector's tracker; see docs/pipeline.md, Tracking), ``classify`` (bool: the classifier
  classifies this face now; the detector's schedule) and ``quality`` (0..1: how useful the
  face is for age and gender, :mod:`common.quality`) and, optionally, ``keypoints``:
  exactly six ``[x, y]`` pairs of finite numbers (float pixels of the frame, within
  ``[0, width] x [0, height]``: the detector clips them), in MediaPipe's order: the
  person's right eye, left eye, nose tip, mouth centre, right ear tragion, left ear
  tragion (:data:`common.geometry.KEYPOINT_NAMES`). Detectors that give keypoints
  (BlazeFace) send them; faces from the others (SSD, Haar, dlib) have no ``keypoints``
  key. The classifier cuts a face with keypoints upright by its eye line
  (:func:`common.crops.face_crop`). The pixels the classifier needs travel once, in one
  of two forms (the detector's ``payload`` setting):

  - *frame* (default): no ``crops`` key; the payload is the frame only, raw ``bgr8``, and
    the classifier cuts each face to classify from it by its model's rule. Cheapest on
    one host: every pixel is sent once and nothing is encoded.
  - *crops*: ``crops`` is a list of ``[h, w]``, one per face with ``classify`` true (in
    the order of ``faces``), and one raw BGR crop per such face follows the image as a
    payload frame; the image is usually JPEG (the sink still draws the frame) so far
    fewer bytes cross the network, for classifiers on another host. The classifier
    classifies the crops as they are (cut by the detector by the same rule: upright by
    the keypoints, or widened to its ``crop_aspect``) whenever it has no raw frame to cut
    from.
* ``faces`` and ``result`` headers may carry ``ended_tracks``: a list of distinct track
  ids (ints >= 1) that the tracker ended at this frame (the person left: no face of it
  follows in this stream).
* ``result`` messages carry the ``faces`` maps (``keypoints``, ``track``, ``classify``
  and ``quality`` kept); a face the classifier classified (``classify`` true) adds
  ``age`` (years, finite, 0..150), ``age_range`` (``[low, high]`` years: the model's
  central interval, ``None`` or absent when the model has none), ``gender``
  (``"female"`` | ``"male"``) and ``gender_confidence`` (0..1): all of age, gender and
  gender_confidence or none of them. The header may carry ``fusion``: a map of names to
  finite numbers from the model's ``meta.json`` (``rho``: 0..1, the correlation of one
  person's errors between frames; :mod:`common.fusion`). Every number is finite (no
  NaN/inf, no bool where a number belongs).
* ``eos`` marks the end of a stream; it has no payload and must never be dropped.

Pixel data travels as raw bytes frames, never as Python objects and never with pickle.
:func:`decode` validates everything and raises :class:`DecodeError` whose ``reason`` is
one of :data:`DROP_REASONS` so callers can drop and count. One taxonomy, checked in this
order (the first that applies is the reason):

* ``oversize``: the whole message or its header is larger than allowed;
* ``not_msgpack``: the header frame is not one complete msgpack document (garbage,
  truncated, a container or string announcing more than the limits) or its top level is
  not a map;
* ``bad_field``: a map key that is not a string (an int, bytes, a list: at any depth; the
  map itself is well-formed msgpack, its field names are wrong), or a field missing, of the
  wrong type or out of range;
* ``bad_version``: ``v`` is not :data:`SCHEMA_VERSION`;
* ``bad_kind``: ``kind`` is not one of :data:`KINDS`, or (counted by
  :class:`common.sockets.Receiver`) a valid kind this input does not take, such as a
  ``result`` sent to the detector's frame input;
* ``size_mismatch``: the payload frames disagree with the header (count or bytes).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Sequence

import msgpack
import numpy as np

#: Version 2 (issue 11): faces carry ``track``, ``classify``, ``quality``; headers
#: ``ended_tracks``; results classify only scheduled faces and may carry ``fusion``.
SCHEMA_VERSION = 2
KINDS = ("frame", "faces", "result", "eos")
ENCODINGS = ("bgr8", "jpeg")
#: Upper bound on a whole multipart message (bytes); 3840x2160x3 raw plus crops fits.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Upper bound on the msgpack header (bytes).
MAX_HEADER_BYTES = 256 * 1024
#: Largest accepted image side (pixels).
MAX_SIDE = 8192
#: Most pixels of a raw ``bgr8`` frame that fit one message with its header: about 22.3
#: Mpx (e.g. 5456x4092; a 3840x2160 frame is 8.3 Mpx). Larger frames are downscaled by
#: capture before they are sent.
MAX_FRAME_PIXELS = (MAX_MESSAGE_BYTES - MAX_HEADER_BYTES) // 3
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


@dataclasses.dataclass
class Message:
    """A decoded message.

    Attributes:
        header: the validated header map (plain Python types).
        image: ``(H, W, 3) uint8`` BGR array for ``bgr8`` messages, ``None`` otherwise
            (``jpeg`` images stay encoded in ``image_bytes``).
        image_bytes: the raw image payload (``bgr8`` or JPEG bytes), ``None`` for ``eos``.
        crops: list of ``(h, w, 3) uint8`` BGR arrays (``faces`` messages in the crops
            form only, one per face with ``classify`` true; empty in the frame form).
    """

    header: dict
    image: np.ndarray | None = None
    image_bytes: bytes | None = None
    crops: list = dataclasses.field(default_factory=list)

    @property
    def kind(self) -> str:
        """Message kind, one of :data:`KINDS`."""
        return self.header["kind"]

    @property
    def stream(self) -> str:
        """Stream name."""
        return self.header["stream"]

    @property
    def seq(self) -> int:
        """Frame sequence number within its stream."""
        return self.header["seq"]


def _plain(value: Any) -> Any:
    """Convert numpy scalars/arrays and tuples inside a header to msgpack-native types."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _as_bytes(payload: Any) -> bytes | memoryview:
    if isinstance(payload, np.ndarray):
        if payload.dtype != np.uint8:
            raise TypeError(f"pixel payloads must be uint8, got {payload.dtype}")
        # Non-contiguous views (slices, crops) are copied into one contiguous buffer.
        return memoryview(np.ascontiguousarray(payload)).cast("B")
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return payload
    raise TypeError(f"payload must be bytes or a uint8 ndarray, got {type(payload).__name__}")


def encode(header: dict, payloads: Sequence[Any] = ()) -> list:
    """Encode a message into multipart frames.

    Args:
        header: header map; ``v`` is filled in. Numpy scalars, arrays and tuples are
            converted to plain msgpack types.
        payloads: bytes or ``uint8`` arrays (any strides; copied when non-contiguous).

    Returns:
        ``[header_bytes, payload...]`` ready for ``socket.send_multipart``.

    Raises:
        TypeError: a payload is neither bytes nor a uint8 array, or the header holds a
            type msgpack cannot encode.
    """
    h = _plain(dict(header))
    h["v"] = SCHEMA_VERSION
    return [msgpack.packb(h, use_bin_type=True)] + [_as_bytes(p) for p in payloads]


def frame_header(stream: str, seq: int, t_capture_ns: int, width: int, height: int,
                 encoding: str = "bgr8", **extra: Any) -> dict:
    """Build a ``frame`` header (see the module docstring for the fields)."""
    return dict(kind="frame", stream=stream, seq=seq, t_capture_ns=t_capture_ns,
                width=width, height=height, encoding=encoding, **extra)


def encode_frame(header: dict, image: np.ndarray) -> list:
    """Encode an image-carrying message whose image is ``(H, W, 3) uint8`` BGR.

    ``width``, ``height`` and ``encoding="bgr8"`` are set from the array.

    Raises:
        ValueError: the array is not ``(H, W, 3) uint8``.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    h = dict(header, width=int(image.shape[1]), height=int(image.shape[0]), encoding="bgr8")
    return encode(h, [image])


def _require(h: dict, key: str, types: tuple, kind_detail: str = "") -> Any:
    if key not in h:
        raise DecodeError("bad_field", f"missing {key!r}{kind_detail}")
    value = h[key]
    # bool is an int subclass: never accept it where a number is expected
    if isinstance(value, bool) and bool not in types:
        raise DecodeError("bad_field", f"{key!r} has type bool")
    if not isinstance(value, types):
        raise DecodeError("bad_field", f"{key!r} has type {type(value).__name__}")
    return value


def _is_number(value: Any) -> bool:
    """True for a finite int or float that is not a bool."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _is_track(value: Any) -> bool:
    """True for an int track id in ``1..MAX_TRACK_ID`` (not a bool)."""
    return (isinstance(value, int) and not isinstance(value, bool)
            and 1 <= value <= MAX_TRACK_ID)


def _check_face(face: Any, kind: str, width: int, height: int) -> None:
    """Validate one ``faces`` entry: every field a consumer formats or compares."""
    if not isinstance(face, dict):
        raise DecodeError("bad_field", "each face must be a map")
    _check_box(face.get("box"), width, height)
    conf = face.get("confidence")
    if not _is_number(conf) or not 0.0 <= conf <= 1.0:
        raise DecodeError("bad_field", f"face confidence {conf!r} is not a number in 0..1")
    if "keypoints" in face:
        _check_keypoints(face["keypoints"], width, height)
    if not _is_track(face.get("track")):
        raise DecodeError("bad_field", f"face track {face.get('track')!r} is not an int "
                          f">= 1")
    quality = face.get("quality")
    if not _is_number(quality) or not 0.0 <= quality <= 1.0:
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
    if not _is_number(age) or not 0.0 <= age <= MAX_AGE_YEARS:
        raise DecodeError("bad_field", f"age {age!r} is not a number in 0..{MAX_AGE_YEARS}")
    if face.get("gender") not in GENDERS:
        raise DecodeError("bad_field", f"gender {face.get('gender')!r}")
    gconf = face.get("gender_confidence")
    if not _is_number(gconf) or not 0.0 <= gconf <= 1.0:
        raise DecodeError("bad_field", f"gender_confidence {gconf!r} is not a number in 0..1")
    rng = face.get("age_range")
    if rng is not None and not (isinstance(rng, list) and len(rng) == 2
                                and all(_is_number(a) for a in rng) and rng[0] <= rng[1]):
        raise DecodeError("bad_field", f"age_range {rng!r} is not [low, high] years")


def _check_ended_tracks(h: dict) -> None:
    """``ended_tracks``, when present: a list of distinct track ids."""
    if "ended_tracks" not in h:
        return
    ended = h["ended_tracks"]
    if not isinstance(ended, list) or len(ended) > MAX_ENDED_TRACKS \
            or not all(_is_track(t) for t in ended) or len(set(ended)) != len(ended):
        raise DecodeError("bad_field", "ended_tracks must be a list of distinct track ids "
                          f"(ints >= 1, at most {MAX_ENDED_TRACKS})")


def _check_fusion(h: dict) -> None:
    """``fusion``, when present: a map of names to finite numbers, ``rho`` in 0..1."""
    if "fusion" not in h:
        return
    fusion = h["fusion"]
    if not isinstance(fusion, dict) or not all(_is_number(v) for v in fusion.values()):
        raise DecodeError("bad_field", "fusion must be a map of names to finite numbers")
    if "rho" in fusion and not 0.0 <= fusion["rho"] <= 1.0:
        raise DecodeError("bad_field", f"fusion rho {fusion['rho']!r} is not in 0..1")


def _check_keypoints(kps: Any, width: int, height: int) -> None:
    """Exactly :data:`NUM_KEYPOINTS` ``[x, y]`` pairs of finite numbers within the frame."""
    if not isinstance(kps, list) or len(kps) != NUM_KEYPOINTS:
        raise DecodeError("bad_field", f"keypoints must be a list of {NUM_KEYPOINTS} [x, y]")
    for p in kps:
        if not (isinstance(p, list) and len(p) == 2 and all(_is_number(c) for c in p)):
            raise DecodeError("bad_field", f"keypoint {p!r} is not [x, y] finite numbers")
        if not (0 <= p[0] <= width and 0 <= p[1] <= height):
            raise DecodeError("bad_field", f"keypoint {p} outside {width}x{height}")


def _check_box(box: Any, width: int, height: int) -> None:
    if not isinstance(box, list) or len(box) != 4:
        raise DecodeError("bad_field", "box must be a list of 4 numbers")
    for c in box:
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c):
            raise DecodeError("bad_field", "box coordinates must be finite numbers")
    x1, y1, x2, y2 = box
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        raise DecodeError("bad_field", f"box {box} outside {width}x{height} or empty")


class _NonStringKey(Exception):
    """A msgpack map with a key that is not a string (its type name is the message)."""


def _string_map(pairs: list) -> dict:
    """msgpack ``object_pairs_hook``: a dict of ``pairs``, every key a ``str``.

    Raises:
        _NonStringKey: a key of another type (int, bytes, list, ...).
    """
    out = {}
    for key, value in pairs:
        if not isinstance(key, str):
            raise _NonStringKey(type(key).__name__)
        out[key] = value
    return out


def decode(frames: Sequence[bytes], max_bytes: int = MAX_MESSAGE_BYTES) -> Message:
    """Validate and decode a multipart message.

    Args:
        frames: the multipart frames as received (bytes or zmq Frame-like buffers).
        max_bytes: reject messages whose total size exceeds this (bytes).

    Returns:
        A :class:`Message`; image and crops are zero-copy read-only views on the frames.

    Raises:
        DecodeError: with ``reason`` in :data:`DROP_REASONS`.
    """
    if not frames:
        raise DecodeError("bad_field", "empty multipart message")
    total = sum(len(f) for f in frames)
    if total > max_bytes:
        raise DecodeError("oversize", f"{total} bytes > {max_bytes}")
    raw = frames[0]
    if len(raw) > MAX_HEADER_BYTES:
        raise DecodeError("oversize", f"header of {len(raw)} bytes")
    try:
        # Limits stop a tiny header from announcing a huge container or binary. Maps are
        # built by _string_map (keys are never hashed before their type is checked).
        h = msgpack.unpackb(bytes(raw), raw=False, strict_map_key=False,
                            object_pairs_hook=_string_map,
                            max_bin_len=MAX_HEADER_BYTES, max_str_len=MAX_HEADER_BYTES,
                            max_array_len=100_000, max_map_len=10_000, max_ext_len=0)
    except _NonStringKey as exc:
        raise DecodeError("bad_field", f"map keys must be strings, got a {exc} key") from None
    except Exception as exc:  # msgpack raises several unrelated types
        raise DecodeError("not_msgpack", f"{type(exc).__name__}: {exc}") from None
    if not isinstance(h, dict):
        raise DecodeError("not_msgpack", f"header is a {type(h).__name__}, not a map")
    v = h.get("v")
    if v != SCHEMA_VERSION or isinstance(v, bool):
        raise DecodeError("bad_version", f"schema version {v!r}, expected {SCHEMA_VERSION}")
    kind = h.get("kind")
    if kind not in KINDS:
        raise DecodeError("bad_kind", f"kind {kind!r}")
    stream = _require(h, "stream", (str,))
    if not stream or len(stream) > 128 or _BAD_STREAM.search(stream) or stream in (".", ".."):
        raise DecodeError("bad_field", "stream name must have 1-128 characters, no path "
                          "separators or control characters")
    if not isinstance(h.get("live", False), bool):
        raise DecodeError("bad_field", "'live' must be a bool")
    fps = h.get("fps")
    if fps is not None and not (_is_number(fps) and 0 < fps <= MAX_FPS):
        raise DecodeError("bad_field", f"fps {fps!r} is not a number in (0, {MAX_FPS}]")
    seq = _require(h, "seq", (int,))
    t_cap = _require(h, "t_capture_ns", (int,))
    if seq < 0 or t_cap < 0:
        raise DecodeError("bad_field", "seq and t_capture_ns must be >= 0")
    t_media = h.get("t_media_ns", 0)
    if isinstance(t_media, bool) or not isinstance(t_media, int) or t_media < 0:
        raise DecodeError("bad_field", f"t_media_ns {t_media!r} is not an int >= 0")
    for key, value in h.items():
        if key.startswith("t_") and key.endswith("_ns") and (
                isinstance(value, bool) or not isinstance(value, int)):
            raise DecodeError("bad_field", f"{key!r} must be an int")
    msg = Message(header=h)
    if kind == "eos":
        if len(frames) != 1:
            raise DecodeError("size_mismatch", "eos carries no payload")
        return msg

    width = _require(h, "width", (int,))
    height = _require(h, "height", (int,))
    encoding = _require(h, "encoding", (str,))
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise DecodeError("bad_field", f"image size {width}x{height}")
    if encoding not in ENCODINGS:
        raise DecodeError("bad_field", f"encoding {encoding!r}")
    if len(frames) < 2:
        raise DecodeError("size_mismatch", "image payload missing")
    img = frames[1]
    msg.image_bytes = img
    if encoding == "bgr8":
        if len(img) != width * height * 3:
            raise DecodeError("size_mismatch",
                              f"{len(img)} bytes for {width}x{height}x3 = {width * height * 3}")
        msg.image = np.frombuffer(img, dtype=np.uint8).reshape(height, width, 3)
    elif len(img) == 0:
        raise DecodeError("size_mismatch", "empty jpeg payload")

    if kind in ("faces", "result"):
        faces = _require(h, "faces", (list,))
        for face in faces:
            _check_face(face, kind, width, height)
        _check_ended_tracks(h)
    if kind == "result":
        _check_fusion(h)
    if kind == "faces" and "crops" not in h:
        if encoding != "bgr8":
            raise DecodeError("bad_field", "a faces message without crops must carry the "
                              "frame as bgr8")
        if len(frames) != 2:
            raise DecodeError("size_mismatch", "a faces message without crops carries "
                              "exactly one payload")
    elif kind == "faces":
        crops = _require(h, "crops", (list,))
        scheduled = sum(1 for f in h["faces"] if f["classify"])
        if len(crops) != scheduled or len(frames) != 2 + len(crops):
            raise DecodeError("size_mismatch",
                              f"{scheduled} faces to classify, {len(crops)} crop shapes, "
                              f"{len(frames) - 2} crop payloads")
        for shape, payload in zip(crops, frames[2:]):
            if (not isinstance(shape, list) or len(shape) != 2
                    or not all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= MAX_SIDE
                               for s in shape)):
                raise DecodeError("bad_field", f"crop shape {shape!r}")
            ch, cw = shape
            if len(payload) != ch * cw * 3:
                raise DecodeError("size_mismatch", f"crop {cw}x{ch} has {len(payload)} bytes")
            msg.crops.append(np.frombuffer(payload, dtype=np.uint8).reshape(ch, cw, 3))
    elif len(frames) != 2:
        raise DecodeError("size_mismatch", f"{kind} carries exactly one payload")
    return msg


def stamp(header: dict, stage: str, t_ns: int) -> dict:
    """Return a copy of ``header`` with ``t_<stage>_ns`` set (ns since the Unix epoch)."""
    h = {k: v for k, v in header.items() if k != "v"}
    h[f"t_{stage}_ns"] = int(t_ns)
    return h
