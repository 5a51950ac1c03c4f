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

import numpy as np

from common import wire
from common.images import IMAGE_SUFFIXES, BadImage, fit_within, read_image, to_bgr8
from common.redact import redact
from services.capture.decoder import DecodedFrame, VideoDecoder
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
    still = False

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
        self._downscaled_sizes: set = set()
        self.pass_start_ns = 0   # media time at which the current pass started
        self._media_end_ns = 0   # media time just after the last frame handed out
        self._last_duration_ns = 0
        self._resume_media: dict | None = None
        self.position = 0

    def seek(self, position: int, loops: int = 0, media: dict | None = None) -> None:
        """Continue at ``position`` of pass ``loops`` (see :attr:`position`): a restarted
        capture resumes where the one before it was. A position past the end reads as
        the end (or the next pass with ``loop``).

        Args:
            media: :attr:`resume_point` of the last frame sent (from the position
                file): media time goes on from its ``pass_start_ns`` (else ``loops``
                whole passes of :meth:`_pass_duration_ns`), and a video file seeks to
                the frame after ``after_ns``.
        """
        self.loops = loops
        self._resume_media = media
        self._seek(max(int(position), 0))
        self.index = self.position
        self.pass_start_ns = self._media_end_ns = media["pass_start_ns"] if media \
            else loops * self._pass_duration_ns()

    @property
    def resume_point(self) -> dict:
        """Where the frame last handed out sits in media time: ``{"after_ns": ns from
        the start of its pass, "pass_start_ns": media time the pass started at}`` (what
        :meth:`seek` takes back)."""
        return {"after_ns": max(self._media_end_ns - self._last_duration_ns
                                - self.pass_start_ns, 0),
                "pass_start_ns": self.pass_start_ns}

    def _seek(self, position: int) -> None:
        raise NotImplementedError

    def _pass_duration_ns(self) -> int:
        """Media time one whole pass takes (ns): what a resumed later pass starts at."""
        raise NotImplementedError

    def read(self) -> SourceFrame | None:
        """The next frame, or ``None`` at the end (after the last loop when looping).

        With ``loop`` the source restarts transparently (media time goes on from where
        the pass ended); a source that yields no frame at all in a whole pass ends instead
        of spinning.
        """
        image = self._next()
        if image is None and self.options.loop and self.index > 0:
            self.loops += 1
            log.info("stream %s: end of %s, looping (pass %d)", self.name, self.shown,
                     self.loops + 1)
            self._rewind()
            self.index = self.position = 0
            self.pass_start_ns = self._media_end_ns
            image = self._next()
        if image is None:
            return None
        if max(image.shape[:2]) > wire.MAX_SIDE \
                or image.shape[0] * image.shape[1] > wire.MAX_FRAME_PIXELS:
            image = self._downscale(image)
        t_ns, duration_ns = self._timing()
        t_media = self.pass_start_ns + t_ns
        self._media_end_ns = t_media + duration_ns
        self._last_duration_ns = duration_ns
        frame = SourceFrame(image, time.time_ns(), self.index, t_media, duration_ns)
        self.index += 1
        return frame

    def _downscale(self, image: np.ndarray) -> np.ndarray:
        """A frame over the wire's limits (a 12000x9000 photo: :data:`common.wire.MAX_SIDE`
        a side, :data:`common.wire.MAX_FRAME_PIXELS` in all) downscaled to fit, counted,
        logged once per size."""
        small = fit_within(image, wire.MAX_SIDE, wire.MAX_FRAME_PIXELS)
        size = image.shape[1], image.shape[0]
        if size not in self._downscaled_sizes:
            self._downscaled_sizes.add(size)
            log.warning("stream %s: %dx%d frames are larger than the pipeline takes (%d px "
                        "a side, %.1f Mpx): sent downscaled to %dx%d", self.name, *size,
                        wire.MAX_SIDE, wire.MAX_FRAME_PIXELS / 1e6, small.shape[1],
                        small.shape[0])
        if self.metrics:
            self.metrics.downscaled.labels(self.name).inc()
        return small

    def _timing(self) -> tuple[int, int]:
        """``(t_ns, duration_ns)`` of the frame ``_next`` just returned, in media ns
        since the start of the pass: ``index / fps`` and ``1 / fps`` unless the source
        knows better (video files: the container's timestamps)."""
        period = int(round(1e9 / self.fps)) if self.fps > 0 else 0
        return self.index * period, period

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
    """A video file decoded with PyAV (:class:`services.capture.decoder.VideoDecoder`):
    mp4, mkv, webm, avi, gif, ... anything FFmpeg reads, with each frame's presentation
    time (variable frame rates are kept). Damaged frames are skipped and counted as
    dropped (``decode_error``); a file that ends before the frame count its container
    states is logged as such (:attr:`ended_early`).

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: FFmpeg cannot open it or it holds no video.
    """

    kind = "file"

    def __init__(self, name, uri, options, metrics=None):
        super().__init__(name, uri, options, metrics)
        if not os.path.isfile(uri):
            raise FileNotFoundError(f"source {name}: no such file or folder: {self.shown}")
        self.decoder = self._open()
        self._decoded: DecodedFrame | None = None
        self._errors_counted = 0
        fps = self.decoder.fps
        if not fps:
            fps = options.fps or DEFAULT_FOLDER_FPS
            log.warning("stream %s: %s states no usable frame rate; frames without "
                        "timestamps are timed at %.1f fps", name, self.shown, fps)
        self.fps = float(fps)
        #: Frames the container states (0: unknown), and how many a pass yielded short of
        #: it at its end (0 while playing or when complete).
        self.stated_frames = self.decoder.stated_frames
        self.ended_early = 0
        log.info("stream %s: video file %s (%dx%d, %.2f fps, %d frames)", name, self.shown,
                 self.decoder.width, self.decoder.height, self.fps, self.stated_frames)

    def _open(self) -> VideoDecoder:
        try:
            return VideoDecoder(self.uri)
        except ValueError as exc:
            raise ValueError(f"source {self.name}: cannot read video file {self.shown}: "
                             f"{exc}") from None

    def _count_decode_errors(self) -> None:
        new = self.decoder.decode_errors - self._errors_counted
        if new > 0:
            self._errors_counted = self.decoder.decode_errors
            if self.metrics:
                self.metrics.drop("decode_error", new)

    def _next(self):
        while True:
            decoded = self.decoder.read()
            self._count_decode_errors()
            if decoded is None:
                self._at_end()
                return None
            self.position = self.decoder.frames
            image = decoded.image
            if not (image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
                try:
                    image = to_bgr8(image)
                except BadImage as exc:
                    log.warning("stream %s: frame %d skipped: %s", self.name, self.index,
                                exc)
                    self._drop_bad_image()
                    continue
            self._decoded = decoded
            return image

    def _at_end(self) -> None:
        """At the end of a pass: say so when it ended short of the stated frame count."""
        d = self.decoder
        short = d.stated_frames - d.frames if d.stated_frames else 0
        self.ended_early = max(short, 0)
        if short > 0:
            log.warning("stream %s: %s ended after %d of the %d frames its container "
                        "states (%d damaged frames skipped%s)", self.name, self.shown,
                        d.frames, d.stated_frames, d.decode_errors,
                        f"; reading stopped: {d.demux_error}" if d.demux_error else "")

    def _timing(self):
        return self._decoded.t_ns, self._decoded.duration_ns

    def _rewind(self):
        self.decoder.close()
        self.decoder = self._open()
        self._errors_counted = 0

    def _seek(self, position):
        """Continue after ``position`` decoded frames: by seeking to the media time of
        the last frame sent when the position file has it (fast; exact for variable frame
        rates and damaged files, where frame numbers and timestamps do not map one to
        one), else by decoding the file from its start and discarding those frames."""
        self._rewind()
        media = self._resume_media
        if position and media and self.decoder.seek_after(media["after_ns"], position):
            self.position = position
            return
        self.position = self.decoder.skip(position)
        if self.position < position:
            log.info("stream %s: %s has only %d frames; resuming at its end", self.name,
                     self.shown, self.position)

    def _pass_duration_ns(self):
        return self.decoder.duration_ns

    def close(self):
        """Close the decoder (idempotent)."""
        self.decoder.close()


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
    #: Each image is a scene of its own (``still`` frames: no tracking across them).
    still = True

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
        """Set the index of the next frame to read (a resumed file starts here)."""
        self._pos = value

    def _seek(self, position):
        self._pos = min(position, len(self.paths))

    def _pass_duration_ns(self):
        return int(round(len(self.paths) * 1e9 / self.fps))

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
