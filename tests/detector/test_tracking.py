"""The detector's tracker and classification schedule (services.detector.tracking) on the
real clips with the real BlazeFace detector, and on boxes that cross and go missing."""

from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest

from common.detectors import make_detector
from services.detector.frames import detect_faces
from services.detector.tracking import Schedule, Tracking
from tests.conftest import clip_path

WALKING = "face-demographics-walking-and-pause.mp4"
LOOP_720P = "walking-and-pause-720p-loop.mp4"
LOOP_FRAMES = 41  # the 720p clip is the walking clip played 6 times


def _detections(name: str) -> list[tuple[np.ndarray, list[dict]]]:
    """Every frame of a shared clip with the default detector's faces."""
    det = make_detector(threads=1)
    cap = cv2.VideoCapture(str(clip_path(name)))
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append((frame, detect_faces(frame, det)))
    cap.release()
    return out


@pytest.fixture(scope="module")
def walking():
    return _detections(WALKING)


def _track(frames, every=0, drop=lambda seq, i: False, base=1000):
    """Run a Tracking over ``frames``; returns per frame the faces (with track, quality,
    classify) kept after ``drop(seq, face index)`` and the ended tracks."""
    tracking = Tracking(Schedule(every=every), clock_ms=lambda: base)
    out = []
    for seq, (image, faces) in enumerate(frames):
        faces = [copy.deepcopy(f) for i, f in enumerate(faces) if not drop(seq, i)]
        ended, _ = tracking.update("cam", seq, faces, image, fps=12.0)
        out.append((faces, ended))
    return out


def _by_position(faces: list[dict]) -> dict[int, int]:
    """Person index (left to right by box centre) -> track id."""
    order = sorted(faces, key=lambda f: f["box"][0] + f["box"][2])
    return {i: f["track"] for i, f in enumerate(order)}


def test_three_people_keep_three_tracks_and_are_classified_on_a_schedule(walking):
    # given the walking clip (3 people, 41 frames at 12 fps) / when tracked
    out = _track(walking)
    # then every face carries a track id above the clock base, 3 ids in all, one each
    ids = {f["track"] for faces, _ in out for f in faces}
    assert len(ids) == 3 and min(ids) > 1000
    first = _by_position(out[0][0])
    assert all(_by_position(faces) == first for faces, _ in out)
    # and no track ended while they stood there
    assert all(not ended for _, ended in out)
    # and each face has a quality in 0..1
    assert all(0 < f["quality"] <= 1 for faces, _ in out for f in faces)
    # and every track is classified on its first frame, then far less often than every
    # frame, but at least once a second (12 frames)
    assert all(f["classify"] for f in out[0][0])
    for track in ids:
        seqs = [seq for seq, (faces, _) in enumerate(out) for f in faces
                if f["track"] == track and f["classify"]]
        assert seqs[0] == 0 and np.all(np.diff(seqs) <= 12) and len(seqs) < 41 / 3
    # and classify_every 1 classifies every face of every frame (the old behaviour)
    assert all(f["classify"] for faces, _ in _track(walking, every=1) for f in faces)


def test_missed_detections_keep_the_track(walking):
    # given each person's face missing in 2 frames running, at different times
    gaps = {0: (5, 6), 1: (14, 15), 2: (22, 23)}

    def drop(seq, i):
        order = sorted(range(len(walking[seq][1])),
                       key=lambda j: walking[seq][1][j]["box"][0])
        return any(order[p] == i and seq in frames for p, frames in gaps.items())
    # when tracked / then the same 3 tracks follow them throughout
    out = _track(walking, drop=drop)
    assert len({f["track"] for faces, _ in out for f in faces}) == 3
    assert all(not ended for _, ended in out)


def test_people_crossing_keep_their_tracks_even_when_one_is_hidden():
    # given two faces walking towards each other at 10 px per frame, crossing at frame
    # 20, the one behind hidden for 2 frames and both missed for 1
    tracking = Tracking(clock_ms=lambda: 0)
    seen = []
    for seq in range(40):
        a, b = 20 + 10 * seq, 420 - 10 * seq
        faces = [{"box": [a, 100, a + 40, 140], "confidence": 0.9},
                 {"box": [b, 104, b + 40, 144], "confidence": 0.9}]
        faces = faces[:1] if seq in (19, 20) else [] if seq == 21 else faces
        tracking.update("cam", seq, faces, None, fps=12.0)
        seen.append([f["track"] for f in faces])
    # then the left-to-right walker keeps track 1 and the other track 2 after the crossing
    assert seen[0] == [1, 2] and seen[-1] == [1, 2]
    assert {t for s in seen for t in s} == {1, 2}


