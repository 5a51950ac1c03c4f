"""Detector service configuration (environment prefix ``AGEGENDER_DETECTOR_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from common.config import ServiceConfig


class DetectorConfig(ServiceConfig):
    """Face detection settings and endpoints."""

    model_config = SettingsConfigDict(env_prefix="AGEGENDER_DETECTOR_", extra="forbid",
                                      validate_default=True)

    input: str = Field("connect:tcp://localhost:5555", description="Frame input endpoint "
                       "(PULL).")
    output: str = Field("connect:tcp://localhost:5556", description="Faces output endpoint "
                        "(PUSH).")
    backend: Literal["ssd", "haar"] = Field("ssd", description="'ssd' (OpenCV DNN "
                                            "res10_300x300_ssd_iter_140000, the seed's "
                                            "choice) or 'haar' (Haar cascade).")
    confidence: float = Field(0.5, gt=0.0, le=1.0, description="Minimum SSD confidence.")
    input_size: int = Field(300, ge=0, le=4096, description="Short side of the SSD input "
                            "(pixels); the aspect ratio is kept; 0 = native frame size.")
    min_face_px: int = Field(12, ge=1, le=4096, description="Smallest face kept (pixels, "
                             "each side, after clipping).")
    http_port: int = Field(9102, ge=0, le=65535, description="HTTP port; 0 disables it.")
