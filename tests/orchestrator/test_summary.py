"""What the run reports: outputs that can be read, fps over the frames' own span, per-stream
lines, and the orchestrator's metrics port that answers only /metrics."""

from __future__ import annotations

import http.client
import os

import cv2
import numpy as np
from prometheus_client import CollectorRegistry, generate_latest

from services.orchestrator.options import StackOptions
from services.orchestrator.stack import Stack
from services.orchestrator.summary import (build_summary, format_summary, people_counts,
                                           written_outputs)
from services.sink.mqtt import MqttPublisher
from services.sink.mqtt_config import MqttConfig
from tests.conftest import free_port


def test_outputs_list_only_readable_videos_and_a_non_empty_events_file(tmp_path):
    # given a finished video, one cut off before its index (a killed writer) and an
    # empty events.jsonl (a run that failed before its first frame)
    good = tmp_path / "annotated.mp4"
    w = cv2.VideoWriter(str(good), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    for i in range(5):
        w.write(np.full((48, 64, 3), i * 40, np.uint8))
    w.release()
    (tmp_path / "annotated_b.mp4").write_bytes(good.read_bytes()[:200])
    (tmp_path / "events.jsonl").write_text("")
    (tmp_path / "people.jsonl").write_text('{"track": 1}\n')
    # then only the finished video and the people file are outputs; the cut one is named
    # as unreadable
    outputs, unreadable = written_outputs(tmp_path)
    assert outputs == [str(good.resolve()), str((tmp_path / "people.jsonl").resolve())]
    assert unreadable == [str((tmp_path / "annotated_b.mp4").resolve())]
    # and files an earlier run left (last written before this run began) are not
    os.utime(good, (1000.0, 1000.0))
    os.utime(tmp_path / "people.jsonl", (1000.0, 1000.0))
    assert written_outputs(tmp_path, since=2000.0)[0] == []


def test_summary_fps_is_over_the_frames_span_and_names_streams_gaps_and_breaks():
    status = {"frames": 120, "faces": 1, "fps": 9.3, "span_s": 12.8,
              "latency_s": {"p50": 0.1, "p95": 0.2, "p99": 0.3}, "streams": {"a": 60, "b": 60},
              "stream_stats": {"a": {"frames": 60, "fps": 4.7, "missing": 3, "live": False},
                               "b": {"frames": 60, "fps": 4.6, "missing": 9, "live": True}},
              "breaks": [{"frames": 1, "next_seq": {"a": 1}}]}
    s = build_summary(status, {}, {"sink": 1}, 18.0)
    out = format_summary(s)
    # the run's 18 s with its start-up is not the frames' span
    assert "fps          9.3  (frames at the sink over 12.8 s from the first to the last; " \
           "run 18.0 s in all)" in out
    assert "per stream   a 60 (4.7 fps), b 60 (4.6 fps)" in out
    # a live stream's seq gaps are its drops, not frames lost: only "a" is LOST
    assert "LOST         a 3 " in out and "b 9" not in out.split("LOST")[1]
    assert "continued after 1 frame (next seq a 1)" in out  # one frame, not "1 frames"


def test_summary_counts_person_events_an_absent_broker_never_got():
    # given the sink's MQTT publisher pointed at a port where no broker listens, and two
    # person events queued when the sink stops
    registry = CollectorRegistry()
    pub = MqttPublisher(MqttConfig(url=f"mqtt://127.0.0.1:{free_port()}"), registry).start()
    pub.publish_person({"stream": "door", "track": 1, "gender": "female"})
    pub.publish_person({"stream": "door", "track": 2, "gender": "male"})
    assert pub.close(timeout_s=0.5) == 2
    # when the run's summary is built from the sink's final metrics
    s = build_summary({"frames": 41}, {"sink": generate_latest(registry).decode()}, {}, 5.0)
    # then the two undelivered events are in the drops, not silently lost
    assert s["drops"] == {"mqtt/closed": 2.0}
    assert "drops        mqtt/closed 2" in format_summary(s)


def test_summary_counts_the_people_of_people_jsonl_by_gender(tmp_path):
    # given a run's people.jsonl with three person events and a torn last line (a sink
    # killed mid-write)
    people = tmp_path / "people.jsonl"
    people.write_text('{"track": 1, "gender": "female"}\n{"track": 2, "gender": "male"}\n'
                      '{"track": 3, "gender": "female"}\n{"track": 4, "gen')
    # when the summary is built
    s = build_summary({"frames": 41}, {}, {}, 5.0, people=people_counts(people))
    # then it counts the people by gender, the torn line left out
    assert s["people"] == {"total": 3, "by_gender": {"female": 2, "male": 1}}
    assert "people       3  (female 2, male 1; people.jsonl)" in format_summary(s)
    # and a run without people.jsonl (no --out) has no people line
    assert people_counts(None) is None and people_counts(tmp_path / "none.jsonl") is None
    assert "people " not in format_summary(build_summary({"frames": 1}, {}, {}, 1.0))


def test_orchestrator_metrics_port_answers_only_metrics(tmp_path):
    # given a stack's orchestrator metrics server (nothing else started)
    stack = Stack(StackOptions(sources=["x.mp4"], http_base_port=0))
    try:
        def ask(method, path):
            conn = http.client.HTTPConnection("127.0.0.1", stack.metrics_port, timeout=5)
            conn.request(method, path)
            r = conn.getresponse()
            body = r.read()
            conn.close()
            return r.status, body
        # then /metrics has the restart and stall counters, other paths are 404,
        # and HEAD gets the status without a body
        code, body = ask("GET", "/metrics")
        assert code == 200 and b'agegender_process_stalls_total{service="detector"} 0.0' in body
        assert ask("GET", "/")[0] == 404 and ask("GET", "/healthz")[0] == 404
        assert ask("HEAD", "/metrics") == (200, b"")
        assert ask("HEAD", "/") == (404, b"")
    finally:
        stack.shutdown()
        stack.cleanup()
