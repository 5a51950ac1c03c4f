#!/usr/bin/env python3
"""RTSP server that loops a video clip forever: a camera for trying the stack without one.

Runs on the system Python with GStreamer's RTSP server (Debian: python3-gi,
gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-{base,good,bad,ugly}, gstreamer1.0-libav).

The clip is decoded once into memory as I420 frames (short clips: the sample clips are a few
MB decoded) and replayed through ``appsrc -> x264enc -> rtph264pay`` with continuous
timestamps, so clients see one endless live stream instead of an end of stream. All clients
share one encoder (a shared media). Without a readable clip it serves GStreamer's moving-ball
test pattern so the camera path still works (no faces in it).

Settings (environment, or the command-line options of the same name):

* ``RTSP_DEMO_CLIP``: path of the clip (any format GStreamer decodes); default none.
* ``RTSP_DEMO_PORT``: TCP port (default 8554); ``RTSP_DEMO_HOST``: address (default 0.0.0.0).
* ``RTSP_DEMO_PATH``: mount path (default ``/demo``): ``rtsp://HOST:PORT/demo``.
* ``RTSP_DEMO_FPS``: frame rate when the clip reports none (default 12 frames/s).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

log = logging.getLogger("rtsp-demo")

#: Refuse to hold more than this much decoded video in memory (bytes).
MAX_DECODED_BYTES = 512 * 1024 * 1024


class Clip:
    """Decoded frames of a clip: ``frames`` (list of I420 ``bytes``), ``width``, ``height``
    (pixels, even), ``fps`` (frames/s)."""

    def __init__(self, frames: list[bytes], width: int, height: int, fps: float):
        self.frames, self.width, self.height, self.fps = frames, width, height, fps


def decode_clip(path: str, default_fps: float) -> Clip:
    """Decode ``path`` into I420 frames with GStreamer.

    Raises:
        RuntimeError: the file cannot be decoded, holds no frame, or is too large.
    """
    pipeline = Gst.parse_launch(
        "filesrc name=src ! decodebin ! videoconvert ! videoscale ! "
        "video/x-raw,format=I420 ! appsink name=sink sync=false emit-signals=false")
    pipeline.get_by_name("src").set_property("location", path)
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(Gst.State.PLAYING)
    frames: list[bytes] = []
    width = height = 0
    fps = default_fps
    total = 0
    try:
        while True:
            sample = sink.emit("try-pull-sample", 10 * Gst.SECOND)
            if sample is None:
                break
            if not frames:
                s = sample.get_caps().get_structure(0)
                width, height = s.get_value("width"), s.get_value("height")
                ok, num, den = s.get_fraction("framerate")
                if ok and num > 0 and den > 0:
                    fps = num / den
            buf = sample.get_buffer()
            data = buf.extract_dup(0, buf.get_size())
            total += len(data)
            if total > MAX_DECODED_BYTES:
                raise RuntimeError(f"{path}: decoded clip exceeds {MAX_DECODED_BYTES} bytes")
            frames.append(data)
        bus = pipeline.get_bus()
        err = bus.pop_filtered(Gst.MessageType.ERROR)
        if err is not None and not frames:
            gerr, dbg = err.parse_error()
            raise RuntimeError(f"{path}: {gerr.message}")
    finally:
        pipeline.set_state(Gst.State.NULL)
    if not frames:
        raise RuntimeError(f"{path}: no video frame decoded")
    return Clip(frames, width, height, fps)


class LoopingClipFactory(GstRtspServer.RTSPMediaFactory):
    """Media factory whose ``appsrc`` replays ``clip`` endlessly with rising timestamps."""

    def __init__(self, clip: Clip):
        super().__init__()
        self.clip = clip
        self.index = 0
        self.duration = int(Gst.SECOND / clip.fps)
        self.set_shared(True)
        gop = max(1, round(clip.fps))
        self.set_launch(
            "( appsrc name=src is-live=true format=time do-timestamp=false block=false ! "
            "clocksync ! "
            "videoconvert ! "
            f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} bitrate=1500 ! "
            "video/x-h264,profile=baseline ! h264parse ! "
            "rtph264pay name=pay0 pt=96 config-interval=1 )")
        self.connect("media-configure", self._on_configure)

    def _on_configure(self, _factory, media) -> None:
        src = media.get_element().get_child_by_name("src")
        fps_num = round(self.clip.fps * 1000)
        src.set_property("caps", Gst.Caps.from_string(
            f"video/x-raw,format=I420,width={self.clip.width},height={self.clip.height},"
            f"framerate={fps_num}/1000"))
        self.index = 0
        src.connect("need-data", self._on_need_data)

    def _on_need_data(self, src, _length) -> None:
        clip = self.clip
        data = clip.frames[self.index % len(clip.frames)]
        buf = Gst.Buffer.new_wrapped(data)
        buf.pts = self.index * self.duration
        buf.duration = self.duration
        self.index += 1
        src.emit("push-buffer", buf)


def pattern_factory(fps: float) -> GstRtspServer.RTSPMediaFactory:
    """Factory serving the moving-ball test pattern (no faces) at ``fps``."""
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_shared(True)
    factory.set_launch(
        f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,"
        f"framerate={max(1, round(fps))}/1 ! videoconvert ! "
        "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=12 ! "
        "video/x-h264,profile=baseline ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )")
    return factory


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Options default to the ``RTSP_DEMO_*`` environment variables."""
    env = os.environ
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clip", default=env.get("RTSP_DEMO_CLIP", ""))
    p.add_argument("--host", default=env.get("RTSP_DEMO_HOST", "0.0.0.0"))
    p.add_argument("--port", type=int, default=int(env.get("RTSP_DEMO_PORT", "8554")))
    p.add_argument("--path", default=env.get("RTSP_DEMO_PATH", "/demo"))
    p.add_argument("--fps", type=float, default=float(env.get("RTSP_DEMO_FPS", "12")))
    args = p.parse_args(argv)
    if not args.path.startswith("/"):
        p.error("--path must start with '/'")
    if not 0 < args.port < 65536:
        p.error("--port must be 1..65535")
    if not 0 < args.fps <= 240:
        p.error("--fps must be in (0, 240]")
    return args


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    Gst.init(None)
    factory = None
    if args.clip and os.path.isfile(args.clip):
        try:
            clip = decode_clip(args.clip, args.fps)
            log.info("looping %s: %d frames %dx%d at %.2f fps", args.clip, len(clip.frames),
                     clip.width, clip.height, clip.fps)
            factory = LoopingClipFactory(clip)
        except RuntimeError as exc:
            log.error("cannot use clip: %s; serving the test pattern", exc)
    else:
        log.warning("clip %r not found; serving the test pattern (no faces). Put an .mp4 in "
                    "the clips folder and set RTSP_DEMO_CLIP", args.clip)
    if factory is None:
        factory = pattern_factory(args.fps)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        log.error("cannot listen on %s:%d", args.host, args.port)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    log.info("serving rtsp://%s:%d%s", args.host, args.port, args.path)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
