"""The classifier service loop over real ZeroMQ sockets (stand-in model, in a thread)."""

from __future__ import annotations

import contextlib
import threading
import time

import numpy as np
import pytest
import zmq
from prometheus_client import CollectorRegistry

from common import wire
from services.classifier.config import ClassifierConfig
from services.classifier.main import main
from tests.classifier.helpers import faces_message


@contextlib.contextmanager
def running_classifier(tmp_path, model, **overrides):
    """The classifier in a thread on ipc:// endpoints with real sockets around it; yields
    ``(push, pull, reg, stop)`` and checks on the way out that it stopped cleanly."""
    faces_ep = f"ipc://{tmp_path}/faces"
    results_ep = f"ipc://{tmp_path}/results"
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    pull.bind(results_ep)
    cfg = ClassifierConfig(input=f"bind:{faces_ep}", output=f"connect:{results_ep}",
                           http_port=0, **{"max_batch": 8, "max_wait_ms": 200, "hwm": 100,
                                           **overrides})
    stop = threading.Event()
    reg = CollectorRegistry()
    rc = {}
    t = threading.Thread(target=lambda: rc.setdefault(
        "rc", main(cfg, stop=stop, model=model, registry=reg)), daemon=True)
    t.start()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(faces_ep)
    try:
        yield push, pull, reg, stop
    finally:
        stop.set()
        t.join(3)
        push.close(0)
        pull.close(0)
        ctx.term()
    assert not t.is_alive(), "classifier did not stop within 3 s"
    assert rc.get("rc") == 0


@pytest.fixture
def classifier(request, tmp_path, stand_in_model):
    """A running classifier with the stand-in model; yields (push, pull, reg, model).

    Indirect parameters (a dict) override its configuration."""
    with running_classifier(tmp_path, stand_in_model, **getattr(request, "param", {})) as (
            push, pull, reg, _):
        yield push, pull, reg, stand_in_model


def recv(pull, timeout_ms=5000):
    assert pull.poll(timeout_ms), "no message from the classifier"
    return wire.decode(pull.recv_multipart())


def test_batches_across_frames_and_streams_and_forwards_eos_last(classifier):
    push, pull, reg, model = classifier
    # given frames of two streams with 3 faces each, a frame without faces, then EOS
    sent = [("a", 0, 3), ("b", 0, 3), ("a", 1, 0), ("a", 2, 3), ("b", 1, 3)]
    for stream, seq, n in sent:
        push.send_multipart(faces_message(stream, seq, n))
    push.send_multipart(wire.encode({"kind": "eos", "stream": "a", "seq": 3,
                                     "t_capture_ns": time.time_ns()}))
    # when the results come back
    got = [recv(pull) for _ in range(len(sent) + 1)]
    # then every frame comes back once, in order, classified, and EOS comes after them
    assert [(m.stream, m.seq) for m in got[:-1]] == [(s, q) for s, q, _ in sent]
    assert got[-1].kind == "eos" and got[-1].stream == "a"
    for m, (_, _, n) in zip(got, sent):
        assert m.kind == "result" and len(m.header["faces"]) == n
        assert all({"age", "gender", "gender_confidence", "age_range"} <= set(f)
                   for f in m.header["faces"])
        assert "t_classifier_ns" in m.header
    # and crops of several frames shared model calls (12 crops in fewer than 4 calls)
    assert sum(model.batches) == 12 and len(model.batches) < 4
    assert max(model.batches) <= 8
    assert reg.get_sample_value("agegender_faces_classified_total",
                                {"model": "stand-in"}) == 12
    assert reg.get_sample_value("agegender_classifier_batch_size_count") == len(model.batches)


@pytest.mark.parametrize("classifier", [{"max_wait_ms": 1000.0}], indirect=True)
def test_frame_without_faces_passes_straight_through(classifier):
    push, pull, reg, model = classifier
    # given an idle classifier that holds queued faces up to 1 s for a batch to fill
    # when a frame without faces arrives
    push.send_multipart(faces_message("a", 0, 0))
    # then it comes back before that wait could have ended (it never joined the queue)
    m = recv(pull, timeout_ms=950)
    assert m.kind == "result" and m.header["faces"] == []
    # and no model call was made for it
    assert model.batches == []


def test_malformed_input_is_counted_and_service_keeps_serving(classifier):
    push, pull, reg, model = classifier
    # given garbage and a wrong-version message
    push.send_multipart([b"\x00garbage"])
    bad = faces_message("a", 0, 1)
    push.send_multipart([wire.msgpack.packb({"v": 99, "kind": "faces"})] + bad[1:])
    # and a message of a kind this input does not take (a raw frame)
    push.send_multipart(wire.encode_frame(wire.frame_header("a", 0, time.time_ns(), 0, 0),
                                          np.zeros((4, 4, 3), np.uint8)))
    # when a valid frame follows
    push.send_multipart(faces_message("a", 1, 1))
    # then it is answered and the bad ones were counted by reason
    assert recv(pull).seq == 1
    assert reg.get_sample_value("agegender_messages_malformed_total",
                                {"stage": "classifier", "reason": "not_msgpack"}) == 1
    assert reg.get_sample_value("agegender_messages_malformed_total",
                                {"stage": "classifier", "reason": "bad_version"}) == 1
    assert reg.get_sample_value("agegender_messages_malformed_total",
                                {"stage": "classifier", "reason": "bad_kind"}) == 1


def test_frames_queued_at_stop_are_counted_as_shutdown_drops(tmp_path, stand_in_model):
    with running_classifier(tmp_path, stand_in_model, max_wait_ms=1000.0) as (
            push, pull, reg, stop):
        # given a frame whose face waits for a batch that will not fill for 1 s
        push.send_multipart(faces_message("a", 0, 1))
        deadline = time.monotonic() + 10
        while reg.get_sample_value("agegender_queue_depth", {"stage": "classifier"}) != 1:
            assert time.monotonic() < deadline, "the frame was never queued"
            time.sleep(0.01)                       # poll interval of a wait for a state
        # when the service stops
        stop.set()
    # then the queued frame is counted as dropped at shutdown, not as a send timeout
    dropped = {r: reg.get_sample_value("agegender_frames_dropped_total",
                                       {"stage": "classifier", "reason": r})
               for r in ("shutdown", "send_timeout")}
    assert dropped == {"shutdown": 1, "send_timeout": 0}
    assert stand_in_model.batches == []
