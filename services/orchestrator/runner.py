""":func:`run_stack`: run the stack until the sink is done, with a progress bar."""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path

from common.outdir import OutDirLock
from services.orchestrator.options import EXIT_OK, EXIT_START_FAILED, StackOptions
from services.orchestrator.stack import Stack
from services.orchestrator.summary import SUMMARY_NAME, source_state, write_summary_file

log = logging.getLogger("agegender.run")

#: Seconds between scrapes of every service's ``/metrics`` while running.
SCRAPE_EVERY_S = 2.0
#: Seconds between two checks of the children and the sink's status.
TICK_S = 0.2
#: Seconds between two plain progress lines when stderr is not a terminal.
PLAIN_EVERY_S = 5.0


class _Progress:
    """Progress on stderr: frames at the sink, fps, faces, p95 latency, and every live
    source that is not up.

    On a terminal a tqdm bar redraws in place; otherwise (a log file, a pipe) the same
    text, formatted by tqdm (``tqdm.format_meter``), is written as a plain line every
    ``every_s`` seconds instead of five redraws a second.

    Args:
        total: frames expected (0: unknown).
        tty: stderr is a terminal (default: asked).
        every_s: seconds between plain lines.
    """

    def __init__(self, total: int, tty: bool | None = None, every_s: float = PLAIN_EVERY_S):
        from tqdm import tqdm
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.total = total or None
        self.every_s = every_s
        self.t0 = time.monotonic()
        self.next_line = self.t0 + every_s
        self.format_meter = tqdm.format_meter
        self.bar = tqdm(total=self.total, unit="frame", desc="agegender", dynamic_ncols=True,
                        file=sys.stderr) if self.tty else None

    def show(self, status: dict, sources: str = "") -> None:
        """Show the sink's latest ``status`` and the state of sources not up."""
        lat = (status.get("latency_s") or {}).get("p95")
        postfix = {"fps": f"{status.get('fps', 0.0):.1f}", "faces": status.get("faces", 0),
                   "p95": "-" if lat is None else f"{lat * 1000:.0f}ms"}
        if sources:
            postfix["sources"] = sources
        frames = status.get("frames", 0)
        if self.bar is not None:
            self.bar.n = frames
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.refresh()
            return
        now = time.monotonic()
        if now < self.next_line:
            return
        self.next_line = now + self.every_s
        line = self.format_meter(frames, self.total, now - self.t0, prefix="agegender",
                                 unit="frame", ascii=True, postfix=", ".join(
                                     f"{k}={v}" for k, v in postfix.items()))
        print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        """Finish the bar."""
        if self.bar is not None:
            self.bar.close()


class _SourceWatch:
    """Logs each live source's state changes from capture's status file, and says which
    are not up, for the progress line (a camera that cannot be reached is named at once,
    not hidden behind a bar at 0 frames)."""

    def __init__(self):
        self.states: dict[str, tuple] = {}

    def update(self, capture: dict) -> str:
        """Log the changes in ``capture`` (its status); the sources not up, as text."""
        down = []
        for name, src in sorted((capture.get("streams") or {}).items()):
            if not src.get("live"):
                continue
            # log when it comes up or goes down, when its error changes, and at reconnect
            # attempts 1, 2, 4, 8... (the progress line shows every attempt)
            attempts = src.get("reconnects") or 0
            key = (src.get("state") == "up", src.get("last_error"),
                   attempts if attempts & (attempts - 1) == 0 else None)
            if key != self.states.get(name) and key[2] is not None:
                self.states[name] = key
                text = source_state(name, src)
                (log.info if src.get("state") == "up" else log.warning)("source %s", text)
            if src.get("state") != "up":
                down.append(f"{name} {src.get('state')}"
                            + (f" (attempt {src['reconnects']})" if src.get("reconnects")
                               else ""))
        return "; ".join(down)


