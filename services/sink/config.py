"""Sink service configuration (environment prefix ``AGEGENDER_SINK_``).

The MQTT output's settings are :class:`services.sink.mqtt_config.MqttConfig`'s fields with the
prefix ``mqtt_`` (``mqtt_url``, ``mqtt_topic_prefix``, ...; environment
``AGEGENDER_SINK_MQTT_URL``, ...), made from that class so they cannot drift from it, plus
``mqtt`` to switch the output on.
"""

from __future__ import annotations

import copy
from pathlib import Path

from pydantic import Field, ValidationError, create_model, model_validator

from common.config import ServiceConfig
from services.sink.mqtt_config import MqttConfig

#: Prefix of the MQTT settings in the sink's config.
MQTT_PREFIX = "mqtt_"

# ServiceConfig + ``mqtt`` + one ``mqtt_<field>`` per MqttConfig field (same type,
# default, bounds and description).
_WithMqtt = create_model(
    "_WithMqtt", __base__=ServiceConfig,
    mqtt=(bool, Field(False, description="Publish events to an MQTT broker (the mqtt_* "
                      "settings; docs/mqtt.md): person events, and frame events with "
                      "mqtt_frames. Off by default.")),
    **{MQTT_PREFIX + name: (f.annotation, copy.deepcopy(f))
       for name, f in MqttConfig.model_fields.items()})


class SinkConfig(_WithMqtt, service="sink", http_port=9104):
    """Outputs: annotated video, JSON Lines events, MJPEG view, window, MQTT, metrics."""

    input: str = Field("bind:tcp://*:5557", description="Result input endpoint (PULL).")
    out_dir: Path | None = Field(None, description="Write annotated.mp4 (one "
                                 "annotated_<stream>.mp4 per extra stream) and events.jsonl "
                                 "here; none: no files.")
    video: bool = Field(True, description="Write the annotated MP4 when out_dir is set.")
    events: bool = Field(True, description="Write events.jsonl when out_dir is set.")
    mjpeg: bool = Field(True, description="Serve the live annotated view at / and "
                        "/stream.mjpg on the HTTP port.")
    display: bool = Field(False, description="Show a desktop window (needs a display).")
    metrics_only: bool = Field(False, description="Only measure latency and count; no "
                               "rendering or files.")
    expected_streams: int = Field(0, ge=0, le=1024, description="Exit after end of stream "
                                  "on this many streams; 0 runs until stopped.")
    eos_grace_s: float = Field(5.0, ge=0.0, le=600.0, description="After a stream's eos, "
                               "wait up to this many seconds (since its last result) for "
                               "results still in flight through other detector or "
                               "classifier workers; the stream ends early once as many "
                               "results as frames sent arrived. 0 ends it at the eos.")
    people: bool = Field(True, description="Write people.jsonl (one person event per "
                         "person when its track ends) when out_dir is set.")
    person_min_frames: int = Field(3, ge=1, le=100_000, description="A track seen in fewer "
                                   "frames makes no person event (a detector flicker, not "
                                   "a person).")
    person_timeout_s: float = Field(10.0, gt=0.0, le=3600.0, description="A person "
                                    "unseen for this long (capture time, seconds) ends "
                                    "even without the detector's ended_tracks (a detector "
                                    "worker that vanished).")
    person_thumbnails_dir: Path | None = Field(None, description="Write a small JPEG of "
                                               "each person's best face here "
                                               "(<stream>_<track>.jpg, named in the "
                                               "person event). Off by default: faces are "
                                               "personal data.")
    fusion_rho: float = Field(0.6, ge=0.0, le=1.0, description="Correlation of one "
                              "person's errors between frames, used to narrow the fused "
                              "age interval when the model's meta.json has no fusion.rho "
                              "(common/fusion.py).")
    video_fps: float = Field(0.0, ge=0.0, le=240.0, description="Nominal frame rate of "
                             "the annotated video (frames/s): times frames whose header has "
                             "no t_media_ns; frames with one are written at their media "
                             "time. 0 = the frame header's 'fps', else 25.")
    jpeg_quality: int = Field(80, ge=10, le=100, description="JPEG quality of the live "
                              "MJPEG view.")
    status_path: Path | None = Field(None, description="Write a JSON status (frames, faces, "
                                     "fps, end-to-end latency percentiles, streams ended) "
                                     "here every 0.5 s and at exit; 'agegender run' reads "
                                     "it for progress and the summary.")
    trace_path: Path | None = Field(None, description="Write one JSON line per frame with "
                                    "every per-stage timestamp (t_*_ns) plus t_sink_ns "
                                    "(benchmarks); none: off.")
    lock_out_dir: bool = Field(True, description="Own out_dir while running: take its "
                               "lock file (.agegender.lock), so a second sink or run "
                               "cannot write the same folder ('agegender run' holds the "
                               "lock itself and sets false).")
    append: bool = Field(False, description="Continue an earlier sink's outputs: append to "
                         "events.jsonl (a torn last line cut off), continue its counts, seqs "
                         "and track ids (status_path and events.jsonl's tail), write video "
                         "to a new annotated*.partN.mp4 ('agegender run' sets it when it "
                         "restarts a crashed sink).")

    def mqtt_config(self) -> MqttConfig:
        """The MQTT output's settings (the ``mqtt_*`` fields).

        Raises:
            pydantic.ValidationError: they do not validate (a bad URL or topic prefix);
                the message never shows the input.
        """
        return MqttConfig(**{name: getattr(self, MQTT_PREFIX + name)
                             for name in MqttConfig.model_fields})

    @model_validator(mode="after")
    def _check_mqtt(self):
        """The MQTT settings validate as a whole when the output is on."""
        if self.mqtt:
            try:
                self.mqtt_config()
            except ValidationError as exc:
                err = exc.errors()[0]
                raise ValueError(f"{MQTT_PREFIX}{'.'.join(map(str, err['loc']))}: "
                                 f"{err.get('ctx', {}).get('error') or err['msg']}") from None
        return self
