"""The ``agegender`` command line: ``predict`` on odd images, ``run`` options."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from services.cli import main
from services.orchestrator.options import StackOptions, parse_threads
from services.orchestrator.stack import Stack
from services.orchestrator.summary import format_summary, parse_metrics
from tests.conftest import ROOT


def astronaut_bgr() -> np.ndarray:
    from skimage import data
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture
def odd_images(tmp_path):
    """A folder of odd images around scikit-image's public-domain astronaut photo."""
    d = tmp_path / "imgs"
    d.mkdir()
    bgr = astronaut_bgr()
    cv2.imwrite(str(d / "a_color.jpg"), bgr)
    cv2.imwrite(str(d / "b_rgba.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA))
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    Image.fromarray(np.dstack([gray, np.full_like(gray, 200)]), mode="LA").save(d / "c_gray_alpha.png")
    Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8), mode="L").save(d / "d_2x2.png")
    cv2.imwrite(str(d / "e_1x1.png"), np.zeros((1, 1, 3), np.uint8))
    (d / "f_broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (d / "notes.txt").write_text("not an image, skipped by suffix")
    return d


def run_predict(args):
    return subprocess.run([sys.executable, "-m", "services.cli", "predict", *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.mark.slow
def test_predict_normalises_odd_images_and_reports_broken_ones(odd_images):
    if not (ROOT / "models" / "compact" / "meta.json").is_file():
        pytest.skip("models/compact is not shipped yet")
    # given a folder with colour, RGBA, gray+alpha, 2x2, 1x1 and a broken PNG
    # when predict runs on it
    r = run_predict([str(odd_images)])
    # then it exits 1 (a file failed) and prints one JSON object per face of the others,
    # with the documented keys
    assert r.returncode == 1, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines()]
    by_file = {}
    for rec in records:
        assert list(rec) == ["file", "box", "confidence", "age", "age_range", "gender",
                             "gender_confidence"]
        assert rec["gender"] in ("female", "male") and 0 <= rec["gender_confidence"] <= 1
        x1, y1, x2, y2 = rec["box"]
        assert 0 <= x1 < x2 <= 512 and 0 <= y1 < y2 <= 512
        by_file.setdefault(rec["file"].rsplit("/", 1)[1], []).append(rec)
    # and the astronaut's face is found in the colour, RGBA and gray+alpha versions
    for name in ("a_color.jpg", "b_rgba.png", "c_gray_alpha.png"):
        assert len(by_file.get(name, [])) == 1, (name, r.stderr)
    # and the tiny images are read (no face), the broken one is a clear error
    assert "d_2x2.png: no face found (2x2)" in r.stderr
    assert "e_1x1.png: no face found (1x1)" in r.stderr
    assert "error:" in r.stderr and "f_broken.png" in r.stderr
    assert "5 of 6 images read, 3 faces, 1 failed" in r.stderr


@pytest.mark.slow
def test_predict_finds_one_face_per_utkface_chip_and_no_phantom(utkface_dir):
    # given 40 UTKFace chips (200x200 close-ups: the face fills the image; the SSD without
    # a border reported a second, phantom face in the lower right on 11 of them)
    chips = sorted(p for p in utkface_dir.iterdir() if p.suffix == ".jpg")[::500][:40]
    # when predict runs with its defaults (BlazeFace)
    r = run_predict([str(p) for p in chips])
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines()]
    # then every chip has exactly one face, and it covers the chip's centre
    per_chip = {str(p): [rec for rec in records if rec["file"] == str(p)] for p in chips}
    assert all(len(v) == 1 for v in per_chip.values()), \
        {k: len(v) for k, v in per_chip.items() if len(v) != 1}
    for (x1, y1, x2, y2) in (v[0]["box"] for v in per_chip.values()):
        assert x1 < 100 < x2 and y1 < 100 < y2 and (x2 - x1) > 100


@pytest.mark.slow
def test_predict_reads_a_12000x9000_photo_on_the_tile_pyramid(tmp_path):
    from services.detector.smallest_face import paste_face
    # given a 12000x9000 photo (more pixels than a frame may have) with a face 400 px wide
    # and one 160 px wide, far apart
    photo = np.full((9000, 12000, 3), 115, np.uint8)
    photo, big = paste_face(photo, 400, (2000, 2000))
    photo, small = paste_face(photo, 160, (8000, 3000))
    path = tmp_path / "big.jpg"
    cv2.imwrite(str(path), photo, [cv2.IMWRITE_JPEG_QUALITY, 85])
    del photo
    # when predict runs on it (with a cap above its size, whatever the environment says)
    r = run_predict(["--max-pixels", str(2 ** 27), str(path)])
    assert r.returncode == 0, r.stderr
    boxes = sorted(json.loads(line)["box"] for line in r.stdout.splitlines())
    # then both faces are found where they are, in the photo's own pixels
    assert len(boxes) == 2, r.stderr
    for box, face in zip(boxes, sorted([big, small])):
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        assert face[0] < cx < face[2] and face[1] < cy < face[3], (box, face)
        assert 0.7 < (box[2] - box[0]) / (face[2] - face[0]) < 1.5
    # and a cap below its size refuses it with a clear error
    r = run_predict(["--max-pixels", str(8192 * 8192), str(path)])
    assert r.returncode == 1 and "error:" in r.stderr


def test_predict_fails_when_nothing_can_be_read(tmp_path):
    # given only unreadable inputs
    (tmp_path / "x.png").write_bytes(b"garbage")
    # when predict runs
    r = run_predict([str(tmp_path / "x.png"), str(tmp_path / "missing.jpg")])
    # then both are reported and the exit code is non-zero
    assert r.returncode == 1
    assert r.stderr.count("error:") == 2 and "missing.jpg" in r.stderr
    assert r.stdout == ""


def test_predict_refuses_an_unavailable_runtime_before_reading_images(tmp_path):
    # given the seed model, which ships no ONNX export
    (tmp_path / "x.png").write_bytes(b"garbage")
    # when predict is asked to run it on ONNX Runtime
    r = run_predict(["--model", "seed", "--runtime", "onnx", str(tmp_path / "x.png")])
    # then it stops at once with a usage-class error naming the reason
    assert r.returncode == 2 and "no ONNX export" in r.stderr
    assert "garbage" not in r.stderr and r.stdout == ""


def test_run_help_lists_the_options():
    result = CliRunner().invoke(main, ["run", "--help"])
    assert result.exit_code == 0
    for opt in ("--source", "--out", "--realtime", "--loop", "--model", "--detector-backend",
                "--display", "--threads", "--http-base-port"):
        assert opt in result.output


def test_threads_option_parses_per_service_budgets():
    assert parse_threads(("2",)) == {"sink": 2, "classifier": 2, "detector": 2, "capture": 2}
    assert parse_threads(("classifier=2",))["classifier"] == 2
    with pytest.raises(ValueError, match="SERVICE=N"):
        parse_threads(("gpu=2",))
    with pytest.raises(ValueError, match=">= 1"):
        parse_threads(("0",))


def test_stack_wires_the_four_services_over_ipc(tmp_path):
    # given a stack definition for one file with --out
    clip = tmp_path / "x.mp4"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (32, 32))
    for _ in range(5):
        w.write(np.zeros((32, 32, 3), np.uint8))
    w.release()
    stack = Stack(StackOptions(sources=[str(clip)], out_dir=tmp_path / "o", http_base_port=0,
                               threads={"classifier": 2}))
    try:
        args = {s: " ".join(c.args) for s, c in stack.children.items()}
        # then capture binds the frames socket the detector connects to, and so on
        frames = f"ipc://{stack.run_dir}/frames.sock"
        assert f"--output bind:{frames}" in args["capture"]
        assert f"--input connect:{frames}" in args["detector"]
        assert "--input bind:ipc://" in args["classifier"] and "--threads 2" in args["classifier"]
        assert "--expected-streams 1" in args["sink"] and "--video-fps 10.0000" in args["sink"]
        assert stack.expected_frames == 5
        assert len({c.http_port for c in stack.children.values()}) == 4
    finally:
        stack.shutdown()
        stack.cleanup()


