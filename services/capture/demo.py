"""The built-in demo source: a scene synthesized at run time, no download needed."""

from __future__ import annotations

import logging

import cv2
import numpy as np

from services.capture.finite import FiniteSource

log = logging.getLogger(__name__)

#: Demo scene: frame rate (frames/s), duration (s) and frame size (pixels, w x h).
DEMO_FPS = 15.0
DEMO_SECONDS = 8.0
DEMO_SIZE = (640, 360)


class DemoSource(FiniteSource):
    """The built-in demo: a scene synthesized at run time, no download needed.

    scikit-image's public-domain astronaut photo (``skimage.data.astronaut()``, Eileen
    Collins, NASA) pans from left to right over a dim background while zooming in and
    out; ``DEMO_SECONDS`` s at ``DEMO_FPS`` fps, ``DEMO_SIZE`` pixels. One face per frame.
    """

    kind = "demo"

    def __init__(self, name, uri, options, metrics=None):
        super().__init__(name, uri, options, metrics)
        from skimage import data as skdata
        rgb = skdata.astronaut()  # (512, 512, 3) uint8 RGB
        self.photo = np.ascontiguousarray(rgb[:, :, ::-1])
        w, h = DEMO_SIZE
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        bg = np.stack([40 + 60 * xx / w, 50 + 40 * yy / h, 70 + 30 * (1 - xx / w)], axis=2)
        self.background = bg.astype(np.uint8)
        self.fps = DEMO_FPS
        self.n_frames = int(DEMO_SECONDS * DEMO_FPS)
        log.info("stream %s: built-in DEMO source (no --source given): scikit-image's "
                 "astronaut photo panning over a synthetic background, %dx%d, %.0f fps, "
                 "%d frames", name, w, h, self.fps, self.n_frames)

    def render(self, i: int) -> np.ndarray:
        """Frame ``i`` of the scene as ``(360, 640, 3) uint8`` BGR (deterministic)."""
        w, h = DEMO_SIZE
        t = i / max(self.n_frames - 1, 1)                       # 0..1 over the clip
        scale = (0.55 + 0.2 * np.sin(2 * np.pi * t)) * h / 512  # photo height ~ 0.35-0.75 h
        size = 512 * scale
        x0 = (w - size) * t
        y0 = (h - size) * (0.5 + 0.3 * np.sin(4 * np.pi * t))
        m = np.array([[scale, 0, x0], [0, scale, y0]], dtype=np.float32)
        frame = self.background.copy()
        cv2.warpAffine(self.photo, m, (w, h), dst=frame, flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_TRANSPARENT)
        return frame

    def _next(self):
        if self.position >= self.n_frames:
            return None
        self.position += 1
        return self.render(self.position - 1)

    def _rewind(self):
        pass

    def _seek(self, position):
        self.position = position

    def _pass_duration_ns(self):
        return int(round(self.n_frames * 1e9 / self.fps))
