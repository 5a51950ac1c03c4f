"""Large photo benchmark: peak memory and time to read a phone photo and fit it to the
wire, as an image-folder source does.

    python -m bench.large_photo [--width 12000 --height 9000]

Each case runs in a fresh process (its peak resident set size is its own): the photo is
written as a JPEG (a gradient with a face), then read with ``common.images.read_image``
(EXIF orientation 1, and 6 as a phone held upright stores it) and downscaled with
``fit_within`` to ``common.wire.MAX_SIDE`` / ``MAX_FRAME_PIXELS``. Prints one JSON object:
per case the decoded size, the size sent, seconds, and peak RSS (MiB) with the process's
baseline (Python, OpenCV, Pillow imported, no image) for comparison. docs/sources.md
quotes the numbers. Timings taken while other work runs are noisy.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CASE = r"""
import json, os, sys, time
os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(2 ** 27)
from common import wire
from common.images import fit_within, read_image
def hwm_mib():  # peak RSS of this process image (VmHWM: reset by exec, unlike ru_maxrss)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
base = hwm_mib()
t0 = time.perf_counter()
image = read_image(sys.argv[1]) if sys.argv[1] != "-" else None
decoded = None if image is None else list(image.shape[:2])
small = None if image is None else fit_within(image, wire.MAX_SIDE, wire.MAX_FRAME_PIXELS)
del image
print(json.dumps({"decoded_hw": decoded, "sent_hw": None if small is None else
                  list(small.shape[:2]), "seconds": round(time.perf_counter() - t0, 2),
                  "baseline_mib": round(base), "peak_mib": round(hwm_mib())}))
"""


def make_photo(path: Path, width: int, height: int, orientation: int) -> None:
    """A ``width`` x ``height`` JPEG with EXIF Orientation ``orientation`` (pixels stored
    turned for 6, as a phone stores a portrait photo)."""
    import numpy as np
    from PIL import Image
    from skimage import data
    yy = np.linspace(40, 200, height, dtype=np.float32)[:, None]
    xx = np.linspace(60, 180, width, dtype=np.float32)[None, :]
    img = np.empty((height, width, 3), np.uint8)
    img[:, :, 0] = (yy * 0.5 + xx * 0.5).astype(np.uint8)
    img[:, :, 1] = (yy * 0.8).astype(np.uint8)
    img[:, :, 2] = (xx * 0.9).astype(np.uint8)
    side = min(width, height) // 4
    face = np.asarray(Image.fromarray(data.astronaut()).resize((side, side)))
    img[height // 3:height // 3 + side, width // 3:width // 3 + side] = face
    pic = Image.fromarray(img)
    if orientation == 6:
        pic = pic.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = orientation
    pic.save(path, quality=85, exif=exif.tobytes())


def main(argv=None) -> int:
    """Run the cases and print the JSON report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=12000)
    ap.add_argument("--height", type=int, default=9000)
    args = ap.parse_args(argv)
    root = Path(__file__).resolve().parents[1]
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        cases = {"baseline (no image)": "-"}
        for orientation in (1, 6):
            path = Path(tmp) / f"photo_o{orientation}.jpg"
            make_photo(path, args.width, args.height, orientation)
            cases[f"{args.width}x{args.height} orientation {orientation}"] = str(path)
        for name, path in cases.items():
            res = subprocess.run([sys.executable, "-c", CASE, path], capture_output=True,
                                 text=True, cwd=root, check=True)
            report[name] = json.loads(res.stdout)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
