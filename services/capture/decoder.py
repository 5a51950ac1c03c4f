"""Video files decoded with PyAV (FFmpeg): every frame with its presentation time.

OpenCV's ``VideoCapture`` gives no reliable timestamp for variable-frame-rate files
(``CAP_PROP_POS_MSEC`` follows the average rate) and treats its first failed ``read()``
as the end of the file. :class:`VideoDecoder` reads the container's packets itself, so

* each frame carries its media time from the container's presentation timestamp (PTS),
  in ns since the file's first frame, and how long it is shown (the gap to the next
  frame's PTS: one frame is decoded ahead);
* a packet the decoder refuses (damaged data) skips that frame, counted in
  :attr:`VideoDecoder.decode_errors`, and decoding goes on with the next packet; the file
  ends where the demuxer ends, and :attr:`VideoDecoder.stated_frames` says how many frames
  the container announced, so a file that ends early can say so;
* a file name with a colon (``2024-05-01T10:00:00.mp4``) is opened by its absolute path,
  which FFmpeg never takes for a protocol (``name:`` would be one).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from fractions import Fraction

import av
import numpy as np

log = logging.getLogger(__name__)

#: Frame rate assumed (frames/s) for timing when a file states none and a frame has no
#: timestamp at all.
FALLBACK_FPS = 25.0
#: Largest plausible frame rate a container may state (frames/s); more is ignored.
MAX_STATED_FPS = 240.0
#: Damaged frames logged one by one per file; the rest are counted only.
LOGGED_ERRORS = 5


@dataclasses.dataclass
class DecodedFrame:
    """One decoded frame.

    Attributes:
        image: ``(H, W, 3) uint8`` BGR.
        t_ns: presentation time, ns since the file's first frame (non-decreasing).
        duration_ns: how long the frame is shown: the next frame's time minus this one's
            (the last frame: its stated duration, else one frame at the file's rate).
    """

    image: np.ndarray
    t_ns: int
    duration_ns: int


class VideoDecoder:
    """Frames of a video file in presentation order, with their media times.

    Args:
        path: the file (relative paths are made absolute).
        threads: decoder threads (FFmpeg), within the process's thread budget.

    Attributes:
        fps: the file's stated average frame rate (frames/s), 0 when it states none.
        stated_frames: frames the container announces (0 when unknown).
        width, height: frame size in pixels as stated.
        frames: frames handed out so far. decode_errors: packets the decoder refused
            (damaged data: each is a frame skipped).
        demux_error: why reading the file stopped early, when the container itself could
            not be read further (``None`` at a normal end).

    Raises:
        ValueError: FFmpeg cannot open the file or it holds no video stream.
    """

    def __init__(self, path: str, threads: int = 1):
        self.path = os.path.abspath(path)
        try:
            self.container = av.open(self.path, metadata_errors="ignore")
        except (av.error.FFmpegError, UnicodeDecodeError) as exc:
            raise ValueError(f"FFmpeg cannot open it ({exc})") from None
        if not self.container.streams.video:
            self.container.close()
            raise ValueError("it holds no video stream")
        self.stream = self.container.streams.video[0]
        self.stream.codec_context.thread_count = max(1, int(threads))
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.fps = float(rate) if rate and 0 < float(rate) <= MAX_STATED_FPS else 0.0
        self.stated_frames = max(int(self.stream.frames or 0), 0)
        self.width = self.stream.codec_context.width
        self.height = self.stream.codec_context.height
        self.time_base = self.stream.time_base or Fraction(1, 90000)
        self.frames = 0
        self.decode_errors = 0
        self.demux_error: str | None = None
        self._first_pts: int | None = None
        self._last_t = -1
        self._decoded = self._decode()
        self._ahead: tuple | None = self._pull()

    def _decode(self):
        """Yield decoded ``av.VideoFrame`` objects; damaged packets are counted and
        skipped."""
        packets = self.container.demux(self.stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.error.FFmpegError as exc:  # the container cannot be read further
                self.demux_error = str(exc)
                log.warning("%s: reading stopped after %d frames: %s", self.path,
                            self.frames, exc)
                return
            try:
                frames = packet.decode()
            except av.error.FFmpegError as exc:
                self.decode_errors += 1
                if self.decode_errors <= LOGGED_ERRORS:
                    log.warning("%s: a damaged frame was skipped (after frame %d)%s: %s",
                                self.path, self.frames,
                                "; further ones are only counted"
                                if self.decode_errors == LOGGED_ERRORS else "", exc)
                continue
            yield from frames

    def _seconds_ns(self, pts: int) -> int:
        return int((pts - self._first_pts) * self.time_base * 1_000_000_000)

    def _pull(self) -> tuple | None:
        """The next ``(frame, t_ns)`` or ``None`` at the end."""
        frame = next(self._decoded, None)
        if frame is None:
            return None
        pts = frame.pts
        if pts is None:  # no timestamp: one frame at the stated rate after the last one
            t = self._last_t + int(1e9 / (self.fps or FALLBACK_FPS)) if self._last_t >= 0 else 0
        else:
            if self._first_pts is None:
                self._first_pts = pts
            t = self._seconds_ns(pts)
        t = max(t, self._last_t, 0)  # damaged files: never backwards
        self._last_t = t
        return frame, t

    def _last_duration(self, frame) -> int:
        dur = getattr(frame, "duration", None)
        if dur:
            ns = int(dur * self.time_base * 1_000_000_000)
            if ns > 0:
                return ns
        return int(1e9 / (self.fps or FALLBACK_FPS))

    def read(self) -> DecodedFrame | None:
        """The next frame, or ``None`` at the end of the file."""
        if self._ahead is None:
            return None
        frame, t = self._ahead
        self._ahead = self._pull()
        duration = (self._ahead[1] - t) if self._ahead is not None \
            else self._last_duration(frame)
        self.frames += 1
        return DecodedFrame(frame.to_ndarray(format="bgr24"), t, max(int(duration), 0))

    def skip(self, n: int) -> int:
        """Decode and discard the next ``n`` frames (no pixel conversion): where a
        restarted capture resumes. Exact for any file, variable frame rate or damaged
        (frame numbers count decoded frames, as :meth:`read` does); returns how many were
        skipped (fewer at the end of the file)."""
        done = 0
        while done < n and self._ahead is not None:
            self._ahead = self._pull()
            self.frames += 1
            done += 1
        return done

    def seek_after(self, after_ns: int, frames: int) -> bool:
        """Continue with the first frame whose media time is after ``after_ns`` (ns since
        the first frame): FFmpeg seeks to the key frame at or before it, and the frames
        up to it are decoded and discarded. ``frames`` becomes :attr:`frames` (how many
        the file had handed out up to there).

        Returns:
            ``False`` when the container cannot seek (nothing changed: read on, or
            :meth:`skip`).
        """
        if self._first_pts is None:
            return False
        target = self._first_pts + int(Fraction(after_ns, 1_000_000_000) / self.time_base)
        try:
            self.container.seek(target, stream=self.stream, backward=True, any_frame=False)
        except av.error.FFmpegError as exc:
            log.info("%s: cannot seek (%s); decoding from the start instead", self.path, exc)
            return False
        self._decoded.close()
        self._decoded = self._decode()
        self._last_t = -1
        while True:
            self._ahead = self._pull()
            if self._ahead is None or self._ahead[1] > after_ns:
                break
        self.frames = frames
        return True

    @property
    def duration_ns(self) -> int:
        """The file's stated duration (ns; from the stream, else the container, else
        stated frames / fps; 0 when unknown): what a pass of a looped file adds to media
        time when a capture resumes in a later pass."""
        if self.stream.duration:
            return int(self.stream.duration * self.time_base * 1_000_000_000)
        if self.container.duration:
            return int(self.container.duration * 1000)  # AV_TIME_BASE: microseconds
        return int(self.stated_frames * 1e9 / self.fps) if self.fps else 0

    def close(self) -> None:
        """Close the file (idempotent)."""
        self._decoded.close()
        self.container.close()
