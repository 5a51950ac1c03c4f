"""Issue 5, point 8: odd images in ``agegender predict`` and in the image-folder source.

RGBA PNG, 2x2 grayscale PNG, gray + alpha PNG, 1x1 PNG, 16-bit PNG, a truncated JPEG, an
empty file and a text file named ``.png`` are written with cv2 into ``tmp_path`` (from
one UTKFace face when the shared dataset is there, else a synthetic image). Expected:
each is normalised to ``(H, W, 3) uint8`` BGR or rejected with a clear message naming
the file, and the batch goes on.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq

from common import wire
from tests.conftest import UTKFACE, free_port
from tests.frames import FrameWorker
from tests.reliability import helpers

BAD = ("empty.jpg", "text.png", "truncated_header.png")


def _face() -> np.ndarray:
    files = sorted(UTKFACE.glob("*.jpg"))[:1] if UTKFACE.is_dir() else []
    img = cv2.imread(str(files[0])) if files else None
    if img is None:
        rng = np.random.default_rng(3)
        img = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)
    return cv2.resize(img, (300, 300))


def png_gray_alpha(img: np.ndarray) -> bytes:
    """Encode an ``(H, W, 2) uint8`` gray + alpha image as PNG (colour type 4, 8 bit)."""
    h, w = img.shape[:2]

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + img[y].tobytes() for y in range(h))  # filter 0 per row
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 4, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def write_odd_images(folder: Path) -> dict[str, str]:
    """Write the odd images; returns ``{file name: "ok" | "bad"}``."""
    folder.mkdir(parents=True, exist_ok=True)
    face = _face()
    gray = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)
    alpha = np.full(gray.shape, 200, np.uint8)
    out = {}

    def put(name, img, kind="ok"):
        assert cv2.imwrite(str(folder / name), img), name
        out[name] = kind

    put("a_rgba.png", np.dstack([face, alpha]))
    put("b_gray_2x2.png", gray[:2, :2])
    # cv2 cannot write 2-channel PNGs: write PNG colour type 4 (gray + alpha) by hand
    (folder / "c_gray_alpha.png").write_bytes(png_gray_alpha(np.dstack([gray, alpha])))
    out["c_gray_alpha.png"] = "ok"
    put("d_1x1.png", face[:1, :1])
    put("e_16bit.png", face.astype(np.uint16) * 257)
    put("f_face.jpg", face)
    put("g_gray16_1x1.png", np.array([[65535]], np.uint16))
    jpeg = cv2.imencode(".jpg", face)[1].tobytes()
    (folder / "h_truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    out["h_truncated.jpg"] = "either"  # libjpeg may decode the top half
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.png").write_text("not an image\n")
    png = cv2.imencode(".png", face)[1].tobytes()
    (folder / "truncated_header.png").write_bytes(png[:30])
    for name in BAD:
        out[name] = "bad"
    (folder / "notes.txt").write_text("ignored: not an image suffix\n")
    return out


@pytest.mark.slow
def test_predict_handles_odd_images_and_goes_on(tmp_path):
    # given a folder of odd and broken images
    kinds = write_odd_images(tmp_path / "imgs")
    # when `agegender predict` runs on it as a real process
    res = subprocess.run(helpers.AGEGENDER + ["predict", str(tmp_path / "imgs"), "--threads",
                                              "1"], cwd=helpers.ROOT, capture_output=True,
                         text=True, timeout=180)
    # then it exits 1 (some files failed), prints JSON faces for readable images and a
    # clear line per bad file
    assert res.returncode == 1, res.stderr
    records = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    for r in records:
        assert len(r["box"]) == 4 and r["gender"] in ("female", "male")
    err = res.stderr
    for name, kind in kinds.items():
        mentioned = name in err or any(Path(r["file"]).name == name for r in records)
        assert mentioned, f"{name} neither predicted nor reported:\n{err}"
        if kind == "bad":
            line = next(ln for ln in err.splitlines() if name in ln)
            assert "error" in line.lower(), line
    assert "Traceback" not in err, err
    ok = [n for n, k in kinds.items() if k == "ok"]
    summary = err.strip().splitlines()[-1]
    assert f"of {len(kinds)} images read" in summary, summary
    assert int(summary.split()[0]) >= len(ok)


@pytest.mark.slow
def test_image_folder_source_sends_only_bgr8_frames_then_eos(tmp_path):
    # given the same folder as a capture source
    kinds = write_odd_images(tmp_path / "imgs")
    port = free_port()
    ctx = zmq.Context()
    pull = FrameWorker(ctx, f"tcp://127.0.0.1:{port}")
    cap = helpers.Service("capture", ["--sources", f"imgs={tmp_path / 'imgs'}",
                                      "--realtime", "false", "--output",
                                      f"bind:tcp://127.0.0.1:{port}"],
                          free_port(), log_path=tmp_path / "capture.log").start()
    frames, eos = [], False
    try:
        deadline = time.monotonic() + 60
        while not eos and time.monotonic() < deadline:
            if pull.poll(200):
                msg = wire.decode(pull.recv_multipart())
                if msg.kind == "eos":
                    eos = True
                else:
                    frames.append(msg)
        rc = cap.proc.wait(30)
    finally:
        cap.kill()
        pull.close(0)
        ctx.term()
    # then every readable image became one (H, W, 3) uint8 frame, bad ones were skipped
    # with a warning naming them, and the stream ended with EOS
    assert eos, cap.log_tail()
    assert rc == 0, cap.log_tail()
    n_ok = sum(k == "ok" for k in kinds.values())
    assert n_ok <= len(frames) <= n_ok + 1, [m.header for m in frames]
    for m in frames:
        assert m.image.ndim == 3 and m.image.shape[2] == 3 and m.image.dtype == np.uint8
        assert (m.header["width"], m.header["height"]) == (m.image.shape[1], m.image.shape[0])
    log = cap.log_tail(20000)
    for name in BAD:
        assert name in log, f"{name} not reported:\n{log}"
    assert "Traceback" not in log, log


@pytest.fixture
def bomb_folder(tmp_path):
    """A folder: ``a_bomb.jpg`` (600 bytes announcing 40000x40000 pixels), ``b_face.jpg``."""
    from tests.reliability.test_detector_limits import huge_header_jpeg
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a_bomb.jpg").write_bytes(huge_header_jpeg())
    cv2.imwrite(str(folder / "b_face.jpg"), _face())
    return folder


@pytest.mark.slow
def test_predict_reports_image_with_huge_header_and_goes_on(bomb_folder):
    # given a 600-byte JPEG announcing 40000x40000 pixels next to a face photo
    folder = bomb_folder
    # when predict runs on the folder
    res = subprocess.run(helpers.AGEGENDER + ["predict", str(folder), "--threads", "1"],
                         cwd=helpers.ROOT, capture_output=True, text=True, timeout=180)
    # then the bomb is reported by name, the face photo is still read, exit 1 (a file
    # failed)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert any("a_bomb.jpg" in ln and "error" in ln.lower() for ln in res.stderr.splitlines())
    assert "1 of 2 images read" in res.stderr, res.stderr


@pytest.mark.slow
def test_image_folder_source_skips_image_with_huge_header(bomb_folder, tmp_path):
    # given a folder source holding a JPEG announcing 40000x40000 and a face photo
    folder = bomb_folder
    port = free_port()
    ctx = zmq.Context()
    pull = FrameWorker(ctx, f"tcp://127.0.0.1:{port}")
    cap = helpers.Service("capture", ["--sources", f"imgs={folder}", "--realtime", "false",
                                      "--output", f"bind:tcp://127.0.0.1:{port}"],
                          free_port(), log_path=tmp_path / "capture.log").start()
    kinds = []
    try:
        deadline = time.monotonic() + 30
        while "eos" not in kinds and time.monotonic() < deadline:
            if pull.poll(200):
                kinds.append(wire.decode(pull.recv_multipart()).kind)
            elif cap.proc.poll() is not None and not pull.poll(500):
                break
        rc = cap.proc.wait(30)
    finally:
        cap.kill()
        pull.close(0)
        ctx.term()
    # then the face photo is sent, the bomb skipped, and the stream ends normally
    assert kinds == ["frame", "eos"], cap.log_tail()
    assert rc == 0, cap.log_tail()
