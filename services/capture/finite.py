"""Sources that end: video files and image folders (the demo is in :mod:`.demo`).

A finite source hands out frames one by one on request; the capture service paces them
(native frame rate by default) and sends them with backpressure, so none is lost.
``loop`` restarts them at their end.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import cv2
import numpy as np

from common.images import IMAGE_SUFFIXES, BadImage, read_image, to_bgr8
from common.redact import redact
from services.capture.metrics import CaptureMetrics
from services.capture.spec import SourceFrame, SourceOptions

log = logging.getLogger(__name__)

#: Frame rate (frames/s) of image folders when the config gives none.
DEFAULT_FOLDER_FPS = 10.0
#: Skipped files of one folder kept with their reasons (for the status file/summary).
MAX_SKIPPED_KEPT = 1000


class FiniteSource:
    """Base of sources that end (files, folders, the demo).

    Attributes:
        name: stream name. uri: what was opened (``shown``: the same through
            :func:`common.redact.redact`, for messages). kind: see
            :func:`common.streams.source_kind`.
        fps: native frame rate (frames/s) used for pacing. live: always ``False``.
        index: number of frames handed out so far in the current pass.
        loops: passes completed (``loop``).
        position: where the next read starts in the current pass, in the source's own
            unit (frames read from a video file, files of a folder, demo frames); what
            :meth:`seek` takes to continue from here in another process.
    """

    live = False
    kind = "file"

    def __init__(self, name: str, uri: str, options: SourceOptions,
                 metrics: CaptureMetrics | None = None):
        self.name = name
        self.uri = uri
        self.shown = redact(uri)
        self.options = options
        self.metrics = metrics
        self.fps = DEFAULT_FOLDER_FPS
        self.index = 0
        self.loops = 0
        self.position = 0

    def seek(self, position: int, loops: int = 0) -> None:
        """Continue at ``position`` of pass ``loops`` (see :attr:`position`): a restarted
        capture resumes where the one before it was. A position past the end reads as
        the end (or the next pass with ``loop``)."""
        self.loops = loops
        self._seek(max(int(position), 0))
        self.index = self.position

    def _seek(self, position: int) -> None:
        raise NotImplementedError

    def read(self) -> SourceFrame | None:
        """The next frame, or ``None`` at the end (after the last loop when looping).

        With ``loop`` the source restarts transparently; a source that yields no frame at
        all in a whole pass ends instead of spinning.
        """
        image = self._next()
        if image is None and self.options.loop and self.index > 0:
            self.loops += 1
            log.info("stream %s: end of %s, looping (pass %d)", self.name, self.shown,
                     self.loops + 1)
            self._rewind()
            self.index = self.position = 0
            image = self._next()
        if image is None:
            return None
        frame = SourceFrame(image, time.time_ns(), self.index)
        self.index += 1
        return frame

    def _drop_bad_image(self) -> None:
        if self.metrics:
            self.metrics.drop("bad_image")

    def _next(self) -> np.ndarray | None:
        raise NotImplementedError

    def _rewind(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release the underlying file or decoder."""


class VideoFileSource(FiniteSource):
    """A video file read with OpenCV (FFmpeg): mp4, avi, mkv, gif, ...

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: OpenCV cannot open or decode it.
    """

    kind = "file"

    def __init__(self, name, uri, options, metrics=None):
        super().__init__(name, uri, options, metrics)
        if not os.path.isfile(uri):
            raise FileNotFoundError(f"source {name}: no such file or folder: {self.shown}")
        self.cap = self._open()
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        if not (fps and np.isfinite(fps) and 0.1 <= fps <= 240):
            fps = options.fps or DEFAULT_FOLDER_FPS
            log.warning("stream %s: %s reports no usable frame rate; pacing at %.1f fps",
                        name, self.shown, fps)
        self.fps = float(fps)
        log.info("stream %s: video file %s (%dx%d, %.2f fps, %d frames)", name, self.shown,
                 int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                 int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), self.fps,
                 int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT)))

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(self.uri)
        if not cap.isOpened():
            cap.release()
            raise ValueError(f"source {self.name}: OpenCV cannot open video file {self.shown}")
        return cap

    def _next(self):
        while True:
            ok, image = self.cap.read()
            if not ok or image is None:
                return None
            self.position += 1
            if image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
                return image
            try:
                return to_bgr8(image)
            except BadImage as exc:
                log.warning("stream %s: frame %d skipped: %s", self.name, self.index, exc)
                self._drop_bad_image()

    def _rewind(self):
        self.cap.release()
        self.cap = self._open()

    def _seek(self, position):
        """Seek by frame number (FFmpeg seeks to the key frame before it and decodes up
        to it; exact on the shared clips); when the container cannot seek, read and
        discard frames up to it."""
        self._rewind()
        self.position = 0
        if position == 0:
            return
        if self.cap.set(cv2.CAP_PROP_POS_FRAMES, position) and \
                int(self.cap.get(cv2.CAP_PROP_POS_FRAMES)) == position:
            self.position = position
            return
        log.info("stream %s: %s cannot seek; reading up to frame %d", self.name, self.uri,
                 position)
        self._rewind()
        while self.position < position and self.cap.grab():
            self.position += 1

    def close(self):
        """Release the underlying ``cv2.VideoCapture`` (idempotent)."""
        self.cap.release()


class ImageFolderSource(FiniteSource):
    """Images of a folder in sorted file-name order, one frame each.

    Odd images (RGBA, gray, gray + alpha, 16-bit, 1x1) are normalised to
    ``(H, W, 3) uint8`` BGR; files that cannot be decoded are skipped with a warning and
    counted as dropped (``bad_image``). Frames may differ in size. Files whose suffix is
    not an image suffix (:data:`IMAGE_SUFFIXES`) are ignored.

    Raises:
        ValueError: the folder holds no image file.
    """

    kind = "folder"

    def __init__(self, name, uri, options, metrics=None):
        super().__init__(name, uri, options, metrics)
        self.paths = sorted(p for p in Path(uri).iterdir()
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise ValueError(f"source {name}: folder {self.shown} holds no image files "
                             f"({', '.join(IMAGE_SUFFIXES)})")
        self.fps = float(options.fps or DEFAULT_FOLDER_FPS)
        self._pos = 0
        self.skipped = 0
        #: ``(file, reason)`` of the files skipped so far (the first
        #: :data:`MAX_SKIPPED_KEPT`; :attr:`skipped` counts them all).
        self.skipped_files: list[tuple[str, str]] = []
        log.info("stream %s: image folder %s (%d images, %.1f fps)", name, self.shown,
                 len(self.paths), self.fps)

    @property
    def position(self) -> int:
        """Files of the folder taken so far in this pass (read or skipped)."""
        return self._pos

    @position.setter
    def position(self, value: int) -> None:
        self._pos = value

    def _seek(self, position):
        self._pos = min(position, len(self.paths))

    def _next(self):
        while self._pos < len(self.paths):
            path = self.paths[self._pos]
            self._pos += 1
            try:
                return read_image(path)
            except BadImage as exc:
                self.skipped += 1
                if len(self.skipped_files) < MAX_SKIPPED_KEPT:
                    self.skipped_files.append((str(path), exc.reason))
                log.warning("stream %s: image skipped (dropped, reason bad_image): %s",
                            self.name, exc)
                self._drop_bad_image()
        return None

    def _rewind(self):
        self._pos = 0
