"""Capture's wire messages: a captured frame as a ``frame`` message (downscaled to fit the
wire when needed) and a stream's ``eos``.
"""

from __future__ import annotations

import logging
import time

from common import wire
from common.images import fit_within

log = logging.getLogger("capture")


def frame_message(stream: str, seq: int, frame, live: bool, fps: float = 0.0,
                  still: bool = False) -> list:
    """Encode one captured frame (:class:`services.capture.spec.SourceFrame`) as a
    ``frame`` message (``frame_header`` fields plus ``live``, ``t_media_ns`` (the frame's
    media time), when known ``fps`` (the source's frame rate in frames/s), and
    ``still: true`` for a still photo, a scene of its own).

    A frame larger than the wire takes is downscaled to fit first (:func:`fit_frame`;
    finite sources did so already, counted)."""
    image = fit_frame(frame.image)
    h, w = image.shape[:2]
    extra = {"fps": round(float(fps), 3)} if 0 < fps <= 1000 else {}
    if still:
        extra["still"] = True
    header = wire.frame_header(stream, seq, frame.t_capture_ns, w, h, live=live,
                               t_media_ns=max(int(frame.t_media_ns), 0), **extra)
    return wire.encode_frame(header, image)


def fit_frame(image):
    """``image`` downscaled to fit the wire (:data:`common.wire.MAX_SIDE` a side,
    :data:`common.wire.MAX_FRAME_PIXELS` in all), logged once per size; the same array
    when it fits."""
    small = fit_within(image, wire.MAX_SIDE, wire.MAX_FRAME_PIXELS)
    size = image.shape[1], image.shape[0]
    if small is not image and size not in _DOWNSCALED_SIZES:
        _DOWNSCALED_SIZES.add(size)
        log.warning("frames of %dx%d are larger than the wire allows: sent downscaled to "
                    "%dx%d", *size, small.shape[1], small.shape[0])
    return small


_DOWNSCALED_SIZES: set = set()


def eos_message(stream: str, frames_sent: int, reason: str = "end") -> list:
    """Encode an ``eos`` message for ``stream`` after ``frames_sent`` frames."""
    return wire.encode({"kind": "eos", "stream": stream, "seq": frames_sent,
                        "t_capture_ns": time.time_ns(), "frames": frames_sent,
                        "reason": reason, "live": False})
