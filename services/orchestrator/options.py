"""What ``agegender run`` runs: service names and start order, exit codes, options."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from common.detectors import DEFAULT_BACKEND
from common.models.registry import DEFAULT_MODEL
from common.process import EXIT_CONFIG

#: Start order: downstream binders first, capture last (after the others are ready).
SERVICES = ("sink", "classifier", "detector", "capture")
#: HTTP port offset of each service from ``--http-base-port`` (the orchestrator is +4).
PORT_OFFSET = {"capture": 0, "detector": 1, "classifier": 2, "sink": 3}

#: Exit codes of ``agegender run``; :data:`EXIT_CONFIG` (2, from :mod:`common.process`):
#: a service refused its configuration or input, restarting cannot help.
EXIT_OK, EXIT_START_FAILED, EXIT_GAVE_UP = 0, 1, 3
__all__ = ["SERVICES", "PORT_OFFSET", "EXIT_OK", "EXIT_START_FAILED", "EXIT_GAVE_UP",
           "EXIT_CONFIG", "StackOptions", "parse_threads", "parse_service_args"]


@dataclasses.dataclass
class StackOptions:
    """What to run and how (see ``agegender run --help`` for each option).

    Attributes:
        sources: capture sources (``[NAME=]URI``); empty = the built-in demo.
        out_dir: folder for annotated.mp4 / events.jsonl; ``None`` = no files.
        realtime: pace files at their native frame rate.
        loop: repeat files.
        model: classifier model name or path.
        second_opinion: the classifier's gender second opinion (``"none"``, ``"dlib"``);
            ``None``: the classifier's own setting (environment or default).
        detector_backend: a name of :data:`common.detectors.BACKENDS` (default
            ``blazeface``).
        display: sink opens a desktop window.
        threads: thread budget per service.
        http_base_port: first HTTP port (capture; +1 detector, +2 classifier, +3 sink,
            +4 orchestrator metrics); 0 picks free ports.
        max_restarts / restart_window_s: watchdog cap (restarts per window, seconds).
        ready_timeout_s: how long to wait for sink, classifier, detector to be ready.
        stop_grace_s: SIGTERM -> SIGKILL grace when stopping (seconds).
        service_args: extra command-line arguments per service.
        trace_path: sink per-stage timestamp trace (benchmarks).
        metrics_only: sink renders nothing and writes no files.
        log_level: services' log level.
        hwm: ZeroMQ high-water mark of every data socket (messages); 1 keeps the frames
            in flight, and so the latency, smallest.
        drain_timeout_s: after capture ended, stop when no frame reached the sink for
            this long although not every end of stream arrived (seconds).
        stall_timeout_s: a running service without a heartbeat, or without progress
            while work waits for it, for this long is stalled: killed and restarted
            (seconds; see :mod:`services.orchestrator.stalls`).
    """

    sources: list[str] = dataclasses.field(default_factory=list)
    out_dir: Path | None = None
    realtime: bool = True
    loop: bool = False
    model: str = DEFAULT_MODEL
    second_opinion: str | None = None
    detector_backend: str = DEFAULT_BACKEND
    display: bool = False
    threads: dict[str, int] = dataclasses.field(
        default_factory=lambda: {s: 1 for s in SERVICES})
    http_base_port: int = 9101
    max_restarts: int = 3
    restart_window_s: float = 60.0
    ready_timeout_s: float = 300.0
    stop_grace_s: float = 3.0
    service_args: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    trace_path: Path | None = None
    metrics_only: bool = False
    log_level: str = "INFO"
    hwm: int = 1
    drain_timeout_s: float = 30.0
    stall_timeout_s: float = 8.0


def parse_threads(values: tuple[str, ...] | list[str]) -> dict[str, int]:
    """``--threads`` values (``N`` for every service, or ``SERVICE=N``) as
    ``{service: threads}``; services not named keep 1.

    Raises:
        ValueError: a value of another form, an unknown service, or a budget below 1.
    """
    out = {s: 1 for s in SERVICES}
    for v in values:
        name, sep, n = v.partition("=")
        try:
            if not sep:
                out = {s: int(v) for s in SERVICES}
            elif name in SERVICES:
                out[name] = int(n)
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"{v!r}: use N or SERVICE=N with SERVICE one of "
                             f"{', '.join(SERVICES)}") from None
        if min(out.values()) < 1:
            raise ValueError("thread budgets must be >= 1")
    return out


def parse_service_args(values: tuple[str, ...] | list[str]) -> dict[str, list[str]]:
    """``--service-arg`` values (``SERVICE=--option=value``) as ``{service: [args]}``.

    Raises:
        ValueError: a value without ``=``, an unknown service or an empty argument.
    """
    out: dict[str, list[str]] = {}
    for v in values:
        name, sep, arg = v.partition("=")
        if not sep or name not in SERVICES or not arg:
            raise ValueError(f"{v!r}: use SERVICE=--option=value")
        out.setdefault(name, []).append(arg)
    return out
