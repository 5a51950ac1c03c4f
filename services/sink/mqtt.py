"""Publish person events (and, optionally, per-frame events) to an MQTT broker.

This is where Home Assistant, Node-RED or Frigate-style automations listen. The publisher
uses paho-mqtt 2.x (``CallbackAPIVersion.VERSION2``) with its network thread
(``loop_start``); it never blocks the caller. Topics (``<prefix>`` = ``topic_prefix``,
default ``agegender``):

====================================  =====================================  ===========
topic                                 payload                                retained
====================================  =====================================  ===========
``<prefix>/availability``             ``online`` on connect; ``offline`` as  yes
                                      Last Will (connection lost) and on a
                                      clean close
``<prefix>/<stream>/person``          one JSON object per person event       ``retain_person``
``<prefix>/<stream>/frame``           one JSON object per frame event (off   ``retain_frame``
                                      unless ``frames`` is true)
====================================  =====================================  ===========

**Outbox.** :meth:`MqttPublisher.publish_person` and :meth:`~MqttPublisher.publish_frame`
only append to a bounded in-memory outbox (``max_queued`` messages) and return; one sender
thread hands messages to paho while the connection is up, at most ``max_inflight``
unacknowledged at a time. While the broker is away messages wait in the outbox; when it is
full the **oldest** message is dropped and counted
(``agegender_mqtt_dropped_total{reason="outbox_full"}``). Messages already handed to paho
when the connection dropped (at most ``max_inflight``) are kept by paho and re-sent after
reconnecting (QoS >= 1). So nothing is lost within ``max_queued`` + ``max_inflight``
messages; the outbox lives in memory and does not survive a restart of the sink.

**Reconnect.** paho retries the first connection and every lost one with exponential
backoff from ``reconnect_min_s`` doubling up to ``reconnect_max_s`` seconds
(``reconnect_delay_set``).

**Metrics** (in the registry passed in): ``agegender_mqtt_published_total`` (events
acknowledged by the broker; QoS 0: written to the connection),
``agegender_mqtt_dropped_total{reason}`` (reasons :data:`DROP_REASONS`, created at zero),
``agegender_mqtt_connected`` (1 while connected), ``agegender_mqtt_outbox_messages``.

**Settings**: :class:`services.sink.mqtt_config.MqttConfig` (with the broker URL's
parsing and topic levels).

**Credentials** come from the URL (``mqtt://user:pass@host``, percent-encoded) or,
better, from ``username`` / ``password`` (the sink's environment ``AGEGENDER_SINK_MQTT_USERNAME`` /
``AGEGENDER_SINK_MQTT_PASSWORD``); every log line shows the URL through
:func:`common.redact.redact`, and validation errors never echo the input.

**In the sink** the publisher is the ``mqtt`` output (:mod:`services.sink.mqtt_output`),
configured by the sink's ``mqtt_*`` settings (:class:`services.sink.config.SinkConfig`).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import socket
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from prometheus_client import CollectorRegistry, Counter, Gauge

from common.redact import redact
from services.sink.mqtt_config import MqttConfig, broker_address, topic_level

log = logging.getLogger(__name__)

#: Why a message was dropped (``agegender_mqtt_dropped_total{reason}``):
#: ``outbox_full`` (the oldest message gave way to a new one while the broker was away or
#: slow), ``bad_event`` (the event cannot be encoded as JSON), ``rejected`` (paho refused
#: it, e.g. a payload over the MQTT limit), ``closed`` (still unsent or unacknowledged when
#: :meth:`MqttPublisher.close` gave up waiting).
DROP_REASONS = ("outbox_full", "bad_event", "rejected", "closed")
#: Availability payloads (Home Assistant's defaults for ``payload_available`` /
#: ``payload_not_available``).
ONLINE, OFFLINE = "online", "offline"


def _jsonable(obj: Any) -> Any:
    """``json.dumps`` default: NumPy scalars and arrays as Python numbers and lists."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