def test_summary_parses_drops_from_prometheus_text():
    text = ('# HELP agegender_frames_dropped_total x\n# TYPE agegender_frames_dropped_total counter\n'
            'agegender_frames_dropped_total{stage="detector",reason="stale"} 3.0\n'
            'agegender_frames_dropped_total{stage="detector",reason="queue_full"} 0.0\n')
    assert [(k, v) for _, k, v in parse_metrics(text) if v] == [("detector/stale", 3.0)]
    s = {"frames": 10, "faces": 30, "faces_per_frame": 3.0, "fps": 12.0, "elapsed_s": 1.0,
         "latency_s": {"p50": 0.1, "p95": 0.2, "p99": 0.3}, "streams": {"a": 10},
         "drops": {"detector/stale": 3.0}, "malformed": {}, "restarts": {"detector": 1},
         "gave_up": None, "outputs": {}}
    out = format_summary(s)
    assert "p95 200 ms" in out and "detector/stale 3" in out and "detector 1" in out


@pytest.mark.parametrize("args,realtime", [([], True), (["--realtime"], True),
                                           (["--realtime", "false"], False),
                                           (["--no-realtime"], False)])
def test_realtime_option_accepts_flag_and_value_forms(args, realtime):
    from services.orchestrator.command import command
    params = command.make_context("run", list(args)).params
    assert (params["realtime"] and not params["no_realtime"]) is realtime


