"""People at the sink: fusion of a track's answers, person events (people.jsonl, outputs,
metrics, thumbnails, the live page's counts) over real sockets."""

from __future__ import annotations

import json
import math
import urllib.request

import cv2
import pytest

from common import wire
from common.fusion import Evidence
from services.sink.people import People, age_band
from tests.sink.test_sink import eos, result_message, start_sink  # noqa: F401 (fixture)
from tests.waits import wait_for


def test_fused_gender_is_a_weighted_mean_of_log_odds_not_a_vote_count():
    # given a person read female at 0.9 on 9 poor faces and male at 0.95 on one sharp face
    ev = Evidence()
    for _ in range(9):
        ev.add(0.1, 30.0, "female", 0.9, [25, 35])
    ev.add(0.9, 40.0, "male", 0.95, [35, 45])
    f = ev.fused(rho=0.6)
    # then the weights decide: the log-odds mean is (0.9 ln 9 - 0.9 ln 19) / 1.8
    p_female = 1 / (1 + math.exp(-(0.9 * math.log(9) - 0.9 * math.log(19)) / 1.8))
    assert f.gender == "male" and f.gender_confidence == pytest.approx(1 - p_female)
    # and the age is the weighted mean: (9 * 0.1 * 30 + 0.9 * 40) / 1.8 = 35
    assert f.age == pytest.approx(35.0)
    # and ten identical confident frames are no surer than one (frames are correlated)
    same = Evidence()
    for _ in range(10):
        same.add(0.5, 30.0, "female", 0.8, [25, 35])
    assert same.fused().gender_confidence == pytest.approx(0.8)


def test_fused_interval_narrows_with_evidence_but_not_below_the_correlated_floor():
    # given the same 10-year-wide interval on 1, 16 and 400 equally good frames, rho 0.6
    def width(n, rho=0.6):
        ev = Evidence()
        for _ in range(n):
            ev.add(0.5, 40.0, "male", 0.9, [35, 45])
        lo, hi = ev.fused(rho).age_range
        return hi - lo
    # then one frame keeps its interval, more frames narrow it ...
    assert width(1) == 10
    assert width(16) == 8                    # 5 * sqrt(0.4 / 16 + 0.6) = 3.95 -> [36, 44]
    # ... towards 5 * sqrt(0.6) = 3.87 years each side, never below it
    assert width(400) == math.ceil(40 + 3.88) - math.floor(40 - 3.88) == 8
    # and with independent frames (rho 0) it keeps narrowing as 1/sqrt(n)
    assert width(400, rho=0.0) == 2          # 5 / 20 = 0.25 -> [39, 41]
    # and unequal weights count as fewer frames (Kish's effective size)
    ev = Evidence()
    ev.add(1.0, 40, "male", 0.9, [35, 45])
    ev.add(0.01, 40, "male", 0.9, [35, 45])
    assert 1.0 < ev.fused().n_eff < 1.03


