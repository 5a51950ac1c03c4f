"""The face record: one form on the wire (classified) and one JSON form (face_json)."""

from __future__ import annotations

import json
import math

from common import wire, wire_checks
from common.faces import FACE_KEYS, classified, face_json


def test_classified_keeps_the_face_and_bounds_the_prediction():
    # given a detector face with an extra key and a prediction with odd numbers
    face = {"box": [1, 2, 30, 40], "confidence": 0.91, "track": 3}
    pred = {"age": math.nan, "gender": "Female?", "gender_confidence": 1.7,
            "age_range": [40, 30]}
    # when merged
    out = classified(face, pred)
    # then the face's keys stay, NaN age becomes 0, the confidence is clipped, the range
    # sorted, and an unknown gender reads male (the wire accepts only the two labels)
    assert out["box"] == [1, 2, 30, 40] and out["track"] == 3
    assert out["age"] == 0.0 and out["gender_confidence"] == 1.0
    assert out["age_range"] == [30, 40] and out["gender"] == "male"
    assert classified(face, dict(pred, gender="female"))["gender"] == "female"
    assert classified(face, dict(pred, age=200.0))["age"] == wire_checks.MAX_AGE_YEARS
    # and no range is added when the model gives none
    assert "age_range" not in classified(face, dict(pred, age_range=None))
    assert face == {"box": [1, 2, 30, 40], "confidence": 0.91, "track": 3}  # not changed


def test_a_classified_face_passes_the_wire_validation():
    face = classified({"box": [0, 0, 10, 10], "confidence": 0.5, "track": 1, "quality": 0.4,
                       "classify": True},
                      {"age": -3.0, "gender": "male", "gender_confidence": math.nan})
    hdr = dict(wire.frame_header("s", 0, 1, 16, 16), kind="result", faces=[face])
    msg = wire.decode(wire.encode(hdr, [b"\x00" * 16 * 16 * 3]))
    assert msg.header["faces"][0]["age"] == 0.0


def test_face_json_is_plain_json_in_key_order():
    # given a classified face with numpy-like floats and fractional box values
    face = {"box": [1.4, 2.6, 30.0, 40.2], "confidence": 0.912345, "age": 31.25,
            "age_range": (28, 35), "gender": "female", "gender_confidence": 0.9, "track": 7}
    out = face_json(face)
    # then the documented keys in order, ints for the box, rounded confidence
    assert tuple(out) == FACE_KEYS
    assert out["box"] == [1, 3, 30, 40] and out["confidence"] == 0.9123
    assert out["age_range"] == [28, 35]
    assert json.loads(json.dumps(out)) == out
    # and the track and quality only when asked for; an unclassified face has None values
    assert face_json(face, track=True)["track"] == 7
    assert face_json(dict(face, quality=0.123456), track=True)["quality"] == 0.1235
    bare = face_json({"box": [0, 0, 2, 2], "confidence": 1.0}, track=True)
    assert bare["age"] is None and bare["gender"] is None and bare["track"] is None
    assert bare["quality"] is None
