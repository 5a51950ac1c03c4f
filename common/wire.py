"""Versioned wire schema and msgpack codec for every message between services.

A message is a ZeroMQ multipart message ``[header, payload...]``:

* ``header`` is a msgpack map with string keys. Always present: ``v`` (schema version,
  int), ``kind`` (one of :data:`KINDS`), ``stream`` (str, 1-128 characters, no ``/``, ``\\``
  or control characters: it becomes a metric label and part of file names), ``seq``
  (int, per stream, starting at 0) and ``t_capture_ns`` (int, wall clock at capture in ns
  since the Unix epoch). Per-stage timestamps are ints in ns named ``t_<stage>_ns``.
  Optional ``live`` (bool): the frame comes from a live source and may be dropped when
  stale. Optional ``still`` (bool): the frame is a still photo (an image-folder file), a
  scene of its own: no face is tracked from one still to the next. Optional ``fps`` (source frame rate, frames/s, finite, 0 < fps <= 1000).
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
:func:`decode` validates everything and raises
:class:`common.wire_checks.DecodeError`, whose ``reason`` is one of
:data:`common.wire_checks.DROP_REASONS` (the taxonomy and the field checks are in
:mod:`common.wire_checks`), so callers can drop and count.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import msgpack
import numpy as np

from common.wire_checks import (DecodeError, NonStringKey, check_ended_tracks, check_face,
                                check_fusion, check_header, require, string_map)

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


def decode(frames: Sequence[bytes], max_bytes: int = MAX_MESSAGE_BYTES) -> Message:
    """Validate and decode a multipart message.

    Args:
        frames: the multipart frames as received (bytes or zmq Frame-like buffers).
        max_bytes: reject messages whose total size exceeds this (bytes).

    Returns:
        A :class:`Message`; image and crops are zero-copy read-only views on the frames.

    Raises:
        DecodeError: with ``reason`` in :data:`common.wire_checks.DROP_REASONS`.
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
        # built by string_map (keys are never hashed before their type is checked).
        h = msgpack.unpackb(bytes(raw), raw=False, strict_map_key=False,
                            object_pairs_hook=string_map,
                            max_bin_len=MAX_HEADER_BYTES, max_str_len=MAX_HEADER_BYTES,
                            max_array_len=100_000, max_map_len=10_000, max_ext_len=0)
    except NonStringKey as exc:
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
    check_header(h)
    msg = Message(header=h)
    if kind == "eos":
        if len(frames) != 1:
            raise DecodeError("size_mismatch", "eos carries no payload")
        return msg

    width = require(h, "width", (int,))
    height = require(h, "height", (int,))
    encoding = require(h, "encoding", (str,))
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
        faces = require(h, "faces", (list,))
        for face in faces:
            check_face(face, kind, width, height)
        check_ended_tracks(h)
    if kind == "result":
        check_fusion(h)
    if kind == "faces" and "crops" not in h:
        if encoding != "bgr8":
            raise DecodeError("bad_field", "a faces message without crops must carry the "
                              "frame as bgr8")
        if len(frames) != 2:
            raise DecodeError("size_mismatch", "a faces message without crops carries "
                              "exactly one payload")
    elif kind == "faces":
        crops = require(h, "crops", (list,))
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