def test_people_follow_tracks_and_end_on_ended_tracks_eos_and_timeout():
    people = People(min_frames=2, timeout_s=10.0)

    def frame(seq, faces, ended=(), t=None):
        h = {"stream": "door", "seq": seq,
             "t_capture_ns": int((1000.0 + (seq if t is None else t)) * 1e9),
             "faces": faces}
        if ended:
            h["ended_tracks"] = list(ended)
        return people.observe(h)

    def face(track, x=10, **answer):
        return {"box": [x, 10, x + 40, 50], "confidence": 0.9, "track": track,
                "quality": answer.pop("quality", 0.5), **answer}
    female = dict(age=30.0, age_range=[25, 35], gender="female", gender_confidence=0.8)
    # given track 7 classified on its first frame, then only followed
    shown, events = frame(0, [face(7, **female), face(8, x=100)])
    # then every face shows its person's answer so far; track 8 has none yet
    assert shown[0]["gender"] == "female" and "gender" not in shown[1]
    shown, _ = frame(1, [face(7, quality=0.9), face(8, x=100)])
    assert shown[0]["gender"] == "female" and shown[0]["age_range"] == [25, 35]
    assert people.in_view("door") == 2
    # when the detector ends track 7 at frame 2
    _, events = frame(2, [face(8, x=100)], ended=[7])
    # then one person event with its whereabouts and best face
    (e,) = events
    assert (e["stream"], e["track"], e["frames"], e["frames_classified"]) == ("door", 7, 2, 1)
    assert e["first_seen"]["seq"] == 0 and e["last_seen"]["seq"] == 1
    assert e["dwell_s"] == pytest.approx(1.0) and e["ended"] == "track_ended"
    assert e["best_face"] == {"seq": 1, "box": [10, 10, 50, 50], "quality": 0.9}
    assert e["gender"] == "female" and e["age"] == 30.0
    assert e["first_seen"]["t_wall"].endswith("Z") and e["first_seen"]["t_media"] is None
    # and a late frame of track 7 (another classifier worker) shows its final answer
    # without opening it again
    shown, events = frame(1, [face(7)])
    assert shown[0]["gender"] == "female" and events == [] and people.in_view("door") == 1
    # and a track seen once is no person (flicker); a person unseen for 10 s times out
    frame(3, [face(9, x=200)])
    _, events = frame(20, [], t=20)
    assert [(x["track"], x["ended"]) for x in events] == [(8, "timeout")]
    assert people.end_stream("door") == [] and people.counted["door"] == 2


def test_each_face_of_a_still_photo_is_one_person_event():
    # given an image folder's photo (a still frame) with two faces, each its own track
    # that the detector ends with the photo
    people = People(min_frames=3)
    female = dict(age=30.0, age_range=[25, 35], gender="female", gender_confidence=0.8)
    male = dict(age=40.0, age_range=[35, 45], gender="male", gender_confidence=0.9)
    faces = [{"box": [10, 10, 50, 50], "confidence": 0.9, "track": 1, "quality": 0.5,
              **female},
             {"box": [90, 10, 130, 50], "confidence": 0.9, "track": 2, "quality": 0.5,
              **male}]
    header = {"stream": "photos", "seq": 0, "t_capture_ns": 10**18, "still": True,
              "faces": faces, "ended_tracks": [1, 2]}
    # when the sink takes it
    _, events = people.observe(header)
    # then both people are counted although seen on one frame (min_frames is for video)
    assert [(e["track"], e["gender"], e["frames"]) for e in events] == \
        [(1, "female", 1), (2, "male", 1)]
    # and a one-frame track of video still makes no event (a detector flicker)
    video = dict(header, seq=1, still=False, faces=[dict(faces[0], track=3)],
                 ended_tracks=[3])
    assert people.observe(video)[1] == []


@pytest.mark.parametrize("age, band", [(None, "unknown"), (5, "0-17"), (17.9, "0-17"),
                                       (18, "18-24"), (34.99, "25-34"), (64, "55-64"),
                                       (90, "65+")])
def test_age_bands(age, band):
    assert age_band(age) == band


