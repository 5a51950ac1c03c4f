"""Headless Chromium (the Debian package ``chromium``) as a test's video player.

:func:`play_in_chromium` copies a video file next to a tiny page whose ``<video>`` element
loads it; the page writes what the browser made of it (duration, readyState, error,
decoded size) into the DOM once data for the current frame is decoded (``loadeddata``) or
an error occurs, and Chromium's ``--dump-dom`` prints the DOM after the page settles
(``--virtual-time-budget`` lets the media pipeline run).

The page is opened from ``file://``, where Chromium reads the video with random access,
as it does from any real web server (they all answer HTTP range requests). Python's
``http.server`` does not: Chromium then reads the file front to back only, and for a
fragmented MP4 reports the duration of the fragments parsed when the first frame plays
(the fragment index is at the file's end), though the whole file plays.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

PAGE = """<!doctype html><html><body><div id="out">pending</div>
<video id="v" muted preload="auto"></video>
<script>
const v = document.getElementById('v'), out = document.getElementById('out');
function report(tag) {
  out.textContent = JSON.stringify({event: tag, duration: String(v.duration),
    readyState: v.readyState, error: v.error ? v.error.code + ' ' + v.error.message : null,
    width: v.videoWidth, height: v.videoHeight});
}
v.addEventListener('loadeddata', () => report('loadeddata'));
v.addEventListener('error', () => report('error'));
v.src = %s;
</script></body></html>"""


@functools.lru_cache(maxsize=1)
def chromium() -> str | None:
    """Path of the Chromium binary, or ``None``."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def play_in_chromium(video: Path, timeout_s: float = 120.0) -> dict:
    """What headless Chromium reports after loading ``video`` in a ``<video>`` element:
    ``{"event": "loadeddata" | "error", "duration": str (seconds, "Infinity" or "NaN"),
    "readyState": int, "error": str | None, "width": int, "height": int}``.

    Skips the test when Chromium is not installed (``apt-get install chromium``).
    """
    binary = chromium()
    if binary is None:
        pytest.skip("headless Chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        shutil.copyfile(video, root / video.name)
        (root / "page.html").write_text(PAGE % json.dumps(video.name))
        res = subprocess.run(
            [binary, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", "--mute-audio",
             f"--user-data-dir={root / 'profile'}", "--virtual-time-budget=20000",
             "--dump-dom", (root / "page.html").as_uri()],
            capture_output=True, text=True, timeout=timeout_s)
    m = re.search(r'<div id="out">([^<]*)</div>', res.stdout)
    if m is None or m.group(1) == "pending":
        raise AssertionError(f"Chromium reported nothing (rc {res.returncode}):\n"
                             f"{res.stdout[-1000:]}\n{res.stderr[-2000:]}")
    return json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
