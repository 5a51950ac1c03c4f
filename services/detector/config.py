"""Detector service configuration (environment prefix ``AGEGENDER_DETECTOR_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from common.config import ServiceConfig
from common.detectors import BACKENDS, DEFAULT_BACKEND


class DetectorConfig(ServiceConfig, service="detector", http_port=9102):
    """Face detection settings and endpoints."""

    input: str = Field("connect:tcp://localhost:5555", description="Frame input endpoint: "
                       "one address per capture service (DEALER; each capture sends a "
                       "stream's frames to one detector process, docs/pipeline.md).")
    output: str = Field("connect:tcp://localhost:5556", description="Faces output endpoint "
                        "(PUSH).")
    backend: Literal[tuple(BACKENDS)] = Field(  # type: ignore[valid-type]
        DEFAULT_BACKEND, description="'blazeface' (MediaPipe BlazeFace full-range: boxes "
        "and six keypoints, tiled; the default), 'ssd' (OpenCV DNN res10 SSD, the seed's "
        "choice), 'haar' (Haar cascade), 'dlib-hog' / 'dlib-mmod' (optional extra "
        "'detectors'); see docs/detectors.md.")
    confidence: float | None = Field(None, gt=0.0, le=1.0, description="Minimum detection "
                                     "confidence; default: the backend's own (blazeface "
                                     "0.4, ssd 0.5).")
    input_size: int = Field(300, ge=0, le=4096, description="ssd only: short side of the "
                            "SSD input (pixels); the aspect ratio is kept; 0 = native frame "
                            "size.")
    min_face_px: int | None = Field(None, ge=1, le=4096, description="Smallest box kept "
                                    "(pixels, each side, after clipping); default: the "
                                    "backend's own (blazeface 4, others 12).")
    tiles: bool = Field(True, description="blazeface only: also read non-square frames in "
                        "square tiles of their short side (a 1280x720 frame costs 3 network "
                        "passes instead of 1 and faces from ~44 px instead of ~71 px are "
                        "found); false: one whole-frame pass.")
    max_tile_side: int = Field(1080, ge=96, le=8192, description="blazeface only: largest "
                               "tile side (pixels); larger frames get a pyramid of tile "
                               "levels whose finest tiles are this large.")
    refine_roll_degrees: float = Field(8.0, ge=0.0, le=90.0, description="blazeface only: "
                                       "faces whose eye line is rolled by at least this "
                                       "(degrees) are read again on an upright view (one "
                                       "more network pass each; keypoints and box follow "
                                       "the roll); 0: never.")
    expected_min_face_px: float = Field(24.0, ge=0.0, le=4096.0, description="Smallest "
                                        "face width (pixels) the cameras are expected to "
                                        "show; a warning is logged once per stream when "
                                        "the frame size and settings make the smallest "
                                        "face the detector finds larger. 0: no warning.")
    payload: Literal["frame", "crops"] = Field(
        "frame", description="What a faces message carries besides the boxes: 'frame' "
        "(the raw frame; the classifier cuts the faces; best on one host) or 'crops' (one "
        "raw crop per face plus the frame as JPEG for the sink; fewer bytes for "
        "classifiers on another host). See common/wire.py.")
    crop_aspect: float = Field(0.88, ge=0.0, le=4.0, description="payload 'crops' only: "
                               "width/height each face box is widened to before it is cut, "
                               "as the classifier's model was trained (meta.json "
                               "crop_aspect: compact-wild and compact 0.883, seed 0.876); 0 cuts the box "
                               "as detected.")
    jpeg_quality: int = Field(90, ge=10, le=100, description="payload 'crops' only: JPEG "
                              "quality of the frame sent along (a JPEG input frame is "
                              "passed on as it came).")
    workers: int = Field(1, ge=1, le=32, description="Detection threads (one detector "
                         "each; threads is split among them); tracking and sending stay "
                         "in arrival order.")
    classify_every: int = Field(0, ge=0, le=100_000, description="Classify a track's face "
                                "again after this many frames even when no better face "
                                "came; 0: about one second of the stream's frames (its "
                                "fps, else 12); 1: every face on every frame (the old "
                                "behaviour).")
    classify_margin: float = Field(0.1, ge=0.0, le=1.0, description="A face whose quality "
                                   "(0..1) beats its track's best classified face by this "
                                   "much is classified at once.")
    track_memory_s: float = Field(1.0, gt=0.0, le=60.0, description="Seconds a face track "
                                  "survives without a detection (norfair hit counter).")
    track_max_distance: float = Field(0.8, gt=0.0, lt=1.0, description="Largest 1 - IoU "
                                      "between a face and its track's predicted box that "
                                      "continues the track (0.8: IoU at least 0.2).")
    quality_ref_px: float = Field(64.0, ge=1.0, le=4096.0, description="Face side (pixels) "
                                  "from which the size part of a face's quality is 1 (the "
                                  "classifier's input side).")
