"""The two forms of a ``faces`` message (frame or crops) and the tracking fields of wire
v2 (track, classify, quality, ended_tracks, fusion), decoded strictly."""

from __future__ import annotations

import time

import numpy as np
import pytest

from common import wire, wire_checks
from common.images import encode_jpeg

FACES = [{"box": [2, 2, 12, 14], "confidence": 0.9, "track": 5, "quality": 0.6,
          "classify": True},
         {"box": [20, 4, 30, 16], "confidence": 0.8, "track": 6, "quality": 0.3,
          "classify": True}]
PREDICTION = {"age": 30.0, "age_range": [25, 36], "gender": "female",
              "gender_confidence": 0.9}


def _header(**extra) -> dict:
    return {**wire.frame_header("cam", 5, time.time_ns(), 40, 24), "kind": "faces",
            "faces": FACES, **extra}


@pytest.fixture
def frame():
    return np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)


def test_frame_form_carries_the_raw_frame_only(frame):
    # given boxes and the raw frame, no crops / when decoded
    msg = wire.decode(wire.encode(_header(), [frame]))
    # then the frame is there, there are no crops, and each face can be cut from it
    assert msg.crops == [] and "crops" not in msg.header
    x1, y1, x2, y2 = msg.header["faces"][1]["box"]
    np.testing.assert_array_equal(msg.image[y1:y2, x1:x2], frame[4:16, 20:30])


def test_crops_form_carries_a_jpeg_frame_and_one_crop_per_face(frame):
    # given a JPEG frame and the two crops / when decoded
    crops = [frame[2:14, 2:12], frame[4:16, 20:30]]
    msg = wire.decode(wire.encode(_header(encoding="jpeg", crops=[[12, 10], [12, 10]]),
                                  [encode_jpeg(frame), *crops]))
    # then the image stays encoded and the crops arrive exactly
    assert msg.image is None and msg.image_bytes[:2] == b"\xff\xd8"
    assert len(msg.crops) == 2
    for got, want in zip(msg.crops, crops):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("header, payloads, reason", [
    # frame form: a JPEG frame leaves the classifier nothing to cut from
    (_header(encoding="jpeg"), ["jpeg"], "bad_field"),
    # frame form: a stray payload beside the frame
    (_header(), ["frame", "frame"], "size_mismatch"),
    # crops form: fewer crop payloads than announced
    (_header(crops=[[12, 10], [12, 10]]), ["frame", "crop"], "size_mismatch"),
    # crops form: a shape list for one face of two
    (_header(crops=[[12, 10]]), ["frame", "crop"], "size_mismatch"),
    # crops form: a crop whose bytes disagree with its shape
    (_header(crops=[[12, 10], [11, 10]]), ["frame", "crop", "crop"], "size_mismatch"),
    # crops form: crops that are not a list
    (_header(crops="12x10"), ["frame"], "bad_field"),
])
def test_both_forms_are_decoded_strictly(frame, header, payloads, reason):
    parts = {"frame": frame, "crop": frame[2:14, 2:12], "jpeg": encode_jpeg(frame)}
    with pytest.raises(wire_checks.DecodeError) as err:
        wire.decode(wire.encode(header, [parts[p] for p in payloads]))
    assert err.value.reason == reason


KEYPOINTS = [[4.5, 6.0], [9.5, 6.0], [7.0, 9.0], [7.0, 11.5], [2.0, 8.0], [12.0, 8.0]]


def test_keypoints_travel_in_faces_and_results(frame):
    # given a face with six keypoints (a BlazeFace face) and one without (an SSD face)
    faces = [dict(FACES[0], keypoints=KEYPOINTS), FACES[1]]
    msg = wire.decode(wire.encode(dict(_header(), faces=faces), [frame]))
    # then both decode, the keypoints as sent, the other face with none
    assert msg.header["faces"][0]["keypoints"] == KEYPOINTS
    assert "keypoints" not in msg.header["faces"][1]
    # and a result keeps them
    result = dict(_header(), kind="result", faces=[dict(f, **PREDICTION) for f in faces])
    assert wire.decode(wire.encode(result, [frame])).header["faces"][0]["keypoints"] == KEYPOINTS


