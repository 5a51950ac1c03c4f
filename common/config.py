"""Typed, strict configuration shared by every service.

Each service has a :class:`ServiceConfig` subclass that names itself and its default HTTP
port in the class statement::

    class DetectorConfig(ServiceConfig, service="detector", http_port=9102):
        ...

which sets the environment prefix ``AGEGENDER_DETECTOR_`` and the ``http_port`` default
(a subclass that sets ``model_config`` and ``http_port`` itself keeps working).
Precedence, highest first: explicit keyword arguments (the CLI passes its options this
way), environment variables, field defaults. Unknown keys are errors (``extra="forbid"``),
every field has a default, bounds and a description. List fields are given in the
environment as JSON (``'["a", "b"]'``).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceConfig(BaseSettings):
    """Settings every service has.

    Class keywords of a subclass:
        service: service name; the environment prefix becomes ``AGEGENDER_<SERVICE>_``.
        http_port: default HTTP port of the service (0..65535).
    """

    # hide_input_in_errors: a refused value (a source URL with a password) is never
    # echoed in a validation error
    model_config = SettingsConfigDict(extra="forbid", validate_default=True,
                                      env_prefix="AGEGENDER_", hide_input_in_errors=True)

    http_host: str = Field("0.0.0.0", description="Address the HTTP server (/metrics, "
                           "/healthz, /readyz) listens on.")
    http_port: int = Field(0, ge=0, le=65535, description="HTTP port; 0 disables the server.")
    log_level: str = Field("INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$",
                           description="Logging level.")
    threads: int = Field(1, ge=1, le=64, description="Thread budget of this process for "
                         "OpenCV, OpenMP and TensorFlow (intra-op); keeps four services from "
                         "oversubscribing a small CPU.")
    hwm: int = Field(4, ge=1, le=10_000, description="ZeroMQ send/receive high-water mark "
                     "(messages) on data sockets; small keeps latency bounded.")
    recv_timeout_ms: int = Field(100, ge=1, le=10_000, description="Receive poll timeout "
                                 "(ms); bounds how long a loop waits before checking stop.")
    max_frame_age_s: float = Field(2.0, ge=0.0, le=3600.0, description="Live frames older "
                                   "than this at receive (now - t_capture) are dropped as "
                                   "'stale'; 0 disables. File frames are never dropped for age.")
    metrics_file: Path | None = Field(None, description="At exit, write the final "
                                      "Prometheus metrics (text format) here, so counts "
                                      "of a short run are not lost with the process; "
                                      "'agegender run' reads them for its summary.")
    heartbeat_timeout_s: float = Field(10.0, gt=0, le=600, description="/healthz fails when "
                                       "the main loop has not ticked for this long (seconds).")

    # -- security (docs/deploy.md "Security"; all off by default) ------------------------
    http_auth_token: SecretStr | None = Field(None, description="Bearer token that /metrics "
                                              "and the live view require (Authorization: "
                                              "Bearer TOKEN); none: open. Compared in "
                                              "constant time, never logged.")
    http_auth_token_file: Path | None = Field(None, description="File holding the bearer "
                                              "token (a Docker/Kubernetes secret); instead "
                                              "of http_auth_token.")
    http_basic_auth: SecretStr | None = Field(None, description="USER:PASSWORD that /metrics "
                                              "and the live view accept as HTTP basic auth "
                                              "(browsers ask for it); none: open.")
    http_basic_auth_file: Path | None = Field(None, description="File holding USER:PASSWORD; "
                                              "instead of http_basic_auth.")
    http_auth_probes: bool = Field(False, description="Also require the credentials on "
                                   "/healthz and /readyz (off: probes and health checks "
                                   "stay open; they show no image and no source).")
    curve_server_secret_key: SecretStr | None = Field(
        None, description="ZeroMQ CURVE: server secret key (Z85, 40 characters, or a "
        "server.key_secret certificate file) for the TCP sockets this service binds; "
        "needs curve_authorized_keys. Setting any curve_* field turns CURVE on for every "
        "TCP socket of the service (ipc:// is never encrypted).")
    curve_authorized_keys: str | None = Field(
        None, description="ZeroMQ CURVE: client public keys allowed to connect to the "
        "sockets this service binds: a folder of *.key certificates or Z85 keys "
        "separated by commas.")
    curve_client_secret_key: SecretStr | None = Field(
        None, description="ZeroMQ CURVE: this service's client secret key (Z85 or a "
        "NAME.key_secret certificate file) for the TCP sockets it connects; needs "
        "curve_server_key.")
    curve_server_key: str | None = Field(
        None, description="ZeroMQ CURVE: the server's public key (Z85 or the server.key "
        "certificate file) that the sockets this service connects must reach.")

    @model_validator(mode="after")
    def _check_pairs(self):
        """Credentials come in pairs or not at all (the files are read at start)."""
        if self.http_auth_token and self.http_auth_token_file:
            raise ValueError("give http_auth_token or http_auth_token_file, not both")
        if self.http_basic_auth and self.http_basic_auth_file:
            raise ValueError("give http_basic_auth or http_basic_auth_file, not both")
        if self.http_basic_auth and ":" not in self.http_basic_auth.get_secret_value():
            raise ValueError("http_basic_auth must be USER:PASSWORD")
        if bool(self.curve_server_secret_key) != bool(self.curve_authorized_keys):
            raise ValueError("CURVE for binding needs both curve_server_secret_key and "
                             "curve_authorized_keys")
        if bool(self.curve_client_secret_key) != bool(self.curve_server_key):
            raise ValueError("CURVE for connecting needs both curve_client_secret_key and "
                             "curve_server_key")
        return self

    def __init_subclass__(cls, service: str | None = None, http_port: int | None = None,
                          **kwargs):
        super().__init_subclass__(**kwargs)
        if service is not None:
            cls.model_config = SettingsConfigDict(
                {**cls.model_config, "env_prefix": f"AGEGENDER_{service.upper()}_"})
        if http_port is not None:
            # read by pydantic when it collects the subclass's fields, right after this
            cls.http_port = Field(int(http_port), ge=0, le=65535,
                                  description="HTTP port; 0 disables it.")
