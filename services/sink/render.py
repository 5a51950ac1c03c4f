"""The sink's renderer thread: annotation and the image outputs, off the receive path.

The receive loop hands each result frame to :class:`Renderer`, whose own thread decodes
it, draws the boxes (:mod:`services.sink.draw`) and writes the annotated frame to every
image output (annotated video, MJPEG live view, desktop window: see
:mod:`services.sink.outputs`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from common.images import BadFrame
from services.sink.draw import annotate, message_image
from services.sink.outputs import OutputSet, SinkResult

log = logging.getLogger("sink.render")


class Renderer:
    """A thread that annotates frames and writes them to the image outputs.

    Args:
        outputs: the image outputs, already open (closed by :meth:`close`).
        on_drop: called with a reason when a frame is not rendered (``"queue_full"`` for
            live frames when rendering falls behind, ``"bad_image"`` for a frame that
            cannot be decoded or drawn, ``"shutdown"`` for frames discarded at shutdown).
        queue_size: frames waiting for rendering at most.
    """

    def __init__(self, outputs: OutputSet, on_drop=lambda reason: None, queue_size: int = 32):
        self.outputs = outputs
        self.on_drop = on_drop
        self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._abort = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="render", daemon=True)
        self._thread.start()

    def submit(self, result: SinkResult, block: bool, stop: threading.Event) -> bool:
        """Queue a result frame for rendering.

        ``block=True`` (files) waits for room until ``stop`` is set, so every frame reaches
        the MP4; ``block=False`` (live) drops the frame when rendering falls behind.
        """
        while True:
            try:
                self.queue.put(result, block=block, timeout=0.1)
                return True
            except queue.Full:
                if not block or stop.is_set() or not self._thread.is_alive():
                    self.on_drop("queue_full")
                    return False

    def _run(self) -> None:
        while True:
            result = self.queue.get()
            if result is None or self._abort.is_set():
                return
            try:
                image = message_image(result.msg)
            except BadFrame as exc:
                log.warning("frame %s/%s not rendered: %s", result.stream, result.msg.seq, exc)
                self.on_drop("bad_image")
                continue
            try:
                result.image = annotate(image, result.header.get("faces", []))
            except Exception as exc:  # one bad frame must not stop the others
                if self.error is None:
                    log.exception("rendering frame %s/%s failed; going on", result.stream,
                                  result.msg.seq)
                self.error = exc
                self.on_drop("bad_image")
                continue
            self.outputs.write(result)  # isolates each output's failures

    def close(self, drain: bool, timeout_s: float = 30.0) -> None:
        """Stop the thread: ``drain=True`` renders what is queued first (end of stream),
        ``False`` discards it (shutdown, counted as ``shutdown`` drops); then closes the
        outputs."""
        if not drain:
            self._abort.set()
            try:
                while True:
                    if self.queue.get_nowait() is not None:
                        self.on_drop("shutdown")
            except queue.Empty:
                pass
        deadline = time.monotonic() + (timeout_s if drain else 1.0)
        while self._thread.is_alive() and time.monotonic() < deadline:
            try:
                self.queue.put(None, timeout=0.1)
                break
            except queue.Full:
                continue
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            log.warning("renderer still busy at shutdown; the MP4 files may be incomplete")
        else:
            self.outputs.close()
