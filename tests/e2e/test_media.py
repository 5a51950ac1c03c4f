"""Issue 12 items 4, 5, 8 and issue 14 item 4 through the whole stack (``agegender run``):
media time kept from file to events and annotated video, a live recording that lasts as
long as the run, a file name with colons, a damaged file read past its damage.

Real parts: the four service processes, the real detector and model, a real RTSP server,
clips made from the shared ones in a temp folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from services.orchestrator.options import StackOptions
from services.orchestrator.runner import run_stack
from tests.conftest import ROOT, clip_path
from tests.e2e.conftest import read_events
from tests.media import VFR_TIMES_S, clip_frames, damage, frame_times, write_clip
from tests.waits import wait_for

pytestmark = pytest.mark.slow
CLIP = "face-demographics-walking-and-pause.mp4"   # 41 frames, 480x270, 12 fps


def test_a_variable_frame_rate_file_keeps_its_timing_in_events_and_video(tmp_path,
                                                                         model_name):
    # given the demo clip's 41 frames re-timed: 20 at 30 fps, then 21 at 3 fps
    vfr = write_clip(tmp_path / "vfr.mp4", clip_frames(clip_path(CLIP)), VFR_TIMES_S)
    # when the stack runs it (unpaced: the timing must come from the file, not the clock)
    code, summary = run_stack(StackOptions(sources=[str(vfr)], out_dir=tmp_path / "out",
                                           realtime=False, model=model_name,
                                           http_base_port=0), progress=False)
    assert code == 0, summary
    # then every event carries its frame's media time: frame 20 at 0.667 s, not 3.33 s
    events = read_events(tmp_path / "out" / "events.jsonl")
    assert [e["seq"] for e in events] == list(range(41))
    assert events[20]["t_media"] == pytest.approx(20 / 30, abs=0.002)
    assert np.allclose([e["t_media"] for e in events], VFR_TIMES_S, atol=0.002)
    # and the annotated video shows each frame at that time
    times = frame_times(tmp_path / "out" / "annotated.mp4")
    assert len(times) == 41 and times[20] == pytest.approx(20 / 30, abs=0.002)
    assert np.allclose(times, VFR_TIMES_S, atol=0.002)


def test_a_live_recording_lasts_as_long_as_the_run(rtsp_server, tmp_path, model_name):
    # given a live RTSP camera at 12 fps of which the stack processes at most 4 frames a
    # second (a pipeline slower than its camera: most live frames are dropped)
    url = rtsp_server(clip_path(CLIP), loop=True).url
    stop, holder = threading.Event(), {}
    opts = StackOptions(sources=[f"cam={url}"], out_dir=tmp_path / "out", model=model_name,
                        http_base_port=0, service_args={"capture": ["--max-fps", "4"]})
    t = threading.Thread(target=lambda: holder.setdefault("result", run_stack(
        opts, stop, progress=False, on_started=lambda s: holder.update(stack=s))),
        daemon=True)
    t.start()
    # when it records for a while (40 frames: about 10 s) and is stopped
    wait_for(lambda: not t.is_alive() or "stack" in holder
             and holder["stack"].status().get("frames", 0) >= 40, 180, "40 live frames")
    stop.set()
    t.join(30)
    assert not t.is_alive() and holder["result"][0] == 0, holder.get("result")
    events = read_events(tmp_path / "out" / "events.jsonl")
    wall_s = events[-1]["t_capture"] - events[0]["t_capture"]
    times = frame_times(tmp_path / "out" / "annotated.mp4")
    print(f"live recording: {len(times)} frames, video {times[-1]:.2f} s, "
          f"wall clock {wall_s:.2f} s")
    # then the video spans the wall-clock time between its first and last frame (within
    # 20 %), not frames / 12 fps (a third of it), and so do the events' media times
    assert wall_s > 5 and len(times) >= 20
    assert times[-1] == pytest.approx(wall_s, rel=0.2), (times[-1], wall_s, len(times))
    media_s = events[-1]["t_media"] - events[0]["t_media"]
    assert media_s == pytest.approx(wall_s, rel=0.2), (media_s, wall_s)


def test_a_file_named_like_a_timestamp_runs(tmp_path, model_name):
    # given a clip named 2024-05-01T10:00:00.mp4 in the current folder
    (tmp_path / "2024-05-01T10:00:00.mp4").write_bytes(clip_path(CLIP).read_bytes())
    # when the user runs it by that bare name
    res = subprocess.run([sys.executable, "-m", "services.cli", "run", "--source",
                          "2024-05-01T10:00:00.mp4", "--out", "out", "--no-progress",
                          "--no-realtime", "--http-base-port", "0", "--model", model_name],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    # then it plays the file to its end (it was refused with "cannot open")
    assert res.returncode == 0, res.stderr[-3000:]
    events = read_events(tmp_path / "out" / "events.jsonl")
    assert len(events) == 41 and {e["stream"] for e in events} == {"2024-05-01T10_00_00"}


def test_a_damaged_file_is_played_past_its_damage_and_the_summary_says_so(tmp_path,
                                                                          model_name):
    # given the demo clip (41 frames) with 16 KiB of random bytes over its middle: OpenCV
    # stops reading it at frame 12
    bad = damage(clip_path(CLIP), tmp_path / "damaged.mp4", n_bytes=16 * 1024)
    # when the stack runs it
    code, summary = run_stack(StackOptions(sources=[f"cam={bad}"], out_dir=tmp_path / "out",
                                           realtime=False, model=model_name,
                                           http_base_port=0), progress=False)
    # then every frame the decoder can still read reaches the sink, the damaged ones are
    # counted as decode_error drops, and together they make the file's 41 frames
    assert code == 0, summary
    events = read_events(tmp_path / "out" / "events.jsonl")
    skipped = summary["drops"].get("capture/decode_error", 0)
    assert len(events) > 30 and skipped > 0
    assert len(events) + skipped == 41, (len(events), skipped)
    assert summary["frames"] == len(events)
    # and the summary says the file ended short of the 41 frames it states, and why
    assert summary["short_files"] == {"cam": {"stated_frames": 41, "short": skipped,
                                              "damaged": skipped}}
    from services.orchestrator.summary import format_summary
    line = [x for x in format_summary(summary).splitlines() if "SHORT" in x]
    assert line == [f"  SHORT        cam: the file ended after {len(events)} of the 41 "
                    f"frames it states ({skipped:g} damaged frames skipped, decode_error)"]


def test_a_sink_killed_mid_run_leaves_playable_videos(tmp_path, model_name):
    # given the stack on a looping clip at its native frame rate, writing to --out
    out = tmp_path / "out"
    stop, holder = threading.Event(), {}
    opts = StackOptions(sources=[str(clip_path(CLIP))], out_dir=out, loop=True,
                        model=model_name, http_base_port=0)
    t = threading.Thread(target=lambda: holder.setdefault("result", run_stack(
        opts, stop, progress=False, on_started=lambda s: holder.update(stack=s))),
        daemon=True)
    t.start()
    try:
        # when 3 s of video are written and the sink is killed with SIGKILL (watchdog
        # restarts it), and the run goes on until the new sink wrote 3 s too
        wait_for(lambda: not t.is_alive() or "stack" in holder
                 and len(frame_times_or_none(out / "annotated.mp4")) >= 36, 180,
                 "36 frames readable in annotated.mp4")
        stack = holder["stack"]
        os.kill(stack.children["sink"].pid, signal.SIGKILL)
        wait_for(lambda: stack.children["sink"].total_restarts == 1, 30, "a sink restart")
        wait_for(lambda: len(frame_times_or_none(out / "annotated.part1.mp4")) >= 36, 180,
                 "36 frames readable in annotated.part1.mp4")
    finally:
        stop.set()
        t.join(30)
    # then both files open and decode: the killed sink's up to its last fragment, the
    # new one's to its end, each frame at its media time (12 fps clip)
    assert holder["result"][0] == 0, holder["result"]
    for name in ("annotated.mp4", "annotated.part1.mp4"):
        times = frame_times(out / name)
        assert len(times) >= 36, name
        assert np.allclose(np.diff(times), 1 / 12, atol=0.002), name


def frame_times_or_none(path) -> list[float]:
    """Frame times of ``path`` as it is now, or ``[]`` when it cannot be read (yet)."""
    import av
    try:
        return frame_times(path)
    except (av.error.FFmpegError, FileNotFoundError, IndexError):
        return []


def test_a_4097x300_panorama_gives_its_faces(tmp_path, model_name):
    # given the demo clip (3 faces a frame, 30-45 px wide) padded to a 4097x300 panorama
    frames = []
    for f in clip_frames(clip_path(CLIP)):
        wide = np.full((300, 4097, 3), 90, np.uint8)
        wide[15:285, 1800:2280] = f
        frames.append(wide)
    pano = write_clip(tmp_path / "pano.mp4", frames, [k / 12 for k in range(41)])
    # when the stack runs it (default detector: BlazeFace on tiles), told that the camera
    # shows faces from 10 px wide (below what it finds at this size: about 19 px)
    code, summary = run_stack(StackOptions(
        sources=[str(pano)], out_dir=tmp_path / "out", realtime=False, model=model_name,
        http_base_port=0, service_args={"detector": ["--expected-min-face-px", "10"]}),
        progress=False)
    # then the faces are found where they are (they were shrunk to ~13 px before: none)
    assert code == 0, summary
    events = read_events(tmp_path / "out" / "events.jsonl")
    assert len(events) == 41 and (events[0]["width"], events[0]["height"]) == (4097, 300)
    assert sum(len(e["faces"]) for e in events) / 41 >= 2.5
    assert all(1800 <= f["box"][0] and f["box"][2] <= 2280 for e in events for f in e["faces"])
    # and the annotated video holds every frame (4:2:0 needs an even width: 4098)
    assert len(frame_times(tmp_path / "out" / "annotated.mp4")) == 41
    # and the summary warns that faces narrower than expected would be missed
    from services.orchestrator.summary import format_summary
    assert summary["small_faces"] == ["pano"]
    assert "SMALL FACES  pano: at its frame size the detector misses faces" \
        in format_summary(summary)
    # and without tiles the detector says that such faces are below what it finds
    from common.detectors import make_detector
    from services.detector.frames import SmallFaceWarning
    warn = SmallFaceWarning(make_detector("blazeface", threads=1, tiles=False), 24.0,
                            tiles=False)
    assert "4097x300" in (warn.check("pano", 4097, 300) or "")
