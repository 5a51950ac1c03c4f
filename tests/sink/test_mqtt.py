"""services.sink.mqtt against a real Mosquitto broker (started by the tests on a free
loopback port): topics and JSON, retained availability and the Last Will, the bounded
outbox across a broker restart, a publisher that never blocks, credentials kept out of
logs. States are waited for (messages received, gauges), never slept for."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from services.sink.config import SinkConfig
from services.sink.mqtt import DROP_REASONS, MqttMetrics, MqttPublisher
from services.sink.mqtt_config import MqttConfig, broker_address, topic_level
from tests.conftest import ROOT, free_port
from tests.mosquitto import mosquitto  # noqa: F401  (registers the fixture)
from tests.sink.test_sink import result_message, start_sink  # noqa: F401  (fixture)

WAIT_S = 60.0  # generous: the machine is shared; a hang is what this bound catches


def wait_until(predicate, timeout_s: float = WAIT_S, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value (returned); AssertionError
    after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"{what} not reached within {timeout_s} s")


def sample(registry, name, **labels):
    return registry.get_sample_value(name, labels or None) or 0.0


class Subscriber:
    """A paho subscriber that records ``(topic, payload, retain)``; reconnects by itself.

    Args:
        port: broker port on 127.0.0.1.
        topic: subscription filter.
        client_id / clean: a durable session (``clean=False``) keeps queued messages
            on the broker while this subscriber is away.
        auth: ``(username, password)``.
    """

    def __init__(self, port: int, topic: str = "#", client_id: str = "",
                 clean: bool = True, auth: tuple[str, str] | None = None):
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=clean)
        if auth:
            self.client.username_pw_set(*auth)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(WAIT_S), "subscriber never subscribed"

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

    def on(self, topic: str) -> list[tuple[bytes, bool]]:
        with self.lock:
            return [(p, r) for t, p, r in self.messages if t == topic]

    def events(self, suffix: str = "/person") -> list[tuple[str, dict]]:
        with self.lock:
            return [(t, json.loads(p)) for t, p, _ in self.messages if t.endswith(suffix)]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscribers():
    made: list[Subscriber] = []

    def make(*args, **kwargs) -> Subscriber:
        made.append(Subscriber(*args, **kwargs))
        return made[-1]

    yield make
    for s in made:
        s.close()


@pytest.fixture
def publishers():
    made: list[MqttPublisher] = []

    def make(registry=None, metrics=None, **fields) -> MqttPublisher:
        fields.setdefault("reconnect_max_s", 2)
        made.append(MqttPublisher(MqttConfig(**fields), registry, metrics).start())
        return made[-1]

    yield make
    for p in made:
        p.close(timeout_s=1.0)


def person(stream: str, seq: int, **extra) -> dict:
    return {"stream": stream, "track": seq + 1, "seq": seq, "age": 31.5,
            "age_range": [26.0, 37.0], "gender": "female", "gender_confidence": 0.91,
            **extra}


def test_person_events_arrive_as_json_on_their_topics(mosquitto, subscribers, publishers):
    # Given a broker, a subscriber on everything and a connected publisher
    broker = mosquitto()
    sub = subscribers(broker.port, "#")
    registry = CollectorRegistry()
    pub = publishers(registry, url=broker.url)
    wait_until(lambda: sample(registry, "agegender_mqtt_connected") == 1, what="connected")
    # When person events of two streams are published (NumPy values included), and a
    # frame event while frame events are off
    assert pub.publish_frame({"stream": "cam0", "frame": 1}) is False
    events = [person("cam0", 0, box=np.array([10, 20, 110, 140], dtype=np.int32)),
              person("Front Door", 1, quality=np.float32(0.75)), person("cam0", 2)]
    for e in events:
        assert pub.publish_person(e) is True
    # Then each arrives once, as JSON, on <prefix>/<stream>/person, in order per stream
    got = wait_until(lambda: len(sub.events()) >= 3 and sub.events(), what="3 events")
    assert [t for t, _ in got] == ["agegender/cam0/person", "agegender/Front Door/person",
                                   "agegender/cam0/person"]
    assert got[0][1]["box"] == [10, 20, 110, 140]
    assert got[1][1]["quality"] == 0.75 and got[1][1]["stream"] == "Front Door"
    assert [e["seq"] for _, e in got] == [0, 1, 2]
    assert not sub.events("/frame")  # frame events are off by default
    assert sub.on("agegender/availability")[0][0] == b"online"
    wait_until(lambda: sample(registry, "agegender_mqtt_published_total") == 3,
               what="3 acknowledged")
    for reason in DROP_REASONS:
        assert sample(registry, "agegender_mqtt_dropped_total", reason=reason) == 0
    # When the publisher closes cleanly, then availability says offline, retained
    assert pub.close(timeout_s=5.0) == 0
    late = subscribers(broker.port, "agegender/availability")
    assert wait_until(lambda: late.on("agegender/availability")) == [(b"offline", True)]
    assert sample(registry, "agegender_mqtt_connected") == 0


def test_frame_events_and_prefix_and_bad_events(mosquitto, subscribers, publishers):
    broker = mosquitto()
    sub = subscribers(broker.port, "site1/#")
    # metrics created at zero before the publisher exists (as a service does at start)
    registry = CollectorRegistry()
    metrics = MqttMetrics(registry)
    assert sample(registry, "agegender_mqtt_dropped_total", reason="outbox_full") == 0
    assert registry.get_sample_value("agegender_mqtt_connected") == 0
    pub = publishers(metrics=metrics, url=broker.url, topic_prefix="site1/people",
                     frames=True, qos=0, retain_person=True)
    wait_until(lambda: pub.connected, what="connected")
    # an event that is not JSON is counted and dropped, the next ones still go out
    assert pub.publish_person({"stream": "a", "x": object()}) is False
    assert pub.publish_person({"stream": "a", "age": math.nan}) is False
    assert pub.publish_frame({"stream": "a/b", "frame": 7, "faces": []}) is True
    assert pub.publish_person(person("a", 0)) is True
    wait_until(lambda: sub.events("/person"), what="person event")
    wait_until(lambda: sub.events("/frame"), what="frame event")
    assert sub.events("/frame") == [("site1/people/a_b/frame",
                                     {"stream": "a/b", "frame": 7, "faces": []})]
    assert sample(registry, "agegender_mqtt_dropped_total", reason="bad_event") == 2
    # retain_person: a late subscriber gets the last person event of the stream
    late = subscribers(broker.port, "site1/people/a/person")
    got = wait_until(lambda: late.on("site1/people/a/person"), what="retained person")
    assert json.loads(got[0][0])["seq"] == 0 and got[0][1] is True


PUBLISHER_SCRIPT = """
import sys, time
from services.sink.mqtt import MqttPublisher
from services.sink.mqtt_config import MqttConfig
pub = MqttPublisher(MqttConfig(url=sys.argv[1], topic_prefix=sys.argv[2])).start()
while not pub.connected:
    time.sleep(0.02)
