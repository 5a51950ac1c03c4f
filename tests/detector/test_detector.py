"""Detector: per-frame processing on real frames with the real SSD and BlazeFace models,
keypoints on the wire, boxes at the edge, detection quality on the shared clips, the
small-face warning, and the service (BlazeFace by default) over real sockets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest
import zmq
from prometheus_client import CollectorRegistry

from common import wire
from common.detectors import make_detector
from common.detectors.ssd import SSDDetector
from common.images import BadFrame
from services.detector.config import DetectorConfig
from common.crops import DEFAULT_RULE, crop_region
from services.detector.frames import (SmallFaceWarning, cut_crops, detect_faces, newest_live,
                                      process_frame)
from services.detector.main import main as detector_main
from common.metrics import StageMetrics
from common.stream_router import StreamRouter
from tests.conftest import clip_path, free_port, wait_http
from tests.waits import HANG_S, wait_for

WALKING = "face-demographics-walking-and-pause.mp4"


@pytest.fixture(scope="module")
def ssd():
    return make_detector("ssd")


@pytest.fixture(scope="module")
def blazeface():
    """The default backend with the service's defaults."""
    return make_detector(threads=1)


def _frames(path, limit=10_000):
    cap = cv2.VideoCapture(str(path))
    out = []
    while len(out) < limit:
        ok, f = cap.read()
        if not ok:
            break
        out.append(f)
    cap.release()
    return out


def _frame_msg(image, seq=0, stream="s", live=False, **extra):
    hdr = wire.frame_header(stream, seq, time.time_ns(), image.shape[1], image.shape[0],
                            live=live, **extra)
    return wire.decode(wire.encode_frame(hdr, image))


@pytest.fixture(scope="module")
def walking_frame(ssd):
    """Frame 0 of the walking clip (3 people side by side), ``(270, 480, 3)`` BGR."""
    return _frames(clip_path(WALKING), 1)[0]


def test_process_frame_on_a_real_frame(ssd, walking_frame):
    # given frame 0 of the walking clip (3 people) as a frame message with extra fields
    image = walking_frame
    msg = _frame_msg(image, seq=7, stream="lobby", live=True, source_note="x")
    # when processed with the default payload (the frame)
    out = wire.decode(process_frame(msg, ssd))
    # then a faces message keeps every upstream field and adds boxes and t_detector_ns
    h = out.header
    assert out.kind == "faces" and h["stream"] == "lobby" and h["seq"] == 7
    assert h["live"] is True and h["source_note"] == "x"
    assert h["t_capture_ns"] == msg.header["t_capture_ns"] <= h["t_detector_ns"]
    assert len(h["faces"]) == 3
    # and the frame travels once, raw, with no crops beside it
    assert "crops" not in h and out.crops == [] and h["encoding"] == "bgr8"
    assert np.array_equal(out.image, image)
    for face in h["faces"]:
        x1, y1, x2, y2 = face["box"]
        assert 0 <= x1 < x2 <= 480 and 0 <= y1 < y2 <= 270
        assert 0.5 <= face["confidence"] <= 1.0
    # faces sorted left to right are the three people standing side by side
    xs = sorted((f["box"][0] + f["box"][2]) / 2 for f in h["faces"])
    assert xs[1] - xs[0] > 40 and xs[2] - xs[1] > 40               # three distinct people


