#!/usr/bin/env python3
"""RTSP server that plays a video clip: the demo camera, and the real camera of the tests.

Runs on the system Python with GStreamer's RTSP server (Debian: python3-gi,
gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-{base,good,bad,ugly}, gstreamer1.0-libav).
``docker compose --profile demo`` runs it as a camera for trying the stack without one;
the tests (``tests/rtsp_server.py``) and ``bench/soak.py --rtsp`` run it on 127.0.0.1.

The clip is decoded once into memory as I420 frames (short clips: the sample clips are a few
MB decoded; ``--max-frames`` caps it) and pushed through ``appsrc -> x264enc (zerolatency,
a key frame every second) -> rtph264pay`` at the clip's frame rate with continuous
timestamps. With ``--loop true`` (default) clients see one endless live stream; with
``--loop false`` the stream ends after the last frame. ``--shared true`` (default) lets all
clients share one encoder; ``--shared false`` gives each client its own pipeline, starting
at the clip's first frame. Without a readable clip it serves GStreamer's moving-ball test
pattern so the camera path still works (no faces in it), unless ``--strict`` asks it to
exit with status 1 instead. Once listening it logs ``serving rtsp://HOST:PORT/PATH`` and
prints ``READY rtsp://...`` on standard output. SIGINT/SIGTERM stop it.

Settings (environment, or the command-line options of the same name):

* ``RTSP_DEMO_CLIP``: path of the clip (any format GStreamer decodes); default none.
* ``RTSP_DEMO_PORT``: TCP port (default 8554); ``RTSP_DEMO_HOST``: address (default 0.0.0.0).
* ``RTSP_DEMO_PATH``: mount path (default ``/demo``): ``rtsp://HOST:PORT/demo``.
* ``RTSP_DEMO_FPS``: frame rate when the clip reports none (default 12 frames/s).
* ``RTSP_DEMO_LOOP``, ``RTSP_DEMO_SHARED``: ``true`` or ``false`` (default ``true`` each).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from fractions import Fraction

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

log = logging.getLogger("rtsp-demo")

#: Refuse to hold more than this much decoded video in memory (bytes).
MAX_DECODED_BYTES = 512 * 1024 * 1024
#: H.264 settings of every stream: low latency, baseline profile, RTP payload 96.
ENCODE = ("x264enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} bitrate={kbps} ! "
          "video/x-h264,profile=baseline ! h264parse ! rtph264pay name=pay0 pt=96 "
          "config-interval=1")


class Clip:
    """Decoded frames of a clip: ``frames`` (list of I420 ``bytes``), ``width``, ``height``
    (pixels), ``fps`` (frames/s, a :class:`fractions.Fraction`)."""

    def __init__(self, frames: list[bytes], width: int, height: int, fps: Fraction):
        self.frames, self.width, self.height, self.fps = frames, width, height, fps


def decode_clip(path: str, default_fps: float, max_frames: int = 0) -> Clip:
    """Decode ``path`` into I420 frames with GStreamer (at most ``max_frames``; 0 = all).

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
    fps = Fraction(default_fps).limit_denominator(1001)
    total = 0
    try:
        while not max_frames or len(frames) < max_frames:
            sample = sink.emit("try-pull-sample", 10 * Gst.SECOND)
            if sample is None:
                break
            if not frames:
                s = sample.get_caps().get_structure(0)
                width, height = s.get_value("width"), s.get_value("height")
                ok, num, den = s.get_fraction("framerate")
                if ok and num > 0 and den > 0:
                    fps = Fraction(num, den)
            buf = sample.get_buffer()
            data = buf.extract_dup(0, buf.get_size())
            total += len(data)
            if total > MAX_DECODED_BYTES:
                raise RuntimeError(f"{path}: decoded clip exceeds {MAX_DECODED_BYTES} bytes")
            frames.append(data)
        err = pipeline.get_bus().pop_filtered(Gst.MessageType.ERROR)
        if err is not None and not frames:
            gerr, _dbg = err.parse_error()
            raise RuntimeError(f"{path}: {gerr.message}")
    finally:
        pipeline.set_state(Gst.State.NULL)
    if not frames:
        raise RuntimeError(f"{path}: no video frame decoded")
    return Clip(frames, width, height, fps)


