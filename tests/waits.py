"""Waiting for a state instead of sleeping and hoping (shared by the test folders)."""

from __future__ import annotations

import time
from typing import Callable


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str,
             poll_s: float = 0.05):
    """Poll ``predicate`` until it returns something truthy; return that.

    ``timeout_s`` is generous on purpose (a limit a user would call a hang, not a speed
    target): a busy machine only makes the wait longer, never the test fail.

    Raises:
        AssertionError: ``timeout_s`` seconds passed first; the message names ``what``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


#: A shutdown that takes longer than this (seconds) is a hang. The product's target, a
#: service gone within 2 s of SIGTERM, is a speed figure: ``python -m bench.shutdown``
#: measures and prints it; tests only fail on a hang.
HANG_S = 10.0