def test_tracks_end_after_the_memory_and_ids_never_repeat_after_a_restart():
    def frame(tracking, seq, xs):
        faces = [{"box": [x, 10, x + 40, 50], "confidence": 0.9} for x in xs]
        ended, _ = tracking.update("cam", seq, faces, None, fps=12.0)
        return [f["track"] for f in faces], ended
    # given a face seen for 24 frames (2 s), then gone
    clock = [5_000]
    tracking = Tracking(memory_s=1.0, clock_ms=lambda: clock[0])
    for seq in range(24):
        ids, ended = frame(tracking, seq, [100])
    assert ids == [5_001] and not ended
    # when frames without it follow / then its track ends once, after about 1 s of frames
    ends = [seq for seq in range(24, 60) if frame(tracking, seq, [])[1] == [5_001]]
    assert len(ends) == 1 and 24 + 11 <= ends[0] <= 24 + 14
    # and a new face gets a new id
    assert frame(tracking, 60, [300])[0] == [5_002]
    # and the end of the stream forgets its tracks; the stream coming back (a restarted
    # source) continues above the ids given
    assert tracking.end("cam") == [5_002]
    assert frame(tracking, 0, [300])[0] == [5_003]
    # and a restarted detector (a new Tracking, a later clock in ms) starts above them
    clock[0] = 6_000
    assert frame(Tracking(clock_ms=lambda: clock[0]), 0, [100])[0] == [6_001]


def test_a_clearly_better_face_is_classified_at_once():
    # given a track classified on a 40 px face (size 0.625 of the 64 px reference)
    tracking = Tracking(Schedule(every=100, margin=0.1), clock_ms=lambda: 0)
    image = np.random.default_rng(0).integers(0, 256, (240, 320, 3), np.uint8)

    def frame(seq, side):
        faces = [{"box": [132 - side // 2, 92 - side // 2, 132 + side // 2,
                          92 + side // 2], "confidence": 0.9}]
        _, reasons = tracking.update("cam", seq, faces, image, fps=12.0)
        return reasons[0], faces[0]["quality"]
    reason, q0 = frame(0, 40)
    assert reason == "new"
    # when the same face grows a little, nothing; when it is much larger, at once
    assert frame(1, 42)[0] is None
    reason, q = frame(2, 64)
    assert reason == "better" and q > q0 + 0.1
    # and a face no better than the best classified one waits for the period
    assert all(frame(seq, 64)[0] is None for seq in range(3, 102))
    assert frame(102, 64)[0] == "periodic"


@pytest.mark.slow
def test_720p_loop_ids_are_stable_within_each_loop_and_classifier_work_drops():
    # given the 720p clip (the walking clip 6 times) / when tracked with the defaults
    frames = _detections(LOOP_720P)
    out = _track(frames)
    # then within each loop each of the 3 people keeps one track id (no switch)
    for loop in range(len(frames) // LOOP_FRAMES):
        per_person: dict[int, set] = {}
        for faces, _ in out[loop * LOOP_FRAMES:(loop + 1) * LOOP_FRAMES]:
            for person, track in _by_position(faces).items():
                per_person.setdefault(person, set()).add(track)
        assert all(len(t) == 1 for t in per_person.values()), (loop, per_person)
    # and the classifier gets at least 3x fewer faces than every face of every frame
    faces = sum(len(f) for f, _ in out)
    classified = sum(f["classify"] for faces_, _ in out for f in faces_)
    print(f"720p loop: {faces} faces, {classified} to classify "
          f"({faces / classified:.1f}x fewer), {len({f['track'] for fs, _ in out for f in fs})}"
          " tracks")
    assert faces >= 3 * classified


def test_still_photos_are_scenes_of_their_own():
    # given an image folder's photos (still frames) with a face at the same place in each
    tracking = Tracking(clock_ms=lambda: 7_000)
    seen = []
    for seq in range(3):
        faces = [{"box": [100, 50, 160, 110], "confidence": 0.9},
                 {"box": [300, 50, 360, 110], "confidence": 0.9}][:1 + (seq == 1)]
        ended, reasons = tracking.update("photos", seq, faces, None, fps=1.0, still=True)
        seen.append(([f["track"] for f in faces], ended, [f["classify"] for f in faces],
                     reasons))
    # then every face is a new person, classified at once, whose track ends with its photo
    assert [s[0] for s in seen] == [[7_001], [7_002, 7_003], [7_004]]
    assert [s[1] for s in seen] == [[7_001], [7_002, 7_003], [7_004]]
    assert all(all(s[2]) and set(s[3]) == {"new"} for s in seen)
    # and the stream's ids stay unique after it ends and comes back
    assert tracking.end("photos") == []
    faces = [{"box": [100, 50, 160, 110], "confidence": 0.9}]
    tracking.update("photos", 0, faces, None, fps=1.0, still=True)
    assert faces[0]["track"] == 7_005
