"""Face tracks and per-track smoothing in the sink (services/sink/tracking.py)."""

from __future__ import annotations

from services.sink.tracking import FaceTracker


def face(x, gender="female", conf=0.9, age=30.0, rng=(26, 34)):
    return {"box": [x, 50, x + 40, 110], "confidence": 0.9, "age": age,
            "age_range": list(rng), "gender": gender, "gender_confidence": conf}


def test_two_people_keep_their_tracks_and_a_one_frame_flip_is_smoothed_away():
    tracker = FaceTracker(window=5)
    # given two people walking right, reported in varying order, the woman misread once
    seen = []
    for k in range(6):
        woman = face(20 + 3 * k, "male" if k == 3 else "female", 0.6 if k == 3 else 0.9)
        man = face(200 + 3 * k, "male", 0.95, age=50.0 + k, rng=(45 + k, 55 + k))
        faces = [woman, man] if k % 2 else [man, woman]
        out = tracker.update("cam", 100.0 + k / 12, faces)
        seen.append({f["box"][0] < 150: f for f in out})
    # then each keeps one track id over all frames, ids per stream from 1
    assert {s[True]["track"] for s in seen} == {seen[0][True]["track"]}
    assert {s[False]["track"] for s in seen} == {seen[0][False]["track"]}
    assert {seen[0][True]["track"], seen[0][False]["track"]} == {1, 2}
    # and the misread frame still says female (median P(female) of 0.9, 0.9, 0.9, 0.4)
    assert all(s[True]["gender"] == "female" for s in seen)
    assert seen[3][True]["gender_confidence"] == 0.9
    # and the man's age and range are medians over the last 5 frames (ages 51..55)
    assert seen[5][False]["age"] == 53.0 and seen[5][False]["age_range"] == [48, 58]


def test_one_confident_misreading_first_is_outvoted_by_the_next_frames():
    # given a track whose first frame reads male at 0.72, then female at a weak 0.52
    tracker = FaceTracker(window=15)
    genders = [tracker.update("cam", 1.0, [face(20, "male", 0.72)])[0]["gender"]]
    for k in range(1, 6):
        genders.append(tracker.update("cam", 1.0 + k / 12, [face(20, "female", 0.52)])[0]
                       ["gender"])
    # then from the third frame on the track reads female (the mean would need 12 frames)
    assert genders == ["male", "male", "female", "female", "female", "female"]


def test_window_one_passes_per_frame_values_and_new_faces_get_new_tracks():
    tracker = FaceTracker(window=1)
    a = tracker.update("cam", 1.0, [face(20)])
    b = tracker.update("cam", 1.1, [face(22, "male", 0.7)])
    # a face far away from every track starts a new one
    c = tracker.update("cam", 1.2, [face(23, "male", 0.7), face(300)])
    assert a[0]["track"] == b[0]["track"] == c[0]["track"] == 1 and c[1]["track"] == 2
    assert b[0]["gender"] == "male" and b[0]["gender_confidence"] == 0.7


def test_tracks_end_after_a_gap_streams_are_separate_and_late_frames_pass_unsmoothed():
    started = []
    tracker = FaceTracker(window=10, max_gap_s=1.0, on_new_track=started.append)
    tracker.update("cam", 10.0, [face(20)])
    # the same place 1.5 s later is a new track; another stream counts from 1
    assert tracker.update("cam", 11.5, [face(20)])[0]["track"] == 2
    assert tracker.update("door", 11.5, [face(20)])[0]["track"] == 1
    # a frame older than one already seen keeps its own values and no track
    late = tracker.update("cam", 11.0, [face(20, "male", 0.8)])
    assert late[0]["track"] is None and late[0]["gender"] == "male"
    # after the end of a stream its tracks end, but its ids are not given out again (one
    # id never names two people in one output)
    tracker.end("cam")
    assert tracker.update("cam", 20.0, [face(20)])[0]["track"] == 3
    assert started == ["cam", "cam", "door", "cam"]


def test_ids_continue_above_the_ones_an_earlier_sink_gave_out():
    # given a tracker of a restarted sink whose predecessor gave out ids up to 7 on "cam"
    tracker = FaceTracker(last_ids={"cam": 7})
    # then new tracks on "cam" start at 8; other streams at 1
    assert tracker.update("cam", 1.0, [face(20)])[0]["track"] == 8
    assert tracker.update("door", 1.0, [face(20)])[0]["track"] == 1
