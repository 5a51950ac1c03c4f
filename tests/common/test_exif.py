"""Issue 12, item 9: image files are read upright by their EXIF orientation, all 8 values,
wherever an image file is read (``common.images.read_image``: ``agegender predict`` and
capture's image folders).

The files are real JPEGs written by Pillow with the Orientation tag (0x0112) set; the
reference for what each value means is Pillow's own ``ImageOps.exif_transpose``, an
implementation independent of ours.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageOps

from common.images import apply_orientation, exif_orientation, read_image
from services.capture.finite import ImageFolderSource
from services.capture.spec import SourceOptions
from tests.conftest import ROOT

#: The stored pixels of each orientation: the upright picture turned by the inverse of
#: what the viewer applies (Pillow's Transpose operations; 6 is a phone held upright).
STORE = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
         4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
         6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
         8: Image.Transpose.ROTATE_270}


def _upright() -> Image.Image:
    """A non-square, asymmetric picture with a real face (scikit-image's public-domain
    astronaut photo, cropped to 512x384 so that a wrong turn changes the shape)."""
    from skimage import data
    return Image.fromarray(data.astronaut()[:384])


def _write(path, upright: Image.Image, orientation: int) -> None:
    op = STORE[orientation]
    stored = upright if op is None else upright.transpose(op)
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, quality=95, exif=exif.tobytes())


@pytest.fixture(scope="module")
def oriented(tmp_path_factory):
    """Folder with ``o1.jpg`` .. ``o8.jpg``: the same upright picture stored 8 ways."""
    folder = tmp_path_factory.mktemp("exif")
    upright = _upright()
    for k in STORE:
        _write(folder / f"o{k}.jpg", upright, k)
    return folder, np.asarray(upright)[:, :, ::-1]  # BGR


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_reads_upright(oriented, orientation):
    # given a JPEG whose pixels are stored turned/mirrored, with EXIF Orientation=k
    folder, upright_bgr = oriented
    path = folder / f"o{orientation}.jpg"
    assert exif_orientation(np.fromfile(path, np.uint8)) == orientation
    # when read by the project's image reader
    image = read_image(path)
    # then it is the upright picture (same shape, same pixels up to JPEG loss) and equals
    # what Pillow's exif_transpose makes of the same file
    assert image.shape == upright_bgr.shape
    assert np.abs(image.astype(int) - upright_bgr).mean() < 4
    with Image.open(path) as im:
        reference = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))[:, :, ::-1]
    assert np.abs(image.astype(int) - reference).mean() < 2


def test_apply_orientation_inverts_what_each_value_stores():
    # given a tiny asymmetric array stored each of the 8 ways (numbers, not pictures)
    upright = np.arange(2 * 3 * 1).reshape(2, 3, 1)
    for k, op in STORE.items():
        stored = np.asarray(Image.fromarray(upright[:, :, 0].astype(np.uint8)).transpose(op)
                            if op is not None else upright[:, :, 0].astype(np.uint8))[..., None]
        # when turned upright / then the original comes back exactly
        np.testing.assert_array_equal(apply_orientation(stored, k), upright, err_msg=str(k))
    # and values outside 1-8 leave the pixels as stored
    np.testing.assert_array_equal(apply_orientation(upright, 0), upright)
    np.testing.assert_array_equal(apply_orientation(upright, 9), upright)


def test_files_without_or_with_broken_exif_read_as_stored(tmp_path):
    # given a PNG without EXIF, a JPEG with Orientation=42 and a JPEG with a cut APP1
    img = Image.fromarray(np.zeros((4, 6, 3), np.uint8))
    img.save(tmp_path / "plain.png")
    exif = Image.Exif()
    exif[0x0112] = 42
    img.save(tmp_path / "odd.jpg", exif=exif.tobytes())
    data = (tmp_path / "odd.jpg").read_bytes()
    cut = data[:2] + b"\xff\xe1\x00\x40Exif\x00\x00II*\x00" + data[2:]  # APP1 says 64 bytes
    (tmp_path / "cut.jpg").write_bytes(cut)
    # when read / then each is its stored 6x4 picture (or a clear BadImage, never a crash)
    for name in ("plain.png", "odd.jpg"):
        assert read_image(tmp_path / name).shape == (4, 6, 3), name
    assert exif_orientation(np.frombuffer(cut, np.uint8)) in range(1, 9)


def test_image_folder_source_gives_upright_frames(oriented):
    # given the folder of 8 orientations as a capture source
    folder, upright_bgr = oriented
    src = ImageFolderSource("phone", str(folder), SourceOptions())
    # when every frame is read
    frames = [src.read() for _ in range(8)]
    # then all 8 are the upright picture
    for k, frame in zip(STORE, frames):
        assert frame.image.shape == upright_bgr.shape, k
        assert np.abs(frame.image.astype(int) - upright_bgr).mean() < 4, k


@pytest.mark.slow
def test_predict_finds_the_face_in_a_sideways_phone_photo(tmp_path):
    # given a phone photo stored sideways (Orientation=6) and the same photo upright
    from skimage import data
    upright = Image.fromarray(data.astronaut())
    _write(tmp_path / "sideways.jpg", upright, 6)
    _write(tmp_path / "upright.jpg", upright, 1)
    # when agegender predict reads both
    res = subprocess.run([sys.executable, "-m", "services.cli", "predict",
                          str(tmp_path / "sideways.jpg"), str(tmp_path / "upright.jpg")],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    faces = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    by_file = {}
    for f in faces:
        by_file.setdefault(f["file"].rsplit("/", 1)[-1], []).append(f)
    # then the sideways photo gives the same face, in upright coordinates, as the upright one
    assert len(by_file.get("sideways.jpg", [])) == 1, res.stderr[-2000:]
    assert len(by_file.get("upright.jpg", [])) == 1, res.stderr[-2000:]
    a, b = by_file["sideways.jpg"][0]["box"], by_file["upright.jpg"][0]["box"]
    assert max(abs(x - y) for x, y in zip(a, b)) <= 8, (a, b)
