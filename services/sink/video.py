"""The annotated video output: one MP4 file per stream."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import cv2
import numpy as np

from services.sink.outputs import Output, SinkResult

log = logging.getLogger("sink.video")

#: Most streams written to MP4 files at once; later new streams are not recorded (logged
#: once each) so a flood of stream names cannot exhaust file descriptors.
MAX_VIDEO_STREAMS = 16


def safe_name(stream: str) -> str:
    """A file-name-safe version of a stream name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stream).strip("._") or "stream"


class VideoOutput(Output):
    """One ``cv2.VideoWriter`` (mp4v) per stream: the first stream seen writes
    ``out_dir/annotated.mp4``, later ones ``out_dir/annotated_<stream>.mp4``.

    Args:
        out_dir: output folder (created).
        fps: frame rate written into the files (frames/s); 0 = the header's ``fps`` or 25.
        append: keep existing files: write ``<name>.partN.mp4`` instead (after a restart).
    """

    name = "video"
    needs_image = True

    fatal_errors = (OSError,)  # the folder cannot be written: the video would be lost

    def __init__(self, out_dir: Path, fps: float = 0.0, append: bool = False):
        self.out_dir = Path(out_dir)
        self.fps = fps
        self.append = append
        self.writers: dict[str, tuple[cv2.VideoWriter, tuple[int, int], Path]] = {}
        self.frames: dict[str, int] = {}
        self.skipped: set[str] = set()  # streams not recorded (cap reached or open failed)

    def open(self) -> None:
        """Create the output folder."""
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def path_for(self, stream: str) -> Path:
        """File the stream is (or will be) written to."""
        if stream in self.writers:
            return self.writers[stream][2]
        stem = "annotated" if not self.writers else f"annotated_{safe_name(stream)}"
        path = self.out_dir / f"{stem}.mp4"
        part = 1
        while self.append and path.exists():
            path = self.out_dir / f"{stem}.part{part}.mp4"
            part += 1
        return path

    def write(self, result: SinkResult) -> None:
        """Append the annotated frame to its stream's file (see :meth:`write_frame`)."""
        self.write_frame(result.stream, result.image, result.header.get("fps"))

    def write_frame(self, stream: str, image: np.ndarray,
                    header_fps: float | None = None) -> bool:
        """Append a ``(H, W, 3) uint8`` BGR frame to the stream's file (resized to the
        file's size when the stream changes resolution).

        Returns:
            ``False`` when the stream is not recorded: more than :data:`MAX_VIDEO_STREAMS`
            streams, or its file could not be opened (both logged once per stream).
        """
        if stream in self.skipped:
            return False
        if stream not in self.writers and len(self.writers) >= MAX_VIDEO_STREAMS:
            self.skipped.add(stream)
            log.warning("stream %r not recorded to MP4: already %d video files open "
                        "(MAX_VIDEO_STREAMS)", stream, MAX_VIDEO_STREAMS)
            return False
        if stream not in self.writers:
            path = self.path_for(stream)
            fps = self.fps or (header_fps if header_fps and header_fps > 0 else 25.0)
            size = (image.shape[1], image.shape[0])
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), size)
            if not writer.isOpened():
                self.skipped.add(stream)
                log.error("stream %r not recorded: cannot open a video writer for %s",
                          stream, path)
                return False
            self.writers[stream] = (writer, size, path)
            self.frames[stream] = 0
            log.info("writing stream %r to %s (%dx%d, %.2f fps)", stream, path, *size, fps)
        writer, size, _ = self.writers[stream]
        if (image.shape[1], image.shape[0]) != size:
            image = cv2.resize(image, size)
        writer.write(image)
        self.frames[stream] += 1
        return True

    def close(self) -> None:
        """Finish every file (writes the MP4 index)."""
        for writer, _, path in self.writers.values():
            writer.release()
            log.info("closed %s", path)
        self.writers.clear()