class ClipFactory(GstRtspServer.RTSPMediaFactory):
    """Media factory whose ``appsrc`` plays ``clip`` with rising timestamps: repeated
    forever when ``loop``, else ending after the last frame. Each media (one per client
    unless ``shared``) starts at the clip's first frame."""

    def __init__(self, clip: Clip, loop: bool, shared: bool):
        super().__init__()
        self.clip = clip
        self.loop = loop
        self.duration = Gst.util_uint64_scale(Gst.SECOND, clip.fps.denominator,
                                              clip.fps.numerator)
        self.set_shared(shared)
        self.set_launch(
            "( appsrc name=src is-live=true format=time do-timestamp=false block=false ! "
            "clocksync ! videoconvert ! "
            + ENCODE.format(gop=max(1, round(clip.fps)), kbps=1500) + " )")
        self.connect("media-configure", self._on_configure)

    def _on_configure(self, _factory, media) -> None:
        src = media.get_element().get_child_by_name("src")
        fps = self.clip.fps
        src.set_property("caps", Gst.Caps.from_string(
            f"video/x-raw,format=I420,width={self.clip.width},height={self.clip.height},"
            f"framerate={fps.numerator}/{fps.denominator}"))
        src.connect("need-data", self._on_need_data, {"index": 0})

    def _on_need_data(self, src, _length, state: dict) -> None:
        i, frames = state["index"], self.clip.frames
        if i >= len(frames) and not self.loop:
            src.emit("end-of-stream")
            return
        buf = Gst.Buffer.new_wrapped(frames[i % len(frames)])
        buf.pts = i * self.duration
        buf.duration = self.duration
        state["index"] = i + 1
        src.emit("push-buffer", buf)


def pattern_factory(fps: float, shared: bool) -> GstRtspServer.RTSPMediaFactory:
    """Factory serving the moving-ball test pattern (no faces) at ``fps``."""
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_shared(shared)
    factory.set_launch(
        f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width=640,height=360,"
        f"framerate={max(1, round(fps))}/1 ! videoconvert ! "
        + ENCODE.format(gop=12, kbps=2048) + " )")
    return factory


def _bool(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError("use true or false")
    return text.lower() == "true"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Options default to the ``RTSP_DEMO_*`` environment variables."""
    env = os.environ
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clip", default=env.get("RTSP_DEMO_CLIP", ""))
    p.add_argument("--host", default=env.get("RTSP_DEMO_HOST", "0.0.0.0"))
    p.add_argument("--port", type=int, default=int(env.get("RTSP_DEMO_PORT", "8554")))
    p.add_argument("--path", default=env.get("RTSP_DEMO_PATH", "/demo"))
    p.add_argument("--fps", type=float, default=float(env.get("RTSP_DEMO_FPS", "12")))
    p.add_argument("--loop", type=_bool, default=_bool(env.get("RTSP_DEMO_LOOP", "true")),
                   help="repeat the clip forever (true) or end after its last frame")
    p.add_argument("--shared", type=_bool,
                   default=_bool(env.get("RTSP_DEMO_SHARED", "true")),
                   help="one encoder for all clients (true) or one pipeline per client")
    p.add_argument("--max-frames", type=int, default=0, help="decode at most N frames")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when the clip cannot be used instead of the test pattern")
    args = p.parse_args(argv)
    if not args.path.startswith("/"):
        p.error("--path must start with '/'")
    if not 0 < args.port < 65536:
        p.error("--port must be 1..65535")
    if not 0 < args.fps <= 240:
        p.error("--fps must be in (0, 240]")
    if args.max_frames < 0:
        p.error("--max-frames must be >= 0")
    return args


def make_factory(args: argparse.Namespace) -> GstRtspServer.RTSPMediaFactory | None:
    """The clip's factory, or the test pattern's (``None`` with ``--strict``) when the
    clip cannot be used."""
    if args.clip and os.path.isfile(args.clip):
        try:
            clip = decode_clip(args.clip, args.fps, args.max_frames)
            log.info("playing %s: %d frames %dx%d at %.2f fps, loop %s", args.clip,
                     len(clip.frames), clip.width, clip.height, float(clip.fps), args.loop)
            return ClipFactory(clip, args.loop, args.shared)
        except RuntimeError as exc:
            log.error("cannot use clip: %s", exc)
    else:
        log.warning("clip %r not found", args.clip)
    if args.strict:
        return None
    log.warning("serving the test pattern (no faces). Put an .mp4 in the clips folder and "
                "set RTSP_DEMO_CLIP")
    return pattern_factory(args.fps, args.shared)


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    Gst.init(None)
    factory = make_factory(args)
    if factory is None:
        return 1
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
    url = f"rtsp://{args.host}:{args.port}{args.path}"
    log.info("serving %s", url)
    print(f"READY {url}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
