"""Real media made for tests (PyAV/FFmpeg): clips with chosen timestamps, damaged copies,
and what a file really holds (frame times read back with PyAV, ffprobe)."""

from __future__ import annotations

import json
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

#: The variable-frame-rate clip of issue 12 item 4: 20 frames at 30 fps, then 21 at 3 fps.
VFR_TIMES_S = [k / 30 for k in range(20)] + [20 / 30 + j / 3 for j in range(21)]


def clip_frames(path: Path, limit: int = 10_000) -> list[np.ndarray]:
    """The frames of a clip as ``(H, W, 3) uint8`` BGR arrays (at most ``limit``)."""
    with av.open(str(path)) as c:
        out = []
        for frame in c.decode(video=0):
            out.append(frame.to_ndarray(format="bgr24"))
            if len(out) >= limit:
                break
    return out


def write_clip(path: Path, frames: list[np.ndarray], times_s: list[float],
               codec: str = "libx264") -> Path:
    """Write ``frames`` to an MP4 (plain, not fragmented: as a camera or phone writes it)
    with each frame's presentation time ``times_s`` (seconds) in a 1/90000 time base;
    4:2:0 chroma, or 4:4:4 when a side is odd (4:2:0 needs even sides)."""
    tb = Fraction(1, 90000)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream(codec, rate=30)
        s.width, s.height = w, h
        s.pix_fmt = "yuv420p" if w % 2 == 0 and h % 2 == 0 else "yuv444p"
        s.codec_context.time_base = tb
        s.time_base = tb
        for img, t in zip(frames, times_s):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="bgr24")
            f.pts, f.time_base = round(t * 90000), tb
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def frame_times(path: Path) -> list[float]:
    """Presentation time (seconds, from the first frame) of every frame PyAV decodes from
    ``path``, in order."""
    with av.open(str(path)) as c:
        times = [float(f.pts * f.time_base) for f in c.decode(video=0)]
    return [t - times[0] for t in times] if times else []


def damage(src: Path, dst: Path, n_bytes: int = 64 * 1024, seed: int = 1) -> Path:
    """Copy ``src`` to ``dst`` and overwrite ``n_bytes`` random bytes at its middle (a
    damaged download or a bad sector)."""
    shutil.copyfile(src, dst)
    size = dst.stat().st_size
    with open(dst, "r+b") as f:
        f.seek(size // 2)
        f.write(np.random.default_rng(seed).bytes(n_bytes))
    return dst


def ffprobe(path: Path) -> dict:
    """``ffprobe``'s view of the first video stream after reading every frame:
    ``{"codec_name", "nb_read_frames", "duration"}`` (raises when ffprobe fails)."""
    res = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
                          "-show_entries", "stream=codec_name,nb_read_frames:format=duration",
                          "-of", "json", str(path)], capture_output=True, text=True,
                         timeout=120)
    if res.returncode != 0:
        raise AssertionError(f"ffprobe cannot read {path}: {res.stderr[-500:]}")
    data = json.loads(res.stdout)
    stream = data["streams"][0]
    return {"codec_name": stream.get("codec_name"),
            "nb_read_frames": int(stream.get("nb_read_frames", 0)),
            "duration": float(data.get("format", {}).get("duration", "nan"))}