@pytest.mark.parametrize("keypoints", [
    KEYPOINTS[:5],                                   # five pairs
    KEYPOINTS + [[1.0, 1.0]],                        # seven
    [[1.0, 2.0, 3.0]] + KEYPOINTS[1:],               # a triple
    [[float("nan"), 2.0]] + KEYPOINTS[1:],           # not finite
    [[True, 2.0]] + KEYPOINTS[1:],                   # a bool
    [["1", 2.0]] + KEYPOINTS[1:],                    # a string
    [[41.0, 2.0]] + KEYPOINTS[1:],                   # outside the 40x24 frame
    [[1.0, -0.5]] + KEYPOINTS[1:],
    {"right_eye": [1, 2]},                           # not a list
    None,
])
def test_malformed_keypoints_are_bad_fields(frame, keypoints):
    faces = [dict(FACES[0], keypoints=keypoints)]
    with pytest.raises(wire_checks.DecodeError) as err:
        wire.decode(wire.encode(dict(_header(), faces=faces), [frame]))
    assert err.value.reason == "bad_field"


def test_only_the_faces_to_classify_carry_crops(frame):
    # given two faces of which only the second is to be classified
    faces = [dict(FACES[0], classify=False), FACES[1]]
    crop = frame[4:16, 20:30]
    # when sent in the crops form with one crop / then it decodes: the crop is that face's
    msg = wire.decode(wire.encode(_header(faces=faces, encoding="jpeg", crops=[[12, 10]]),
                                  [encode_jpeg(frame), crop]))
    assert len(msg.crops) == 1
    np.testing.assert_array_equal(msg.crops[0], crop)
    # and a crop for every face is a size mismatch (one face is not classified)
    with pytest.raises(wire_checks.DecodeError) as err:
        wire.decode(wire.encode(_header(faces=faces, encoding="jpeg",
                                        crops=[[12, 10], [12, 10]]),
                                [encode_jpeg(frame), crop, crop]))
    assert err.value.reason == "size_mismatch"


def test_results_carry_predictions_only_where_classified_and_the_fusion_map(frame):
    # given a result whose first face was classified and whose second was not, with the
    # tracks ended at this frame and the model's fusion map
    faces = [dict(FACES[0], **PREDICTION), dict(FACES[1], classify=False)]
    header = dict(_header(), kind="result", faces=faces, ended_tracks=[3, 4],
                  fusion={"rho": 0.55})
    # when decoded / then everything arrives as sent
    h = wire.decode(wire.encode(header, [frame])).header
    assert h["faces"][0]["gender"] == "female" and "age" not in h["faces"][1]
    assert h["ended_tracks"] == [3, 4] and h["fusion"] == {"rho": 0.55}
    assert [f["track"] for f in h["faces"]] == [5, 6]


def _face(**changes):
    return [dict(FACES[0], **changes)]


@pytest.mark.parametrize("kind, faces, extra", [
    ("faces", [{k: v for k, v in FACES[0].items() if k != "track"}], {}),  # no track
    ("faces", _face(track=0), {}),
    ("faces", _face(track=-4), {}),
    ("faces", _face(track=True), {}),
    ("faces", _face(track=2.0), {}),
    ("faces", _face(track=2 ** 63), {}),
    ("faces", _face(quality=1.5), {}),
    ("faces", _face(quality=float("nan")), {}),
    ("faces", _face(quality="0.5"), {}),
    ("faces", [{k: v for k, v in FACES[0].items() if k != "quality"}], {}),
    ("faces", _face(classify=1), {}),
    ("faces", [{k: v for k, v in FACES[0].items() if k != "classify"}], {}),
    ("faces", FACES, {"ended_tracks": 3}),
    ("faces", FACES, {"ended_tracks": [3, 3]}),
    ("faces", FACES, {"ended_tracks": [0]}),
    ("faces", FACES, {"ended_tracks": [True]}),
    ("faces", FACES, {"ended_tracks": list(range(1, wire_checks.MAX_ENDED_TRACKS + 2))}),
    ("result", _face(age=30.0), {}),                               # age without gender
    ("result", _face(**dict(PREDICTION, gender_confidence=None)), {}),
    ("result", _face(age_range=[20, 30]), {}),                     # a range, no answer
    ("result", _face(**PREDICTION), {"fusion": {"rho": 1.5}}),
    ("result", _face(**PREDICTION), {"fusion": {"rho": "0.6"}}),
    ("result", _face(**PREDICTION), {"fusion": [0.6]}),
    ("result", [{k: v for k, v in FACES[0].items() if k != "track"}], {}),
])
def test_tracking_fields_are_decoded_strictly(frame, kind, faces, extra):
    # given a faces or result message with one bad tracking field / when decoded
    header = dict(_header(), kind=kind, faces=faces, **extra)
    with pytest.raises(wire_checks.DecodeError) as err:
        wire.decode(wire.encode(header, [frame]))
    # then it is a bad field, never a crash
    assert err.value.reason == "bad_field"
