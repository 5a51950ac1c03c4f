"""The sink's outputs behind one small interface, each isolated from the others.

An output (:class:`Output`) has ``open()``, ``write(result)``, ``write_person(event)`` and
``close()``; ``result`` is a :class:`SinkResult`: the ``result`` message with its faces
smoothed, its end-to-end latency and, for outputs that set ``needs_image``, the annotated
frame. The sink writes record outputs (events.jsonl, the trace) on its receive path and
image outputs (annotated video, MJPEG live view, desktop window) from its renderer thread.

An :class:`OutputSet` calls every output in turn: an exception from one is counted in
``agegender_sink_output_errors_total{output}``, logged the first time (with its
traceback), and the other outputs and the sink go on; the failing output is tried again
with the next frame. An output that cannot work here at all (a window without a display)
raises :class:`OutputUnavailable` from ``open()`` and is left out with a warning.

Files are different: what they should keep would be lost without a word. An output whose
``fatal_errors`` include the exception (the file outputs: any ``OSError``, e.g. a full
disk) is written no more, and :attr:`OutputSet.fatal` says why; the sink then stops with
exit code 2 (restarting cannot free the disk).

**Person events** (one record per person when its track ends; issue 11) go through the
same outputs: whoever produces them calls :meth:`OutputSet.write_person` on the record
outputs with the event dict, and every output that cares implements
:meth:`Output.write_person` (the MQTT output publishes it to
``<prefix>/<stream>/person``; the others ignore it by default).

To add an output (a webhook, ...): subclass :class:`Output`, give it a short ``name``
(the metric label), and add it where :func:`services.sink.main.build_outputs` builds
the others.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from common import wire

log = logging.getLogger("sink.outputs")


@dataclasses.dataclass
class SinkResult:
    """One result frame as the outputs see it.

    Attributes:
        msg: the ``result`` message; ``msg.header["faces"]`` holds the smoothed faces.
        latency_s: end-to-end latency of the frame (seconds).
        t_sink_ns: wall clock when the sink received it (ns since the Unix epoch).
        image: the annotated frame, ``(H, W, 3) uint8`` BGR, set by the renderer for
            image outputs (``None`` on the receive path).
    """

    msg: wire.Message
    latency_s: float
    t_sink_ns: int
    image: np.ndarray | None = None

    @property
    def stream(self) -> str:
        """The frame's stream name."""
        return self.msg.stream

    @property
    def header(self) -> dict:
        """The frame's decoded header."""
        return self.msg.header


class OutputUnavailable(RuntimeError):
    """Raised by :meth:`Output.open` when the output cannot work here; the message says
    why and what the sink does instead."""


class Output:
    """One place results go. Subclasses set :attr:`name` and implement :meth:`write`.

    Attributes:
        name: short label (``agegender_sink_output_errors_total{output}``, logs).
        needs_image: ``True`` when :meth:`write` needs ``result.image`` (it then runs on
            the renderer thread).
    """

    name = "output"
    needs_image = False
    #: Exceptions after which the output cannot go on and the sink must stop (files).
    fatal_errors: tuple[type[BaseException], ...] = ()

    def open(self) -> None:
        """Acquire what the output needs.

        Raises:
            OutputUnavailable: the output cannot work here (left out, with a warning).
        """

    def write(self, result: SinkResult) -> None:
        """Deliver one result frame; may raise (counted, logged once, others go on)."""
        raise NotImplementedError

    def write_person(self, event: dict) -> None:
        """Deliver one person event (a JSON-ready dict with at least ``stream``); the
        default ignores it. May raise (counted, logged once, others go on)."""

    def close(self) -> None:
        """Release what :meth:`open` acquired (files finished, windows closed)."""


class OutputSet:
    """Several outputs driven together, each one's failures isolated (module docstring).

    Args:
        outputs: the outputs, in the order they are written.
        errors: ``agegender_sink_output_errors_total`` counter with an ``output`` label
            (labels are created at zero for every output); ``None`` counts nothing.
    """

    def __init__(self, outputs: list[Output], errors=None):
        self.outputs = list(outputs)
        self.errors = errors
        self.failures: dict[str, int] = {o.name: 0 for o in self.outputs}
        #: Why an output failed for good (see the module docstring), else ``None``.
        self.fatal: str | None = None
        if errors is not None:
            for o in self.outputs:
                errors.labels(o.name)

    def __bool__(self) -> bool:
        return bool(self.outputs)

    def _failed(self, output: Output, what: str, exc: BaseException | None = None) -> None:
        self.failures[output.name] = self.failures.get(output.name, 0) + 1
        if self.errors is not None:
            self.errors.labels(output.name).inc()
        if exc is not None and isinstance(exc, output.fatal_errors):
            if self.fatal is None:
                self.fatal = f"output {output.name} failed to {what}: {exc}"
                log.error("%s; writing no more to it", self.fatal)
            if output in self.outputs:
                self.outputs.remove(output)
            return
        if self.failures[output.name] == 1:
            log.exception("output %s failed to %s; the other outputs go on (further "
                          "errors of it are only counted)", output.name, what)

    def open(self) -> None:
        """Open every output; one unavailable or failing to open is left out."""
        kept = []
        for o in list(self.outputs):
            try:
                o.open()
            except OutputUnavailable as exc:
                log.warning("%s", exc)
                continue
            except Exception as exc:  # noqa: BLE001 (isolated by design, counted and logged)
                self._failed(o, "open", exc)
                continue
            kept.append(o)
        self.outputs = kept

    def _each(self, what: str, call) -> None:
        """``call(output)`` for every output; an exception is counted and logged (once
        per output) and the others go on (a fatal one takes its output out)."""
        for o in list(self.outputs):
            try:
                call(o)
            except Exception as exc:  # noqa: BLE001 (isolated by design, counted and logged)
                self._failed(o, what, exc)

    def write(self, result: SinkResult) -> None:
        """Write ``result`` to every output."""
        self._each("write", lambda o: o.write(result))

    def write_person(self, event: dict) -> None:
        """Write one person event to every output (see :meth:`Output.write_person`)."""
        self._each("write a person event", lambda o: o.write_person(event))

    def close(self) -> None:
        """Close every output (a failing close does not keep the others open)."""
        self._each("close", lambda o: o.close())
