"""Issue 5, point 6: the wire decoder never fails with anything but DecodeError, and the
encoder accepts what services really hand it (numpy scalars, non-contiguous crops).

Fuzzing uses hypothesis: arbitrary bytes, arbitrary msgpack maps (including bytes keys,
NaN, bools where ints belong, huge ints, nested containers) and well-formed headers with
one field mutated.
"""

from __future__ import annotations

import math

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import wire, wire_checks

FUZZ = settings(max_examples=400, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

# msgpack-representable leaves; ints span the whole msgpack range (int64 .. uint64)
leaves = (st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 64 - 1)
          | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20)
          | st.binary(max_size=20))
values = st.recursive(leaves, lambda c: st.lists(c, max_size=4)
                      | st.dictionaries(st.text(max_size=8) | st.binary(max_size=8), c,
                                        max_size=4), max_leaves=12)
keys = st.sampled_from(["v", "kind", "stream", "seq", "t_capture_ns", "width", "height",
                        "encoding", "faces", "crops", "live", "t_detector_ns"]) \
    | st.text(max_size=10) | st.binary(max_size=6)


def _decode_only_decode_error(frames) -> None:
    try:
        wire.decode(frames)
    except wire_checks.DecodeError as exc:
        assert exc.reason in wire_checks.DROP_REASONS


@FUZZ
@given(st.lists(st.binary(max_size=256), min_size=0, max_size=4))
def test_decode_arbitrary_bytes_raises_only_decode_error(frames):
    # given arbitrary multipart frames / when decoded / then only DecodeError escapes
    _decode_only_decode_error(frames)


@FUZZ
@given(st.dictionaries(keys, values, max_size=12), st.lists(st.binary(max_size=64), max_size=3))
def test_decode_arbitrary_msgpack_maps_raise_only_decode_error(header, payloads):
    # given any msgpack map as header (bytes keys, NaN, bool, nested) plus payloads
    packed = msgpack.packb(header, use_bin_type=True)
    # when decoded / then only DecodeError escapes
    _decode_only_decode_error([packed, *payloads])


def _valid(kind: str) -> tuple[dict, list]:
    img = np.zeros((4, 6, 3), np.uint8)
    h = wire.frame_header("cam", 3, 1_000, 6, 4)
    if kind == "eos":
        return dict(kind="eos", stream="cam", seq=3, t_capture_ns=1_000), []
    if kind == "frame":
        return h, [img]
    if kind == "faces":
        return dict(h, kind="faces", faces=[{"box": [1, 1, 3, 3], "confidence": 0.9,
                                             "track": 4, "quality": 0.5, "classify": True}],
                    crops=[[2, 2]]), [img, np.zeros((2, 2, 3), np.uint8)]
    return dict(h, kind="result", faces=[{"box": [1, 1, 3, 3], "confidence": 0.9,
                                          "track": 4, "quality": 0.5, "age": 31.5, "age_range": [25, 32],
                                          "gender": "female", "gender_confidence": 0.8}]), [img]


@FUZZ
@given(st.sampled_from(["eos", "frame", "faces", "result"]), keys, values,
       st.integers(0, 3))
def test_decode_valid_header_with_one_field_mutated(kind, key, value, drop_payload):
    # given a valid message whose header has one field replaced by an arbitrary value
    header, payloads = _valid(kind)
    header = dict(header)
    header[key] = value
    frames = [msgpack.packb(dict(header, v=wire.SCHEMA_VERSION), use_bin_type=True)]
    frames += [bytes(np.ascontiguousarray(p)) for p in payloads][:len(payloads) - drop_payload
                                                                    if drop_payload else None]
    # when decoded / then it either decodes or raises DecodeError, never another exception
    _decode_only_decode_error(frames)


non_string_keys = (st.integers(-(2 ** 63), 2 ** 64 - 1) | st.binary(max_size=6)
                   | st.booleans() | st.none() | st.floats(allow_nan=False)
                   | st.lists(st.integers(0, 9), max_size=2))


@FUZZ
@given(st.sampled_from(["eos", "frame", "faces", "result"]), non_string_keys, values,
       st.sampled_from(["header", "face", "nested"]))
def test_a_non_string_key_anywhere_is_a_bad_field(kind, key, value, where):
    # given a valid message with one map key that is not a string (int, bytes, bool, nil,
    # float or an array: all well-formed msgpack) in the header, a face map or a nested map
    header, payloads = _valid(kind)
    header = dict(header, v=wire.SCHEMA_VERSION)
    if where == "face" and kind in ("faces", "result"):
        header["faces"] = [{**header["faces"][0], key if not isinstance(key, list)
                            else tuple(key): value}]
    elif where == "nested":
        header["extra"] = {"ok": 1, key if not isinstance(key, list) else tuple(key): value}
    else:
        header[key if not isinstance(key, list) else tuple(key)] = value
    frames = [msgpack.packb(header, use_bin_type=True)]
    frames += [bytes(np.ascontiguousarray(p)) for p in payloads]
    # when decoded / then the reason is always bad_field (one taxonomy: wrong field names)
    with pytest.raises(wire_checks.DecodeError) as err:
        wire.decode(frames)
    assert err.value.reason == "bad_field", err.value


@FUZZ
@given(st.sampled_from(["faces", "result"]), st.sampled_from(
    ["box", "confidence", "keypoints", "age", "age_range", "gender", "gender_confidence"]),
    values)
