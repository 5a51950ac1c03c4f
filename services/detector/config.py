"""Detector service configuration (environment prefix ``AGEGENDER_DETECTOR_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from common.config import ServiceConfig
from common.detectors import BACKENDS


class DetectorConfig(ServiceConfig, service="detector", http_port=9102):
    """Face detection settings and endpoints."""

    input: str = Field("connect:tcp://localhost:5555", description="Frame input endpoint "
                       "(PULL).")
    output: str = Field("connect:tcp://localhost:5556", description="Faces output endpoint "
                        "(PUSH).")
    backend: Literal[tuple(BACKENDS)] = Field(  # type: ignore[valid-type]
        "ssd", description="'ssd' (OpenCV DNN res10_300x300_ssd_iter_140000, the seed's "
        "choice) or 'haar' (Haar cascade); see common/detectors.")
    confidence: float = Field(0.5, gt=0.0, le=1.0, description="Minimum SSD confidence.")
    input_size: int = Field(300, ge=0, le=4096, description="Short side of the SSD input "
                            "(pixels); the aspect ratio is kept; 0 = native frame size.")
    min_face_px: int = Field(12, ge=1, le=4096, description="Smallest face kept (pixels, "
                             "each side, after clipping).")
    payload: Literal["frame", "crops"] = Field(
        "frame", description="What a faces message carries besides the boxes: 'frame' "
        "(the raw frame; the classifier cuts the faces; best on one host) or 'crops' (one "
        "raw crop per face plus the frame as JPEG for the sink; fewer bytes for "
        "classifiers on another host). See common/wire.py.")
    crop_aspect: float = Field(0.88, ge=0.0, le=4.0, description="payload 'crops' only: "
                               "width/height each face box is widened to before it is cut, "
                               "as the classifier's model was trained (meta.json "
                               "crop_aspect: compact 0.883, seed 0.876); 0 cuts the box "
                               "as detected.")
    jpeg_quality: int = Field(90, ge=10, le=100, description="payload 'crops' only: JPEG "
                              "quality of the frame sent along (a JPEG input frame is "
                              "passed on as it came).")