def test_display_without_a_display_warns_and_goes_on(monkeypatch, caplog):
    from services.sink.display import DisplayOutput
    from services.sink.outputs import OutputSet
    # given no display in the environment
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    # when the sink's outputs include a window
    outputs = OutputSet([DisplayOutput()])
    outputs.open()
    # then it warns clearly and runs without one
    assert outputs.outputs == []
    assert "no display found" in caplog.text


@pytest.mark.parametrize("source", ["", "  ", "cam="])
def test_empty_source_is_a_usage_error_not_the_demo(source):
    from click.testing import CliRunner

    from services.orchestrator.command import command
    # given an empty --source (an unset shell variable) / when run
    result = CliRunner().invoke(command, ["--source", source])
    # then click refuses it before anything starts
    assert result.exit_code == 2 and "empty source" in result.output


def test_run_with_an_output_folder_that_cannot_be_written_exits_2_with_one_line(tmp_path):
    # given --out below a regular file (as /etc/hostname/x)
    (tmp_path / "hostname").write_text("x")
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")  # (the source is not opened: the check comes first)
    r = subprocess.run([sys.executable, "-m", "services.cli", "run", "--source", str(clip),
                        "--out", str(tmp_path / "hostname" / "x"), "--http-base-port", "0"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    # then it exits 2 before anything starts, with one line naming the file in the way
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1, r.stderr
    assert f"{tmp_path / 'hostname'} is a file" in lines[0]
    assert "agegender run summary" not in r.stdout


@pytest.mark.slow
def test_predict_gives_the_second_opinion_only_to_faces_of_its_minimum_size(tmp_path):
    # given the astronaut photo at full size, and shrunk so her face box is under 24 px
    from common.models.dlib_descriptor import DlibGenderOpinion

    bgr = astronaut_bgr()
    big, small = tmp_path / "big.png", tmp_path / "small.png"
    cv2.imwrite(str(big), bgr)
    cv2.imwrite(str(small), cv2.resize(bgr, None, fx=0.12, fy=0.12,
                                       interpolation=cv2.INTER_AREA))
    # when predict runs with the dlib opinion and without it
    out = {}
    for opinion in ("dlib", "none"):
        r = run_predict([str(big), str(small), "--second-opinion", opinion])
        assert r.returncode == 0, r.stderr
        out[opinion] = {json.loads(line)["file"]: json.loads(line)
                        for line in r.stdout.splitlines()}
    # then the small face's box is under the opinion's minimum and it keeps the model's
    # answer exactly, while the full-size face's answer is merged with the opinion
    s_dlib, s_none = out["dlib"][str(small)], out["none"][str(small)]
    assert s_dlib["box"][2] - s_dlib["box"][0] < DlibGenderOpinion.min_face_px
    assert s_dlib["gender_confidence"] == s_none["gender_confidence"]
    b_dlib, b_none = out["dlib"][str(big)], out["none"][str(big)]
    assert b_dlib["gender_confidence"] != b_none["gender_confidence"]
    assert b_dlib["gender"] == "female"