print("connected", flush=True)
sys.stdin.read()  # until killed
"""


def test_availability_online_retained_then_will_offline_when_killed(mosquitto,
                                                                     subscribers):
    # Given a publisher in its own process, connected
    broker = mosquitto()
    sub = subscribers(broker.port, "cam/availability")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", PUBLISHER_SCRIPT, broker.url, "cam"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    try:
        wait_until(lambda: sub.on("cam/availability"), what="online")
        assert sub.on("cam/availability") == [(b"online", False)]
        # Then a subscriber that comes later gets "online" as a retained message
        late = subscribers(broker.port, "cam/availability")
        assert wait_until(lambda: late.on("cam/availability")) == [(b"online", True)]
        # When the publisher dies without a word (SIGKILL: no DISCONNECT packet)
        proc.send_signal(signal.SIGKILL)
        proc.wait(WAIT_S)
        # Then the broker publishes its Last Will: offline, and keeps it retained
        wait_until(lambda: len(sub.on("cam/availability")) >= 2, what="will")
        assert sub.on("cam/availability")[-1] == (b"offline", False)
        later = subscribers(broker.port, "cam/availability")
        assert wait_until(lambda: later.on("cam/availability")) == [(b"offline", True)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_outbox_keeps_events_while_broker_restarts_and_drops_oldest_beyond(
        mosquitto, subscribers, publishers):
    # Given a broker that keeps a durable subscriber's session across a restart
    broker = mosquitto(persistence=True)
    sub = subscribers(broker.port, "agegender/+/person", client_id="durable-sub",
                      clean=False)
    registry = CollectorRegistry()
    bound, extra = 50, 7
    pub = publishers(registry, url=broker.url, max_queued=bound, reconnect_min_s=1,
                     reconnect_max_s=2)
    wait_until(lambda: pub.connected, what="connected")
    pub.publish_person(person("door", 0))
    wait_until(lambda: sub.events(), what="first event")
    # When the broker goes away and events keep coming, more than the outbox holds
    broker.stop()
    wait_until(lambda: sample(registry, "agegender_mqtt_connected") == 0, what="down")
    for seq in range(1, 1 + bound + extra):
        assert pub.publish_person(person("door", seq)) is True
    # Then the oldest beyond the bound are dropped and counted, the rest wait
    assert sample(registry, "agegender_mqtt_dropped_total", reason="outbox_full") == extra
    assert sample(registry, "agegender_mqtt_outbox_messages") == bound
    # When the broker comes back on the same port
    broker.start()
    # Then every event within the bound arrives (QoS 1 may repeat one, never lose one)
    expected = [0] + list(range(1 + extra, 1 + bound + extra))
    wait_until(lambda: {e["seq"] for _, e in sub.events()} >= set(expected),
               what=f"{len(expected)} events")
    seqs = [e["seq"] for _, e in sub.events()]
    assert sorted(set(seqs)) == expected
    assert seqs == sorted(seqs), "events arrive in the order they were published"
    wait_until(lambda: sample(registry, "agegender_mqtt_published_total") == len(expected),
               what="all acknowledged")
    assert sample(registry, "agegender_mqtt_outbox_messages") == 0
    assert pub.close(timeout_s=5.0) == 0


def test_publish_never_blocks_while_no_broker_and_flushes_when_one_appears(
        mosquitto, publishers, caplog):
    caplog.set_level(logging.INFO, logger="services.sink.mqtt")
    # Given a publisher whose broker does not exist yet
    port = free_port()
    registry = CollectorRegistry()
    pub = publishers(registry, url=f"mqtt://127.0.0.1:{port}", max_queued=10,
                     reconnect_min_s=1, reconnect_max_s=1)
    # When many events are published from another thread
    done = threading.Event()

    def produce():
        for seq in range(25):
            pub.publish_person(person("cam1", seq))
        done.set()

    threading.Thread(target=produce, daemon=True).start()
    # Then publishing returns (it only queues) and the outbox keeps the newest 10
    assert done.wait(WAIT_S), "publish_person blocked while the broker is away"
    assert sample(registry, "agegender_mqtt_dropped_total", reason="outbox_full") == 15
    assert sample(registry, "agegender_mqtt_connected") == 0
    wait_until(lambda: "cannot connect" in caplog.text, what="a connect failure logged")
    # When a broker appears on that port, then the publisher connects and delivers them
    mosquitto(port=port)
    wait_until(lambda: sample(registry, "agegender_mqtt_published_total") == 10,
               what="10 delivered")
    assert pub.close(timeout_s=5.0) == 0


def test_credentials_never_appear_in_logs(mosquitto, subscribers, publishers, caplog,
                                          tmp_path, monkeypatch):
    caplog.set_level(logging.DEBUG)
    # Given a broker that requires a password
    pwfile = tmp_path / "passwd"
    passwd = "S3cret@pw/42"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pwfile), "agegender", passwd],
                   check=True, capture_output=True)
    broker = mosquitto(extra_conf=f"password_file {pwfile}")
    sub = subscribers(broker.port, "#", auth=("agegender", passwd))
    # When one publisher has the credentials in its URL (percent-encoded) ...
    registry = CollectorRegistry()
    url = f"mqtt://agegender:S3cret%40pw%2F42@127.0.0.1:{broker.port}"
    pub = publishers(registry, url=url)
    wait_until(lambda: pub.connected, what="authenticated connection")
    pub.publish_person(person("door", 0))
    wait_until(lambda: sub.events(), what="event")
    # ... and another one a wrong password from the sink's environment
    monkeypatch.setenv("AGEGENDER_SINK_MQTT_PASSWORD", "Wr0ng-Passw0rd")
    monkeypatch.setenv("AGEGENDER_SINK_MQTT_USERNAME", "agegender")
    wrong = publishers(**dict(SinkConfig(mqtt=True, mqtt_url=broker.url,
                                         mqtt_client_id="wrong").mqtt_config()))
    wait_until(lambda: "refused the connection" in caplog.text, what="refusal logged")
    assert not wrong.connected
    pub.close(timeout_s=5.0)
    # Then the logs name the broker but no secret, raw or encoded
    text = caplog.text
    assert f"127.0.0.1:{broker.port}" in text
    for secret in ("S3cret", "pw/42", "%40pw", "Wr0ng-Passw0rd", "agegender:"):
        assert secret not in text


def test_config_parsing_defaults_and_errors(monkeypatch):
    a = broker_address("mqtt://broker.local")
    assert (a.host, a.port, a.tls, a.username, a.password) == ("broker.local", 1883, False,
                                                               None, None)
    a = broker_address("MQTTS://u%40x:p%3Aw%2F@10.0.0.2")
    assert (a.port, a.tls, a.username, a.password) == (8883, True, "u@x", "p:w/")
    assert "p:w/" not in repr(a)
    for bad in ("rtsp://u:Secret-99@h", "mqtt://", "mqtt://u:Secret-99@h:99999",
                "mqtt://u:Secret-99@h/topic"):
        with pytest.raises(ValidationError) as exc:
            MqttConfig(url=bad)
        assert "Secret-99" not in str(exc.value)
    for bad in ("a/#", "+", "/a", "a/", "$SYS", "a//b"):
        with pytest.raises(ValidationError):
            MqttConfig(topic_prefix=bad)
    with pytest.raises(ValidationError):
        MqttConfig(qos=3)
    with pytest.raises(ValidationError):
        MqttConfig(unknown_key=1)
    monkeypatch.setenv("AGEGENDER_SINK_MQTT_PASSWORD", "from-env-Secret")
    cfg = SinkConfig().mqtt_config()
    assert cfg.password.get_secret_value() == "from-env-Secret"
    assert "from-env-Secret" not in repr(cfg) and "from-env-Secret" not in str(cfg)
    assert (cfg.url, cfg.topic_prefix, cfg.qos, cfg.frames, cfg.max_queued) == (
        "mqtt://localhost:1883", "agegender", 1, False, 1000)
    assert topic_level("a/b+c#d") == "a_b_c_d" and topic_level(None) == "unknown"


# --------------------------------------------------------------- the sink's mqtt output

def test_sink_publishes_frame_events_through_its_mqtt_output(mosquitto, subscribers,
                                                             start_sink):
    # Given a broker, a subscriber, and a sink with its MQTT output on (frame events too)
    broker = mosquitto()
    sub = subscribers(broker.port, "site/#")
    sink = start_sink(mqtt=True, mqtt_url=broker.url, mqtt_topic_prefix="site",
                      mqtt_frames=True)
    wait_until(lambda: sink.metric("agegender_mqtt_connected") == 1, what="connected")
    # When two result frames arrive
    push = sink.push()
    for seq in range(2):
        push.send_multipart(result_message("door", seq, n_faces=1))
    # Then each frame's events.jsonl record arrives under the prefix, without an image,
    # and the deliveries are counted
    events = wait_until(lambda: len(sub.events("/frame")) == 2 and sub.events("/frame"),
                        what="2 frame events")
    assert [t for t, _ in events] == ["site/door/frame"] * 2
    frame = events[0][1]
    assert (frame["stream"], frame["seq"]) == ("door", 0)
    assert frame["faces"][0]["gender"] == "female" and frame["faces"][0]["track"] == 1
    assert set(frame) == {"stream", "seq", "t_capture", "t_media", "latency_s", "width",
                          "height", "faces"}
    assert sub.on("site/availability")[-1][0] == b"online"
    wait_until(lambda: sink.metric("agegender_mqtt_published_total") == 2, what="2 acks")


def test_sink_publishes_a_person_event_when_the_detector_ends_a_track(mosquitto,
                                                                     subscribers,
                                                                     start_sink):
    # Given a broker, a subscriber, and a sink with its MQTT output on (defaults: person
    # events only)
    broker = mosquitto()
    sub = subscribers(broker.port, "agegender/#")
    sink = start_sink(mqtt=True, mqtt_url=broker.url)
    wait_until(lambda: sink.metric("agegender_mqtt_connected") == 1, what="connected")
    # When two people stand in 4 frames and the detector ends the second one's track
    push = sink.push()
    for seq in range(4):
        push.send_multipart(result_message("door", seq, n_faces=2, classified=seq == 0))
    push.send_multipart(result_message("door", 4, n_faces=1, classified=False,
                                       ended_tracks=[2]))
    # Then that person's event arrives on agegender/door/person: fused answer, frames
    # seen, best face; no frame event and no image
    (topic, event), = wait_until(lambda: sub.events("/person"), what="a person event")
    assert topic == "agegender/door/person"
    assert (event["stream"], event["track"], event["frames"], event["gender"]) == (
        "door", 2, 4, "male")
    assert event["ended"] == "track_ended" and event["best_face"]["seq"] == 0
    assert "thumbnail" not in event and sub.events("/frame") == []
    wait_until(lambda: sink.metric("agegender_mqtt_published_total") == 1, what="1 ack")


def test_person_events_go_through_the_record_outputs_to_mqtt(mosquitto, subscribers):
    # Given the sink's record outputs with MQTT on (frame events off: the default)
    from services.sink.main import build_outputs
    broker = mosquitto()
    sub = subscribers(broker.port, "agegender/#")
    cfg = SinkConfig(mqtt=True, mqtt_url=broker.url, http_port=0)
    registry = CollectorRegistry()
    records, images = build_outputs(cfg, None, None, MqttMetrics(registry))
    try:
        assert [o.name for o in records.outputs] == ["mqtt"] and not images
        # When the person-event hook is called (the tracking stage will call it)
        event = {"stream": "door", "track": 7, "age": 31.5, "gender": "female",
                 "dwell_s": 4.2}
        records.write_person(event)
        # Then it is published to <prefix>/<stream>/person and acknowledged
        assert wait_until(lambda: sub.events("/person"), what="person event") == [
            ("agegender/door/person", event)]
        wait_until(lambda: sample(registry, "agegender_mqtt_published_total") == 1,
                   what="1 ack")
        assert sub.events("/frame") == []
    finally:
        records.close()


def test_mqtt_metrics_exist_at_zero_and_nothing_is_published_by_default(start_sink):
    # Given a sink with its defaults (MQTT off)
    from services.sink.main import build_outputs
    sink = start_sink()
    # Then its MQTT metrics exist at zero (dashboards and the catalogue see them)
    assert sink.metric("agegender_mqtt_published_total") == 0.0
    assert sink.metric("agegender_mqtt_connected") == 0.0
    for reason in DROP_REASONS:
        assert sink.metric("agegender_mqtt_dropped_total", reason=reason) == 0.0
    # and the default outputs hold no MQTT output
    records, images = build_outputs(SinkConfig(http_port=0), None)
    assert "mqtt" not in [o.name for o in records.outputs + images.outputs]
