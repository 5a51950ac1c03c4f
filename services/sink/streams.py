"""When a stream counts as ended at the sink (end of stream overtaking results)."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("sink")


class StreamEnds:
    """When a stream counts as ended at the sink.

    An ``eos`` message overtakes frames that other detector or classifier workers still
    hold (with one capture PUSHing round-robin to several workers, the eos goes through
    one of them). The eos says how many frames capture sent (``frames``); the stream ends
    once that many results arrived, or when ``grace_s`` seconds pass without another
    result of that stream (frames dropped upstream never come; their drops are counted
    where they happen). An eos without ``frames``, or ``grace_s`` 0, ends the stream at
    once.

    Args:
        grace_s: seconds to wait for a stream's missing results after its eos.
        clock: monotonic clock (seconds), replaceable in tests.
    """

    def __init__(self, grace_s: float, clock=time.monotonic):
        self.grace_s = grace_s
        self.clock = clock
        self.results: dict[str, int] = {}
        self.waiting: dict[str, tuple[int, float]] = {}  # stream -> (frames, deadline)
        self.ended: list[str] = []

    def _end(self, stream: str, how: str) -> list[str]:
        self.waiting.pop(stream, None)
        if stream in self.ended:
            return []
        self.ended.append(stream)
        n = self.results.get(stream, 0)
        log.info("end of stream %r (%s; %d result frame%s)", stream, how, n,
                 "" if n == 1 else "s")
        return [stream]

    def eos(self, stream: str, frames) -> list[str]:
        """An eos for ``stream`` after ``frames`` sent frames; returns the streams that
        ended now."""
        have = self.results.get(stream, 0)
        if not isinstance(frames, int) or isinstance(frames, bool) or self.grace_s <= 0 \
                or have >= frames or stream in self.ended:
            return self._end(stream, "eos")
        self.waiting[stream] = (frames, self.clock() + self.grace_s)
        log.info("eos of %r after %d frames; %d results so far, waiting up to %.1f s "
                 "for the rest", stream, frames, have, self.grace_s)
        return []

    def result(self, stream: str) -> list[str]:
        """A result frame of ``stream`` arrived; returns the streams that ended now."""
        self.results[stream] = self.results.get(stream, 0) + 1
        if stream not in self.waiting:
            return []
        frames, _ = self.waiting[stream]
        if self.results[stream] >= frames:
            return self._end(stream, "all frames in")
        self.waiting[stream] = (frames, self.clock() + self.grace_s)
        return []

    def expire(self) -> list[str]:
        """End the waiting streams whose grace period ran out; returns them."""
        now = self.clock()
        done = []
        for stream, (frames, deadline) in list(self.waiting.items()):
            if now >= deadline:
                log.warning("stream %r: %d of %d frames arrived; no more for %.1f s, "
                            "ending it", stream, self.results.get(stream, 0), frames,
                            self.grace_s)
                done += self._end(stream, "grace period over")
        return done