def test_crops_payload_sends_widened_crops_and_the_frame_as_jpeg(ssd, walking_frame):
    # given the same frame
    image = walking_frame
    msg = _frame_msg(image, seq=3)
    # when processed with payload "crops" and the compact model's crop aspect
    out = wire.decode(process_frame(msg, ssd, payload="crops", crop_aspect=0.88,
                                    jpeg_quality=90))
    h = out.header
    # then each crop is the box widened to 0.88 (never narrower, same height), raw BGR
    assert len(h["faces"]) == 3 == len(out.crops) == len(h["crops"])
    for face, crop, shape in zip(h["faces"], out.crops, h["crops"]):
        x1, y1, x2, y2 = face["box"]
        assert list(crop.shape[:2]) == shape and crop.shape[0] == y2 - y1
        assert crop.shape[1] >= x2 - x1
        assert crop.shape[1] == pytest.approx(max(x2 - x1, 0.88 * (y2 - y1)), abs=2)  # rounded out
    # and the frame is a JPEG of the right size that still shows it (the sink draws it)
    assert h["encoding"] == "jpeg" and out.image is None
    decoded = cv2.imdecode(np.frombuffer(out.image_bytes, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == image.shape
    assert np.mean(np.abs(decoded.astype(int) - image)) < 6
    # and it is far smaller than the raw frame and its crops together
    raw = image.nbytes + sum(c.nbytes for c in out.crops)
    assert len(out.image_bytes) + sum(c.nbytes for c in out.crops) < raw / 2


def test_jpeg_frames_are_decoded_and_bad_ones_rejected(ssd, walking_frame):
    image = walking_frame
    ok, jpg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    hdr = wire.frame_header("s", 0, time.time_ns(), 480, 270, encoding="jpeg")
    out = wire.decode(process_frame(wire.decode(wire.encode(hdr, [jpg.tobytes()])), ssd))
    assert out.header["encoding"] == "bgr8" and out.image.shape == (270, 480, 3)
    assert len(out.header["faces"]) == 3
    bad = wire.decode(wire.encode(hdr, [b"\xff\xd8 not a jpeg"]))
    with pytest.raises(BadFrame, match="undecodable"):
        process_frame(bad, ssd)
    wrong = wire.frame_header("s", 0, time.time_ns(), 100, 100, encoding="jpeg")
    with pytest.raises(BadFrame, match="header says"):
        process_frame(wire.decode(wire.encode(wrong, [jpg.tobytes()])), ssd)


class _RowsNet:
    """Stands in for the SSD network's output only: replays fixed detection rows
    ``[image_id, label, confidence, xmin, ymin, xmax, ymax]`` (0..1 coordinates)."""

    def __init__(self, rows):
        self.rows = np.array(rows, np.float32).reshape(1, 1, -1, 7)

    def setInput(self, blob):  # noqa: N802 (OpenCV API)
        assert blob.ndim == 4

    def forward(self):
        return self.rows


def test_boxes_at_the_edge_are_clipped_and_empty_ones_dropped(ssd):
    # given detector rows partly outside the frame, zero-area, tiny, inverted and NaN
    frame = np.full((100, 200, 3), 128, np.uint8)
    rows = [
        [0, 1, 0.90, -0.25, 0.125, 0.25, 0.625],  # xmin < 0: half outside on the left
        [0, 1, 0.80, 0.75, -0.5, 1.50, 0.50],     # xmax > 1 and ymin < 0
        [0, 1, 0.95, 0.50, 0.50, 0.50, 0.90],     # zero width
        [0, 1, 0.95, 0.40, 0.40, 0.41, 0.45],     # 2x5 px: smaller than min_face_px
        [0, 1, 0.95, 0.70, 0.70, 0.60, 0.60],     # inverted
        [0, 1, 0.95, 1.20, 1.20, 1.50, 1.50],     # entirely outside
        [0, 1, 0.95, np.nan, 0.1, 0.5, 0.5],      # NaN coordinate
        [0, 1, np.nan, 0.1, 0.1, 0.5, 0.5],       # NaN confidence
        [0, 1, 0.30, 0.10, 0.10, 0.50, 0.50],     # below the confidence threshold
    ]
    det = SSDDetector(min_face_px=12)
    det.net = _RowsNet(rows)
    # when detected
    faces = detect_faces(frame, det)
    # then only the two edge boxes survive, clipped to the frame, with non-empty crops
    # (x floored, x2/y2 ceiled: 12.5 -> 12, 62.5 -> 63)
    assert [f["box"] for f in faces] == [[0, 12, 50, 63], [150, 0, 200, 50]]
    assert [c.shape for c in cut_crops(frame, faces)] == [(51, 50, 3), (50, 50, 3)]


def test_a_real_face_half_outside_the_frame(ssd, walking_frame):
    # given the walking frame cut so that the leftmost face is split by the left edge
    image = walking_frame
    full = ssd.detect(image)
    left = min(full, key=lambda d: d.box[0]).box
    cut = np.ascontiguousarray(image[:, (left[0] + left[2]) // 2:])
    # when detected / then every box lies inside the frame and every crop is non-empty
    faces = detect_faces(cut, ssd)
    h, w = cut.shape[:2]
    assert len(faces) >= 2
    for f, c in zip(faces, cut_crops(cut, faces)):
        x1, y1, x2, y2 = f["box"]
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h and c.size > 0


@pytest.mark.slow
def test_detection_quality_on_the_shared_clips(ssd, clip, ground_truth):
    # given the clips with 3 faces in every frame and with none at all
    walking = _frames(clip(WALKING))
    empty = _frames(clip("people-detection.mp4"))
    # when every frame is detected with the default settings
    per_frame = [len(ssd.detect(f)) for f in walking]
    false_pos = sum(len(ssd.detect(f)) for f in empty)
    mean = sum(per_frame) / len(per_frame)
    print(f"\nwalking-and-pause: {mean:.3f} faces/frame over {len(walking)} frames "
          f"(ground truth {ground_truth[WALKING]['faces_per_frame']}); people-detection: "
          f"{false_pos} faces in {len(empty)} frames (ground truth 0)")
    # then >= 2.7 faces per frame on average and at most one face in the whole empty clip
    assert len(walking) == ground_truth[WALKING]["frames"]
    assert mean >= 2.7
    assert max(per_frame) <= 3
    assert false_pos <= 1


def test_haar_backend_finds_faces_too(walking_frame):
    # given the Haar backend built with settings it does not use (SSD's), as the service does
    haar = make_detector("haar", confidence=0.5, input_size=300, min_face_px=12)
    # when it detects / then it finds at least two of the three people
    faces = detect_faces(walking_frame, haar)
    assert haar.name == "haar" and len(faces) >= 2
    assert all(c.size > 0 for c in cut_crops(walking_frame, faces))


def test_the_default_backend_and_its_own_defaults():
    # given the detector's configuration with nothing set / then BlazeFace is the backend
    cfg = DetectorConfig()
    assert cfg.backend == "blazeface" and cfg.confidence is None and cfg.tiles
    # and a setting left at None takes each backend's own default; BlazeFace-only
    # settings are ignored by the SSD, as the service passes them to every backend
    bf = make_detector(cfg.backend, confidence=None, min_face_px=None, tiles=True)
    ssd = make_detector("ssd", confidence=None, min_face_px=None, tiles=True,
                        max_tile_side=1080, refine_roll_degrees=8.0)
    assert (bf.confidence, bf.min_face_px) == (0.4, 4)
    assert (ssd.confidence, ssd.min_face_px) == (0.5, 12)
    # and refine_roll_degrees 0 turns the upright re-reading off
    assert make_detector("blazeface", refine_roll_degrees=0).refine_roll_degrees is None


def test_unknown_backend_and_unknown_setting_are_clear_errors():
    with pytest.raises(ValueError, match="unknown detector backend 'yolo'.*'blazeface', 'ssd'"):
        make_detector("yolo")
    with pytest.raises(TypeError):
        make_detector("haar", colour=True)          # not a setting any backend shares


def test_newest_live_keeps_files_and_eos_in_order():
    img = np.zeros((4, 4, 3), np.uint8)
    msgs = [_frame_msg(img, 0, "cam", live=True), _frame_msg(img, 0, "file"),
            _frame_msg(img, 1, "cam", live=True), _frame_msg(img, 1, "file"),
            wire.decode(wire.encode({"kind": "eos", "stream": "file", "seq": 2,
                                     "t_capture_ns": 1})),
            _frame_msg(img, 2, "cam", live=True), _frame_msg(img, 0, "cam2", live=True)]
    kept, dropped = newest_live(msgs)
    assert [(m.stream, m.kind, m.seq) for m in kept] == [
        ("file", "frame", 0), ("file", "frame", 1), ("file", "eos", 2), ("cam", "frame", 2),
        ("cam2", "frame", 0)]
    assert dropped == 2


class DetectorThread:
    """The detector service in a thread, with real sockets around it."""

    def __init__(self, **cfg):
        self.in_port, self.out_port = free_port(), free_port()
        self.cfg = DetectorConfig(input=f"connect:tcp://127.0.0.1:{self.in_port}",
                                  output=f"connect:tcp://127.0.0.1:{self.out_port}",
                                  http_port=0, **cfg)
        self.stop = threading.Event()
        self.registry = CollectorRegistry()
        self.rc = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        self.rc = detector_main(self.cfg, stop=self.stop, registry=self.registry)

    def __enter__(self):
        ctx = zmq.Context.instance()
        # the frame source as capture is: a StreamRouter the detector connects to
        self.push = StreamRouter(ctx, f"bind:tcp://127.0.0.1:{self.in_port}",
                                 StageMetrics("capture"), threading.Event())
        self.pull = ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.pull.bind(f"tcp://127.0.0.1:{self.out_port}")
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)
        self.push.close()
        self.pull.close()
        assert not self.thread.is_alive()

    def value(self, name, **labels):
        return self.registry.get_sample_value(name, labels)


@pytest.mark.parametrize("payload", ["frame", "crops"])
def test_detector_service_passes_frames_and_eos_over_real_sockets(clip, blazeface, payload):
    frames = _frames(clip(WALKING), 12)
    expected = [len(blazeface.detect(f)) for f in frames]  # the same model, in this process
    with DetectorThread(payload=payload) as svc:
        # given 12 file frames, a malformed message and an end of stream sent to its input
        for i, f in enumerate(frames):
            hdr = wire.frame_header("lobby", i, time.time_ns(), 480, 270, live=False)
            assert svc.push.send(wire.encode_frame(hdr, f), "frame", "lobby", block=True,
                                 timeout_s=60)
            if i == 5:
                assert svc.push.send([b"\x93garbage", b"x"], "frame", "lobby", block=True,
                                     timeout_s=60)
        assert svc.push.send_control(wire.encode(
            {"kind": "eos", "stream": "lobby", "seq": 12, "t_capture_ns": time.time_ns(),
             "frames": 12}), "eos", "lobby")
        # when everything comes out
        out = []
        deadline = time.monotonic() + 60
        while (not out or out[-1].kind != "eos") and time.monotonic() < deadline:
            if svc.pull.poll(200):
                out.append(wire.decode(svc.pull.recv_multipart()))
        # then every frame became a faces message, in order, then the end of stream
        assert [m.kind for m in out] == ["faces"] * 12 + ["eos"]
        assert [m.seq for m in out[:-1]] == list(range(12))
        assert [len(m.header["faces"]) for m in out[:-1]] == expected
        # and each person keeps one track over the 12 frames, classified on the first
        # frame and then only as the schedule says (12 fps unknown: every 12 frames)
        tracks = {f["track"] for m in out[:-1] for f in m.header["faces"]}
        assert len(tracks) == max(expected)
        assert all(f["classify"] for f in out[0].header["faces"])
        scheduled = [sum(f["classify"] for f in m.header["faces"]) for m in out[:-1]]
        assert sum(scheduled) < sum(expected)
        # in the form the payload setting asks for, crops only for faces to classify
        assert all(("crops" in m.header) == (payload == "crops") for m in out[:-1])
        assert [len(m.crops) for m in out[:-1]] == (scheduled if payload == "crops"
                                                     else [0] * 12)
        assert sum(expected) >= 2 * 12
        assert out[-1].header["frames"] == 12 and "t_detector_ns" in out[-1].header
        # and the metrics count faces, inference time and the malformed message
        assert svc.value("agegender_faces_detected_total") == sum(expected)
        assert svc.value("agegender_inference_seconds_count", stage="detector",
                         model="blazeface") == 12
        # and every face carries its six keypoints
        assert all(len(f["keypoints"]) == 6 for m in out[:-1] for f in m.header["faces"])
        assert svc.value("agegender_messages_malformed_total", stage="detector",
                         reason="not_msgpack") == 1
    assert svc.rc == 0


def test_two_detection_threads_keep_each_streams_frame_order_and_tracks(clip):
    frames = _frames(clip(WALKING), 24)
    with DetectorThread(workers=2, hwm=8) as svc:
        # given 24 frames of two streams, interleaved, into a detector with 2 threads
        for i, f in enumerate(frames):
            for stream in ("a", "b"):
                hdr = wire.frame_header(stream, i, time.time_ns(), 480, 270)
                assert svc.push.send(wire.encode_frame(hdr, f), "frame", "x", block=True,
                                     timeout_s=60)
        out = []
        deadline = time.monotonic() + 60
        while len(out) < 48 and time.monotonic() < deadline:
            if svc.pull.poll(200):
                out.append(wire.decode(svc.pull.recv_multipart()))
    # then every frame came out, each stream's in seq order, and each stream tracked
    # its 3 people with 3 tracks (every frame was seen by its tracker, in order)
    for stream in ("a", "b"):
        mine = [m for m in out if m.stream == stream]
        assert [m.seq for m in mine] == list(range(24))
        assert len({f["track"] for m in mine for f in m.header["faces"]}) == 3
    assert svc.value("agegender_classify_decisions_total", reason="new") == 6


@pytest.mark.slow
def test_detector_service_drops_older_live_frames_when_behind(clip):
    frame = _frames(clip(WALKING), 1)[0]
    big = cv2.resize(frame, (1920, 1080))           # slow enough to fall behind
    with DetectorThread(hwm=50) as svc:
        # given 30 live frames sent at once (far faster than it detects), once the
        # detector said hello (its window, hwm + workers, takes them all)
        wait_for(lambda: svc.push.ready("cam"), 30, "the detector's hello")
        for i in range(30):
            hdr = wire.frame_header("cam", i, time.time_ns(), 1920, 1080, live=True)
            assert svc.push.send(wire.encode_frame(hdr, big), "frame", "cam")
        # when the output settles
        seqs = []
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 3.0:
            if svc.pull.poll(200):
                seqs.append(wire.decode(svc.pull.recv_multipart()).seq)
                quiet_since = time.monotonic()
        superseded = svc.value("agegender_frames_dropped_total", stage="detector",
                               reason="superseded")
    # then it skipped older live frames (counted) and always ended on the newest one
    print(f"processed live seqs {seqs}; superseded {superseded:.0f}")
    assert seqs and seqs[-1] == 29 and seqs == sorted(seqs)
    assert len(seqs) < 30 and superseded >= 1
    assert len(seqs) + superseded + svc.value("agegender_frames_dropped_total",
                                              stage="detector", reason="stale") == 30


def test_detector_cli_process_stops_on_sigterm_without_peers():
    # given `agegender detector` as a process whose peers never connect
    exe = os.path.join(os.path.dirname(sys.executable), "agegender")
    http_port = free_port()
    proc = subprocess.Popen([exe, "detector", "--input",
                             f"connect:tcp://127.0.0.1:{free_port()}", "--output",
                             f"connect:tcp://127.0.0.1:{free_port()}", "--http-port",
                             str(http_port), "--http-host", "127.0.0.1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_http(http_port, "/readyz")            # model loaded, loop starting
        assert proc.poll() is None
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=10)
        took = time.monotonic() - t0
        log = proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # then it exits 0 without hanging (the 2 s target is bench/shutdown.py's figure) and
    # said which DNN backend it used
    print(f"detector exited {took:.2f} s after SIGTERM")
    assert rc == 0 and took < HANG_S, f"rc={rc}, took {took:.2f} s"
    assert "DNN backend cpu" in log or "DNN backend cuda" in log


def test_blazeface_faces_carry_keypoints_and_upright_crops(blazeface, walking_frame):
    # given frame 0 of the walking clip, when processed by the default detector
    out = wire.decode(process_frame(_frame_msg(walking_frame), blazeface))
    faces = out.header["faces"]
    # then the three faces carry six keypoints each, in the frame, eyes inside the box,
    # and they pass the wire's strict decoding
    assert len(faces) == 3
    for f in faces:
        kp = np.array(f["keypoints"])
        x1, y1, x2, y2 = f["box"]
        assert kp.shape == (6, 2) and np.all(np.isfinite(kp))
        assert np.all((kp >= 0) & (kp <= (480, 270)))
        assert np.all((kp[:2, 0] > x1) & (kp[:2, 0] < x2) & (kp[:2, 1] > y1) & (kp[:2, 1] < y2))
    # when the crops form is asked for / then each crop is cut by the crop rule (upright,
    # the rule's size), not the box widened
    crops = wire.decode(process_frame(_frame_msg(walking_frame), blazeface, payload="crops",
                                      crop_aspect=0.88)).crops
    for f, c in zip(faces, crops):
        _, _, w, h, _ = crop_region(f["box"], f["keypoints"], DEFAULT_RULE)
        assert c.shape == (round(h), round(w), 3)


def test_small_face_warning_once_per_stream_and_size(caplog):
    # given the default detector and cameras expected to show faces from 24 px
    det = make_detector("blazeface", threads=1)
    warn = SmallFaceWarning(det, 24.0, tiles=True)
    # when a 480x270 stream arrives / then nothing: it finds faces from ~17 px
    assert warn.check("small", 480, 270) is None
    # when 1080p frames arrive / then one warning naming the size and the smallest face,
    # and only once per stream and size
    msg = warn.check("hd", 1920, 1080)
    assert msg and "1920x1080" in msg and "68 px" in msg and "expected_min_face_px 24" in msg
    assert warn.check("hd", 1920, 1080) is None
    assert warn.check("hd2", 1920, 1080) is not None
    # and with tiling off even 480x270 is too coarse, and the message says why
    untiled = SmallFaceWarning(make_detector("blazeface", threads=1, tiles=False), 24.0,
                               tiles=False)
    assert "tiling is off" in untiled.check("small", 480, 270)
    # and 0 turns the warning off; a backend without the estimate is never warned about
    assert SmallFaceWarning(det, 0, tiles=True).check("hd", 1920, 1080) is None
    haar = make_detector("haar")
    assert SmallFaceWarning(haar, 24.0).check("hd", 1920, 1080) is None