def test_decoded_face_fields_are_usable_by_consumers(kind, field, value):
    # given a faces/result message whose face map has one field replaced
    header, payloads = _valid(kind)
    face = dict(header["faces"][0], **{field: value})
    frames = wire.encode(dict(header, faces=[face]), payloads)
    # when it decodes at all
    try:
        msg = wire.decode(frames)
    except wire_checks.DecodeError:
        return
    # then every field a consumer formats or compares is of the documented type and finite
    for f in msg.header["faces"]:
        x1, y1, x2, y2 = f["box"]
        assert all(math.isfinite(c) for c in f["box"]) and x2 > x1 and y2 > y1
        assert 0.0 <= f["confidence"] <= 1.0
        if "keypoints" in f:
            assert len(f["keypoints"]) == 6 and all(
                len(p) == 2 and all(math.isfinite(c) for c in p) for p in f["keypoints"])
        if kind == "result":
            assert math.isfinite(f["age"]) and 0 <= f["age"] <= 150
            assert f["gender"] in ("female", "male")
            assert 0.0 <= f["gender_confidence"] <= 1.0
            rng = f.get("age_range")
            assert rng is None or (len(rng) == 2 and all(math.isfinite(a) for a in rng))
            f"{f['age']:.0f} {f['gender']} {f['gender_confidence']:.2f}"  # sink-style format


def test_header_announcing_4gb_binary_is_rejected_without_allocating():
    # given a hand-made msgpack map {"v": 1, "x": bin32 of length 0xFFFFFFFF} with 3 bytes
    raw = b"\x82\xa1v\x01\xa1x\xc6\xff\xff\xff\xff" + b"abc"
    # when decoded / then not_msgpack (no 4 GB allocation, no MemoryError)
    with pytest.raises(wire_checks.DecodeError) as err:
        wire.decode([raw])
    assert err.value.reason == "not_msgpack"


def test_header_announcing_huge_array_and_map_is_rejected():
    # given array32 / map32 headers announcing 2**32-1 entries
    for raw in (b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff"):
        with pytest.raises(wire_checks.DecodeError) as err:
            wire.decode([raw, b"x" * 10])
        assert err.value.reason == "not_msgpack"


def test_bool_and_nan_fields_are_bad_fields():
    header, payloads = _valid("faces")
    cases = [dict(header, seq=True), dict(header, width=True), dict(header, t_capture_ns=1.5),
             dict(header, faces=[{"box": [float("nan"), 1, 3, 3], "confidence": 0.9}]),
             dict(header, faces=[{"box": [1, 1, 3, 3], "confidence": float("nan")}]),
             dict(header, faces=[{"box": [1, 1, 3, 3], "confidence": True}])]
    for h in cases:
        with pytest.raises(wire_checks.DecodeError) as err:
            wire.decode(wire.encode(h, payloads))
        assert err.value.reason == "bad_field", h


def test_encoder_round_trips_numpy_scalars_and_non_contiguous_crops():
    # given a frame, a non-contiguous crop (a strided slice of it) and numpy scalars in the
    # header, as a detector produces them
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    crop = frame[10:30:2, 5:45:3]          # non-contiguous, (10, 14, 3)
    flipped = frame[::-1, ::-1][:8, :8]    # negative strides
    fortran = np.asfortranarray(frame[:6, :5])
    crops = [crop, flipped, fortran]
    header = dict(wire.frame_header("cam", np.int64(7), np.uint64(123), np.int32(64),
                                    np.int16(48)),
                  kind="faces", live=np.bool_(True),
                  faces=[{"box": np.array([1, 2, 3, 4], np.int32), "confidence": np.float32(0.5),
                          "track": np.int64(3), "quality": np.float32(0.5),
                          "classify": np.bool_(True)},
                         {"box": (np.float64(0), np.int8(0), np.uint8(8), 8),
                          "confidence": np.float16(0.25), "track": np.uint16(4),
                          "quality": np.float16(0.25), "classify": np.bool_(True)},
                         {"box": [0, 0, 5, 6], "confidence": np.float64(1.0),
                          "track": 5, "quality": 1.0, "classify": True}],
                  crops=[list(c.shape[:2]) for c in crops])
    # when encoded and decoded
    msg = wire.decode(wire.encode(header, [frame, *crops]))
    # then every value is a plain type and every pixel survives
    assert msg.seq == 7 and type(msg.seq) is int
    assert msg.header["live"] is True
    assert msg.header["faces"][0]["box"] == [1, 2, 3, 4]
    assert msg.header["faces"][1]["confidence"] == 0.25
    np.testing.assert_array_equal(msg.image, frame)
    for got, want in zip(msg.crops, crops):
        np.testing.assert_array_equal(got, want)


def test_encode_frame_accepts_non_contiguous_image():
    # given a channel slice of a BGRA image (non-contiguous (H, W, 3))
    bgra = np.arange(5 * 7 * 4, dtype=np.uint8).reshape(5, 7, 4)
    msg = wire.decode(wire.encode_frame(wire.frame_header("s", 0, 0, 0, 0), bgra[:, :, :3]))
    np.testing.assert_array_equal(msg.image, bgra[:, :, :3])
    assert (msg.header["width"], msg.header["height"]) == (7, 5)
