"""A real RTSP server on 127.0.0.1 that plays a video clip (GStreamer gst-rtsp-server).

Run with the system Python, which has PyGObject (the project's venv does not):

    /usr/bin/python3 tests/rtsp/serve.py --clip ../shared/videos/x.mp4 --port 8554 [--loop]

Needs the Debian packages ``python3-gi``, ``gir1.2-gst-rtsp-server-1.0``,
``gstreamer1.0-plugins-base``, ``gstreamer1.0-plugins-good``,
``gstreamer1.0-plugins-bad`` (h264parse), ``gstreamer1.0-plugins-ugly`` (x264enc) and
``gstreamer1.0-libav`` (H.264 decoding).

The clip is decoded once into memory (raw I420; keep clips small or use
``--max-frames``), then every client gets its own pipeline (not shared) that pushes the
frames through ``appsrc`` at the clip's frame rate, re-encodes them to H.264
(``x264enc`` zerolatency, a key frame every second) and payloads them as RTP
(``rtph264pay``). With ``--loop`` the clip repeats forever with continuous timestamps;
without it the stream ends after the last frame. A line ``READY <url>`` is printed once
the server listens. SIGTERM/SIGINT stop it.
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstApp", "1.0")
from gi.repository import GLib, Gst, GstApp, GstRtspServer  # noqa: E402,F401


def decode_clip(path: str, max_frames: int) -> tuple[list[bytes], int, int, int, int]:
    """Decode ``path`` to I420 frames: ``(frames, width, height, fps_num, fps_den)``."""
    pipe = Gst.parse_launch(
        "filesrc name=src ! decodebin ! videoconvert ! video/x-raw,format=I420 ! "
        "appsink name=sink sync=false max-buffers=0 emit-signals=false")
    pipe.get_by_name("src").set_property("location", path)
    sink = pipe.get_by_name("sink")
    pipe.set_state(Gst.State.PLAYING)
    frames, caps = [], None
    while not max_frames or len(frames) < max_frames:
        sample = sink.emit("pull-sample")
        if sample is None:
            break
        caps = caps or sample.get_caps()
        buf = sample.get_buffer()
        frames.append(buf.extract_dup(0, buf.get_size()))
    pipe.set_state(Gst.State.NULL)
    if not frames or caps is None:
        raise SystemExit(f"serve.py: could not decode any frame from {path}")
    s = caps.get_structure(0)
    ok, num, den = s.get_fraction("framerate")
    if not ok or num <= 0:
        num, den = 12, 1
    return frames, s.get_value("width"), s.get_value("height"), num, den


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clip", required=True, help="video file to serve")
    ap.add_argument("--port", type=int, required=True, help="RTSP TCP port on 127.0.0.1")
    ap.add_argument("--path", default="/stream", help="mount path (default /stream)")
    ap.add_argument("--loop", action="store_true", help="repeat the clip forever")
    ap.add_argument("--max-frames", type=int, default=0, help="decode at most N frames")
    args = ap.parse_args()

    Gst.init(None)
    frames, width, height, num, den = decode_clip(args.clip, args.max_frames)
    duration = Gst.util_uint64_scale(Gst.SECOND, den, num)
    caps = (f"video/x-raw,format=I420,width={width},height={height},"
            f"framerate={num}/{den}")
    keyint = max(1, round(num / den))

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( appsrc name=src is-live=true format=time caps={caps} ! queue ! "
        f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={keyint} "
        f"bitrate=2000 ! rtph264pay name=pay0 pt=96 config-interval=1 )")
    factory.set_shared(False)

    def on_need_data(src, _length, state):
        i = state["i"]
        if i >= len(frames) and not args.loop:
            src.emit("end-of-stream")
            return
        buf = Gst.Buffer.new_wrapped(frames[i % len(frames)])
        buf.pts = i * duration
        buf.duration = duration
        state["i"] = i + 1
        src.emit("push-buffer", buf)

    def on_configure(_factory, media):
        src = media.get_element().get_child_by_name("src")
        src.connect("need-data", on_need_data, {"i": 0})

    factory.connect("media-configure", on_configure)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"serve.py: cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"READY rtsp://127.0.0.1:{args.port}{args.path} {width}x{height} "
          f"{num}/{den} fps {len(frames)} frames loop={args.loop}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