def test_sink_writes_person_events_counts_people_and_shows_them_live(start_sink, tmp_path):
    # given a sink with thumbnails on
    sink = start_sink(out_dir=tmp_path / "out", expected_streams=1, video=False,
                      person_thumbnails_dir=tmp_path / "faces")
    push = sink.push()
    # when two people stand in 4 frames, classified on the first (then only followed),
    # the left one read at frame 2 once more, with another answer, and ended at frame 4
    answers = {0: {"age": 40.0, "age_range": [35, 45]}}
    for seq in range(4):
        push.send_multipart(result_message("cam", seq, 2, classified=seq in (0, 2),
                                           answers=answers if seq == 2 else None,
                                           t_media_ns=seq * 83_333_333))
    push.send_multipart(result_message("cam", 4, 1, classified=False, ended_tracks=[2]))
    # then the live page's counts show 1 person counted and 1 in view
    wait_for(lambda: json.loads(urllib.request.urlopen(
        f"http://127.0.0.1:{sink.cfg.http_port}/people.json", timeout=3).read())
        == {"cam": {"in_view": 1, "counted": 1}}, 10, "the live counts")
    push.send_multipart(eos("cam", 5))
    assert sink.ended() and sink.result["rc"] == 0
    out = tmp_path / "out"
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    # and every frame's faces show the person's fused answer so far: frame 1 repeats
    # frame 0, frame 2 onwards is the mean of 28.4 and 40.0 (equal quality)
    ages = [e["faces"][0]["age"] for e in events[:4]]
    assert ages == [pytest.approx(28.4)] * 2 + [pytest.approx(34.2)] * 2
    assert all(e["faces"][0]["track"] == 1 and e["faces"][0]["quality"] == 0.5
               for e in events)
    # and people.jsonl has one event per person: track 2 when it ended, track 1 at eos
    people = [json.loads(x) for x in (out / "people.jsonl").read_text().splitlines()]
    assert [(p["track"], p["ended"], p["gender"]) for p in people] == [
        (2, "track_ended", "male"), (1, "eos", "female")]
    one = people[1]
    assert one["frames"] == 5 and one["frames_classified"] == 2
    # (half-widths 2.5 and 5 years: 3.75 * sqrt(0.4 / 2 + 0.6) = 3.35 about 34.2)
    assert one["age"] == pytest.approx(34.2) and one["age_range"] == [30, 38]
    # media time: seq 3 at 0.25 s; the frame without it ends the person at capture time
    assert one["first_seen"]["t_media"] == 0.0
    assert people[0]["last_seen"]["t_media"] == 0.25 and people[0]["dwell_s"] == 0.25
    # and the thumbnail of the best face was written and named
    thumb = cv2.imread(str(tmp_path / "faces" / one["thumbnail"]))
    assert one["thumbnail"] == "cam_1.jpg" and thumb.shape == (40, 30, 3)
    # and the metrics counted both people by gender and age band, with their dwell
    assert sink.metric("agegender_people_total", stream="cam", gender="female",
                       age_band="25-34") == 1
    assert sink.metric("agegender_people_total", stream="cam", gender="male",
                       age_band="25-34") == 1
    assert sink.metric("agegender_people_total", stream="cam", gender="unknown",
                       age_band="unknown") == 0
    assert sink.metric("agegender_person_dwell_seconds_count", stream="cam") == 2
    assert sink.metric("agegender_people_in_view", stream="cam") == 0
    assert wire.SCHEMA_VERSION == 2


def test_a_restarted_sink_continues_the_live_people_counts(start_sink, tmp_path):
    # given a sink that counted two people of "cam" before it was stopped
    out = tmp_path / "out"
    first = start_sink(out_dir=out, video=False)
    push = first.push()
    for seq in range(4):
        push.send_multipart(result_message("cam", seq, 2, classified=seq == 0))
    push.send_multipart(result_message("cam", 4, 0, classified=False, ended_tracks=[1, 2]))
    wait_for(lambda: len((out / "people.jsonl").read_text().splitlines()) == 2, 10,
             "two person events")
    first.stop.set()
    assert first.ended()
    # when a restarted sink (append) continues the folder and one more person ends
    again = start_sink(out_dir=out, video=False, append=True)
    push = again.push()
    for seq in range(5, 9):
        push.send_multipart(result_message("cam", seq, 1, classified=seq == 5))
    push.send_multipart(result_message("cam", 9, 0, classified=False, ended_tracks=[1]))
    # then the live page counts all three people, as people.jsonl does
    wait_for(lambda: json.loads(urllib.request.urlopen(
        f"http://127.0.0.1:{again.cfg.http_port}/people.json", timeout=3).read())
        == {"cam": {"in_view": 0, "counted": 3}}, 10, "the continued live counts")
    assert len((out / "people.jsonl").read_text().splitlines()) == 3
