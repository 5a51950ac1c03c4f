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

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceConfig(BaseSettings):
    """Settings every service has.

    Class keywords of a subclass:
        service: service name; the environment prefix becomes ``AGEGENDER_<SERVICE>_``.
        http_port: default HTTP port of the service (0..65535).
    """

    model_config = SettingsConfigDict(extra="forbid", validate_default=True,
                                      env_prefix="AGEGENDER_")

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
