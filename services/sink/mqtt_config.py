"""Settings of the MQTT publisher (:mod:`services.sink.mqtt`): :class:`MqttConfig`, the
broker URL (:func:`broker_address`) and stream names as topic levels
(:func:`topic_level`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from common.redact import redact

#: Default ports (IANA): MQTT 1883, MQTT over TLS 8883.
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


class MqttConfig(BaseModel):
    """Where and how to publish. The sink reads it from its ``mqtt_*`` settings
    (environment ``AGEGENDER_SINK_MQTT_<FIELD>``, :class:`services.sink.config.SinkConfig`)."""

    model_config = ConfigDict(extra="forbid", validate_default=True,
                              hide_input_in_errors=True)

    url: str = Field("mqtt://localhost:1883", description="Broker: mqtt://HOST[:PORT] "
                     "(default port 1883) or mqtts://HOST[:PORT] for TLS (8883). User and "
                     "password may be in the URL (percent-encoded), but username/password "
                     "(environment) are better.")
    username: str | None = Field(None, description="Broker user name (overrides the URL's).")
    password: SecretStr | None = Field(None, description="Broker password (overrides the "
                                       "URL's); from AGEGENDER_SINK_MQTT_PASSWORD. Never "
                                       "logged.")
    topic_prefix: str = Field("agegender", min_length=1, max_length=200,
                              description="First topic levels: <prefix>/availability, "
                              "<prefix>/<stream>/person, <prefix>/<stream>/frame.")
    qos: int = Field(1, ge=0, le=2, description="QoS of events (1: at least once).")
    frames: bool = Field(False, description="Also publish per-frame events "
                         "(<prefix>/<stream>/frame); many messages per second.")
    retain_person: bool = Field(False, description="Retain the last person event per "
                                "stream on the broker.")
    retain_frame: bool = Field(False, description="Retain the last frame event per stream.")
    max_queued: int = Field(1000, ge=1, le=1_000_000, description="Outbox bound (messages) "
                            "while the broker is away; beyond it the oldest are dropped.")
    max_inflight: int = Field(20, ge=1, le=65535, description="Messages handed to the "
                              "connection and not yet acknowledged (QoS >= 1), at most.")
    client_id: str = Field("", max_length=128, description="MQTT client id; empty: "
                           "agegender-<host>-<pid>.")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive (seconds); "
                             "the broker declares the publisher gone (Last Will) after "
                             "1.5 times this without traffic.")
    reconnect_min_s: int = Field(1, ge=1, le=600, description="First reconnect delay "
                                 "(seconds), doubled per failed attempt...")
    reconnect_max_s: int = Field(60, ge=1, le=3600, description="...up to this (seconds).")
    tls_ca_file: Path | None = Field(None, description="CA certificates (PEM) for mqtts://; "
                                     "empty: the system's trust store.")

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        broker_address(url)
        return url

    @field_validator("topic_prefix")
    @classmethod
    def _check_prefix(cls, prefix: str) -> str:
        if set(prefix) & {"+", "#", "\x00"} or prefix.startswith(("/", "$")) \
                or prefix.endswith("/") or "//" in prefix:
            raise ValueError("topic_prefix must not hold '+', '#' or NUL, start with '/' or "
                             "'$', end with '/' or have an empty level ('//')")
        return prefix


@dataclasses.dataclass(frozen=True)
class BrokerAddress:
    """A parsed broker URL. ``password`` is never shown by ``repr``."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)


def broker_address(url: str) -> BrokerAddress:
    """Parse ``mqtt[s]://[user[:password]@]host[:port]`` (user and password
    percent-decoded).

    Raises:
        ValueError: another scheme, no host, a bad port, or a path/query; the message
            shows the URL redacted.
    """
    shown = redact(url)
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"MQTT URL {shown}: {redact(exc)}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"MQTT URL {shown}: use mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    if not parts.hostname:
        raise ValueError(f"MQTT URL {shown}: no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"MQTT URL {shown}: a broker URL has no path or query")
    return BrokerAddress(
        host=parts.hostname, port=port or DEFAULT_PORTS[scheme], tls=scheme == "mqtts",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None)


def topic_level(stream: Any) -> str:
    """A stream name as one MQTT topic level: ``/``, ``+``, ``#`` and NUL become ``_``
    (stream names checked by :mod:`common.streams` hold none of them); empty or missing:
    ``unknown``."""
    text = str(stream) if stream not in (None, "") else "unknown"
    return text.translate({ord(c): "_" for c in "/+#\x00"})
