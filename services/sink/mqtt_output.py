"""The sink's MQTT output: events to a broker through :class:`services.sink.mqtt.MqttPublisher`.

On with the sink's ``mqtt`` setting (off by default), configured by its ``mqtt_*``
settings (docs/mqtt.md). It is a record output (written on the receive path, never
blocking it: the publisher only queues):

* :meth:`MqttOutput.write` publishes the frame's events.jsonl record to
  ``<prefix>/<stream>/frame`` when ``mqtt_frames`` is on (one message per processed frame);
* :meth:`MqttOutput.write_person` publishes a person event to ``<prefix>/<stream>/person``
  (the hook for per-person events, :meth:`services.sink.outputs.OutputSet.write_person`).

No image is ever published.
"""

from __future__ import annotations

from services.sink.events import event_record
from services.sink.mqtt import MqttMetrics, MqttPublisher
from services.sink.mqtt_config import MqttConfig
from services.sink.outputs import Output, SinkResult

#: Longest wait at close for queued events to reach the broker (seconds); the sink must
#: stop within its exit budget, and what is left is counted as dropped (``closed``).
CLOSE_TIMEOUT_S = 1.0


class MqttOutput(Output):
    """Frame and person events to MQTT (see the module docs).

    Args:
        config: broker, topics, QoS, outbox bound.
        metrics: the ``agegender_mqtt_*`` metrics (created at zero at the sink's start).
    """

    name = "mqtt"

    def __init__(self, config: MqttConfig, metrics: MqttMetrics):
        self.config = config
        self.metrics = metrics
        self.publisher: MqttPublisher | None = None

    def open(self) -> None:
        """Start connecting in the background (a broker that is down is retried)."""
        self.publisher = MqttPublisher(self.config, metrics=self.metrics).start()

    def write(self, result: SinkResult) -> None:
        """Queue the frame's event when frame events are on."""
        if self.config.frames:
            self.publisher.publish_frame(event_record(result.header, result.latency_s))

    def write_person(self, event: dict) -> None:
        """Queue one person event."""
        self.publisher.publish_person(event)

    def close(self) -> None:
        """Flush for up to :data:`CLOSE_TIMEOUT_S`, publish ``offline``, disconnect."""
        if self.publisher is not None:
            self.publisher.close(timeout_s=CLOSE_TIMEOUT_S)
