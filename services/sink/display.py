"""The desktop window output (``--display``), when a display and a GUI OpenCV exist."""

from __future__ import annotations

import logging
import os
import re

import cv2

from services.sink.outputs import Output, OutputUnavailable, SinkResult

log = logging.getLogger("sink.display")


def display_available() -> tuple[bool, str]:
    """Whether a desktop window can be opened: ``(ok, reason when not)``."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False, "no display found (DISPLAY and WAYLAND_DISPLAY are unset)"
    info = cv2.getBuildInformation()
    gui = re.search(r"GUI:\s*(\S+)", info)
    if gui and gui.group(1).upper() in ("NONE", "NO"):
        return False, ("this OpenCV has no GUI support (opencv-python-headless); install "
                       "opencv-python for a window")
    return True, ""


class DisplayOutput(Output):
    """One window per stream (``agegender <stream>``), refreshed with every frame."""

    name = "display"
    needs_image = True

    def __init__(self):
        self.showing = False

    def open(self) -> None:
        """Check for a display.

        Raises:
            OutputUnavailable: no display or no GUI support in this OpenCV.
        """
        ok, why = display_available()
        if not ok:
            raise OutputUnavailable(f"--display asked for a window but {why}; continuing "
                                    "without one (the live view is on the HTTP port at /)")
        self.showing = True

    def write(self, result: SinkResult) -> None:
        """Show the annotated frame; a window that cannot be shown turns the output off."""
        if not self.showing:
            return
        try:
            cv2.imshow(f"agegender {result.stream}", result.image)
            cv2.waitKey(1)
        except cv2.error as exc:
            log.warning("cannot show a window (%s); continuing without one", exc)
            self.showing = False

    def close(self) -> None:
        """Close the windows."""
        try:
            cv2.destroyAllWindows()
        except cv2.error:
            log.debug("no windows to close")