@dataclasses.dataclass
class _Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class MqttMetrics:
    """The publisher's Prometheus metrics (see the module docs)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        r = registry if registry is not None else CollectorRegistry()
        self.registry = r
        self.published = Counter("agegender_mqtt_published_total", "Events delivered to the "
                                 "MQTT broker (QoS >= 1: acknowledged).", registry=r)
        self.dropped = Counter("agegender_mqtt_dropped_total", "Events not delivered to "
                               "the MQTT broker, by reason.", ["reason"], registry=r)
        self.connected = Gauge("agegender_mqtt_connected", "1 while connected to the MQTT "
                               "broker.", registry=r)
        self.outbox = Gauge("agegender_mqtt_outbox_messages", "Events waiting in the MQTT "
                            "outbox.", registry=r)
        for reason in DROP_REASONS:
            self.dropped.labels(reason)


class MqttPublisher:
    """Publishes events to MQTT without ever blocking the caller (see the module docs).

    Args:
        config: broker, topics, QoS, outbox bound.
        registry: Prometheus registry for the ``agegender_mqtt_*`` metrics (a new one when
            ``None``).
        metrics: already registered metrics to use instead (a service that creates them
            at zero at start, before it knows whether MQTT is on); ``registry`` is then
            ignored.

    Usage::

        pub = MqttPublisher(MqttConfig(url="mqtt://broker:1883"), registry)
        pub.start()
        pub.publish_person({"stream": "door", "track": 3, ...})
        pub.close(timeout_s=2.0)

    All public methods are thread-safe.
    """

    def __init__(self, config: MqttConfig, registry: CollectorRegistry | None = None,
                 metrics: MqttMetrics | None = None):
        self.config = config
        self.metrics = metrics if metrics is not None else MqttMetrics(registry)
        self.address = broker_address(config.url)
        self.url_shown = redact(config.url)
        self.availability_topic = f"{config.topic_prefix}/availability"
        client_id = config.client_id or f"agegender-{socket.gethostname()}-{os.getpid()}"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv311, clean_session=True)
        self.client.max_inflight_messages_set(config.max_inflight)
        self.client.max_queued_messages_set(0)  # the outbox below is the bound
        self.client.reconnect_delay_set(config.reconnect_min_s,
                                        max(config.reconnect_min_s, config.reconnect_max_s))
        self.client.will_set(self.availability_topic, OFFLINE, qos=1, retain=True)
        username = config.username or self.address.username
        password = (config.password.get_secret_value() if config.password is not None
                    else self.address.password)
        if username is not None or password is not None:
            self.client.username_pw_set(username or "", password)
        if self.address.tls:
            self.client.tls_set(ca_certs=str(config.tls_ca_file) if config.tls_ca_file
                                else None)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish

        self._cond = threading.Condition()
        self._outbox: collections.deque[_Message] = collections.deque()
        self._unacked: dict[int, bool] = {}   # mid -> is an event (else availability)
        self._early_acks: set[int] = set()    # acks that came before publish() returned
        self._connected = False
        self._failures = 0
        self._stop = False
        self._sender: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> "MqttPublisher":
        """Start connecting in the background (returns at once; a broker that is down is
        retried with backoff) and start the sender thread."""
        log.info("MQTT: publishing to %s under %s/ (QoS %d, outbox %d messages%s)",
                 self.url_shown, self.config.topic_prefix, self.config.qos,
                 self.config.max_queued, ", frame events on" if self.config.frames else "")
        self.client.connect_async(self.address.host, self.address.port,
                                  keepalive=self.config.keepalive_s)
        self.client.loop_start()
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-sender",
                                        daemon=True)
        self._sender.start()
        return self

    def close(self, timeout_s: float = 5.0) -> int:
        """Flush the outbox for up to ``timeout_s`` seconds, publish ``offline`` (retained)
        when connected, disconnect and stop the threads.

        Returns:
            The number of events given up (counted as dropped, reason ``closed``).
        """
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._cond:
            while (self._outbox or any(self._unacked.values())) and self._connected:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.1))
            self._stop = True
            lost = len(self._outbox) + sum(self._unacked.values())
            self._outbox.clear()
            self._cond.notify_all()
        if lost:
            self.metrics.dropped.labels("closed").inc(lost)
            log.warning("MQTT: %d event(s) not delivered to %s at close", lost,
                        self.url_shown)
        self.metrics.outbox.set(0)
        if self._connected:
            try:
                info = self.client.publish(self.availability_topic, OFFLINE, qos=1,
                                           retain=True)
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError) as exc:
                log.debug("MQTT: offline not published at close: %s", exc)
        self.client.disconnect()
        self.client.loop_stop()
        if self._sender is not None:
            self._sender.join(timeout=1.0)
        self._set_connected(False)
        return lost

    def __enter__(self) -> "MqttPublisher":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        """True while the broker connection is up."""
        return self._connected

    # -- publishing -------------------------------------------------------------------

    def publish_person(self, event: dict) -> bool:
        """Queue one person event for ``<prefix>/<event["stream"]>/person`` (JSON).

        Returns at once. Returns ``False`` when the event cannot be encoded as JSON
        (dropped, reason ``bad_event``), ``True`` otherwise.
        """
        return self._enqueue(event, "person", self.config.retain_person)

    def publish_frame(self, event: dict) -> bool:
        """Queue one per-frame event for ``<prefix>/<event["stream"]>/frame`` (JSON) when
        ``frames`` is on; returns ``False`` (and does nothing) when it is off."""
        if not self.config.frames:
            return False
        return self._enqueue(event, "frame", self.config.retain_frame)

    def _enqueue(self, event: dict, kind: str, retain: bool) -> bool:
        try:
            payload = json.dumps(event, separators=(",", ":"), default=_jsonable,
                                 allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            self.metrics.dropped.labels("bad_event").inc()
            log.warning("MQTT: %s event dropped (not JSON: %s)", kind, exc)
            return False
        stream = event.get("stream") if isinstance(event, dict) else None
        msg = _Message(f"{self.config.topic_prefix}/{topic_level(stream)}/{kind}", payload,
                       self.config.qos, retain)
        with self._cond:
            if self._stop:
                self.metrics.dropped.labels("closed").inc()
                return True
            if len(self._outbox) >= self.config.max_queued:
                self._outbox.popleft()
                self.metrics.dropped.labels("outbox_full").inc()
            self._outbox.append(msg)
            self.metrics.outbox.set(len(self._outbox))
            self._cond.notify_all()
        return True

    # -- sender thread ----------------------------------------------------------------

    def _ready(self) -> bool:
        return bool(self._connected and self._outbox
                    and len(self._unacked) < self.config.max_inflight)

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self._ready():
                    self._cond.wait(0.5)
                if self._stop:
                    return
                msg = self._outbox.popleft()
                self.metrics.outbox.set(len(self._outbox))
            try:
                info = self.client.publish(msg.topic, msg.payload, qos=msg.qos,
                                           retain=msg.retain)
            except ValueError as exc:  # topic or payload paho refuses
                self.metrics.dropped.labels("rejected").inc()
                log.warning("MQTT: message to %s rejected: %s", msg.topic, exc)
                continue
            with self._cond:
                if msg.qos == 0:
                    if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                        self.metrics.published.inc()
                    else:  # not connected after all: paho does not keep QoS 0
                        self._outbox.appendleft(msg)
                        self.metrics.outbox.set(len(self._outbox))
                elif info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                    self._track(info.mid, event=True)  # NO_CONN: paho re-sends it on connect
                else:
                    self.metrics.dropped.labels("rejected").inc()
                    log.warning("MQTT: message to %s rejected (%s)", msg.topic,
                                mqtt.error_string(info.rc))

    def _track(self, mid: int, event: bool) -> None:
        """Remember an unacknowledged QoS >= 1 message (caller holds ``_cond``)."""
        if mid in self._early_acks:
            self._early_acks.discard(mid)
            if event:
                self.metrics.published.inc()
        else:
            self._unacked[mid] = event

    # -- paho callbacks (network thread) ----------------------------------------------

    def _set_connected(self, up: bool) -> None:
        with self._cond:
            self._connected = up
            self.metrics.connected.set(1 if up else 0)
            self._cond.notify_all()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._failures += 1
            log.warning("MQTT: %s refused the connection: %s (retrying with backoff)",
                        self.url_shown, reason_code)
            return
        log.info("MQTT: connected to %s", self.url_shown)
        self._failures = 0
        info = client.publish(self.availability_topic, ONLINE, qos=1, retain=True)
        with self._cond:
            self._track(info.mid, event=False)
        self._set_connected(True)

    def _on_connect_fail(self, client, userdata) -> None:
        self._failures += 1
        level = logging.WARNING if self._failures == 1 else logging.DEBUG
        log.log(level, "MQTT: cannot connect to %s (attempt %d; retrying with backoff up to "
                "%d s)", self.url_shown, self._failures, self.config.reconnect_max_s)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self._connected
        self._set_connected(False)
        if was and not self._stop:
            log.warning("MQTT: connection to %s lost (%s); events wait in the outbox "
                        "(up to %d)", self.url_shown, reason_code, self.config.max_queued)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._cond:
            event = self._unacked.pop(mid, None)
            if event is None:
                self._early_acks.add(mid)
            elif event:
                self.metrics.published.inc()
            self._cond.notify_all()