def _watch(stack: Stack, opts: StackOptions, bar: _Progress | None) -> int:
    """Watch the running stack until it is done, stopped or fails; returns the exit code."""
    next_scrape = 0.0
    last_frames, last_change = -1, time.monotonic()
    sources = _SourceWatch()
    while not stack.stop.is_set():
        if not stack.watchdog.check():
            return stack.watchdog.failure_code()
        stack.poll_health()
        now = time.monotonic()
        if now >= next_scrape:
            stack.scrape_all()
            next_scrape = now + SCRAPE_EVERY_S
        status = stack.status()
        down = sources.update(stack.capture_status())
        if bar is not None:
            bar.show(status, down)
        if stack.finished():
            break
        # Safety net: capture ended but an end of stream never reached the sink
        # (e.g. lost with a killed stage) and nothing moves any more.
        frames = status.get("frames", 0)
        if frames != last_frames:
            last_frames, last_change = frames, now
        elif stack.children["capture"].finished and now - last_change > opts.drain_timeout_s:
            log.warning("capture ended %.0f s ago and no frame reached the sink since; "
                        "stopping", opts.drain_timeout_s)
            break
        stack.stop.wait(TICK_S)
    return EXIT_OK


def run_stack(opts: StackOptions, stop: threading.Event | None = None,
              progress: bool = True, on_started=None,
              out_lock: OutDirLock | None = None) -> tuple[int, dict]:
    """Run the stack until the sink is done, a service is given up on, or ``stop``.

    Args:
        opts: what to run.
        stop: stop event (SIGINT/SIGTERM handlers set it in the CLI).
        progress: show a tqdm progress bar on stderr.
        on_started: called with the :class:`~services.orchestrator.stack.Stack` once every
            child is started (benchmarks sample CPU and memory of ``stack.children``).
        out_lock: the output folder's lock, already held (the CLI takes it first, to
            refuse with one line); when ``None`` and ``opts.out_dir`` is set, taken here
            and released at the end.

    Returns:
        ``(exit code, summary dict)`` (see :mod:`services.orchestrator.options` for the
        codes, :func:`services.orchestrator.summary.build_summary` for the summary). With
        ``opts.out_dir`` the summary is also written to ``OUT/summary.json``.

    Raises:
        common.outdir.OutDirError: ``opts.out_dir`` cannot be written, or another run
            owns it (:class:`common.outdir.OutDirBusy`); nothing was started.
    """
    own_lock = None
    if opts.out_dir is not None and out_lock is None:
        own_lock = OutDirLock(opts.out_dir).acquire()
    try:
        return _run(opts, stop, progress, on_started)
    finally:
        if own_lock is not None:
            own_lock.release()


def _run(opts: StackOptions, stop, progress: bool, on_started) -> tuple[int, dict]:
    stack = Stack(opts, stop)
    t0 = time.monotonic()
    code = EXIT_OK
    bar = None
    try:
        if not stack.start():
            code = stack.watchdog.failure_code() or (
                EXIT_OK if stack.stop.is_set() else EXIT_START_FAILED)
        else:
            if on_started is not None:
                on_started(stack)
            if progress:
                bar = _Progress(stack.expected_frames)
            if bar is not None and bar.bar is not None:
                from tqdm.contrib.logging import logging_redirect_tqdm
                with logging_redirect_tqdm():  # log lines above the bar, not through it
                    code = _watch(stack, opts, bar)
            else:
                code = _watch(stack, opts, bar)
    finally:
        if bar is not None:
            bar.close()
        stack.shutdown()
        stack.scrape_all()  # every process has exited: their final metrics files
        summary = stack.summary(time.monotonic() - t0)
        if opts.out_dir is not None:
            write_summary_file(Path(opts.out_dir) / SUMMARY_NAME, summary)
        stack.cleanup(keep_logs=code != EXIT_OK)
        if code != EXIT_OK:
            log.error("service logs kept in %s", stack.run_dir / "logs")
    return code, summary
