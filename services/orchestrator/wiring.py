"""How the four services are wired: HTTP ports, ``ipc://`` endpoints, their arguments."""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

from common.streams import parse_spec
from services.orchestrator.options import PORT_OFFSET, SERVICES, StackOptions

#: Environment variable that carries capture's sources (JSON list, as the capture
#: config reads it): not its command line, which any local user can read with ``ps``.
SOURCES_ENV = "AGEGENDER_CAPTURE_SOURCES"

log = logging.getLogger("agegender.run")


def free_port() -> int:
    """A TCP port free on this machine right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    """True when nothing listens on TCP ``port`` (checked by binding it)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def http_ports(base: int) -> tuple[dict[str, int], int]:
    """``({service: HTTP port}, orchestrator metrics port)`` from ``--http-base-port``.

    ``base`` 0, or a base whose five ports are not all free (another stack running),
    gives free ports instead (the latter with a warning).
    """
    if base and not all(port_free(base + i) for i in range(5)):
        log.warning("HTTP ports %d-%d are not all free (another stack running?); using "
                    "free ports instead (see the service logs for them)", base, base + 4)
        base = 0
    ports = {s: (base + PORT_OFFSET[s] if base else free_port()) for s in SERVICES}
    return ports, (base + 4 if base else free_port())


def single_video_file(sources: list[str]) -> str | None:
    """The path of the one source when there is exactly one and it is a video file on
    disk (its frame rate and length feed the progress bar and the annotated video);
    ``None`` otherwise. Parsed by :func:`common.streams.parse_spec` (a URL's query
    string keeps its ``=``; an existing path wins)."""
    if len(sources) != 1:
        return None
    try:
        _, uri = parse_spec(sources[0])
    except ValueError:
        return None
    return uri if os.path.isfile(uri) else None


def probe_video(path: str) -> tuple[float, int]:
    """``(fps, frame_count)`` a video file states (0 each when unknown), read by PyAV
    from its header (the absolute path: a name like ``2024-05-01T10:00:00.mp4`` is no
    FFmpeg protocol)."""
    import av
    try:
        with av.open(os.path.abspath(path), metadata_errors="ignore") as c:
            if not c.streams.video:
                return 0.0, 0
            s = c.streams.video[0]
            rate = s.average_rate or s.guessed_rate
            fps, n = (float(rate) if rate else 0.0), int(s.frames or 0)
    except (av.error.FFmpegError, UnicodeDecodeError):
        return 0.0, 0
    return (fps if 0 < fps <= 240 else 0.0), max(n, 0)


def service_arguments(opts: StackOptions, run_dir: Path, ports: dict[str, int],
                      expected_streams: int, video_fps: float) -> dict[str, list[str]]:
    """Command-line arguments of each service (``agegender SERVICE ARGS``).

    Capture binds ``frames.sock`` in ``run_dir``, the detector connects to it and to
    ``faces.sock``, which the classifier binds; the classifier connects to
    ``results.sock``, which the sink binds. The sink writes its status to
    ``run_dir/sink_status.json`` (a restarted sink continues from it), capture its
    streams' positions to ``run_dir/capture_position.json`` (a restarted capture resumes
    from it) and its status (source states, skipped files) to
    ``run_dir/capture_status.json``. Capture's sources are not arguments (see
    :func:`service_environments`).

    Args:
        opts: what to run.
        run_dir: the run's temp folder (sockets, status, logs).
        ports: HTTP port of each service.
        expected_streams: streams whose end the sink waits for (0: run until stopped).
        video_fps: frame rate of the annotated video (0: from the frames' headers).
    """
    ep = {k: f"ipc://{run_dir}/{k}.sock" for k in ("frames", "faces", "results")}
    common = ["--log-level", opts.log_level, "--http-host", "127.0.0.1",
              "--hwm", str(opts.hwm)]
    args = {
        "capture": ["--output", f"bind:{ep['frames']}",
                    "--realtime", str(opts.realtime).lower(),
                    "--loop", str(opts.loop).lower(),
                    "--position-file", str(run_dir / "capture_position.json"),
                    "--status-path", str(run_dir / "capture_status.json")],
        "detector": ["--input", f"connect:{ep['frames']}",
                     "--output", f"connect:{ep['faces']}",
                     "--backend", opts.detector_backend],
        "classifier": ["--input", f"bind:{ep['faces']}",
                       "--output", f"connect:{ep['results']}", "--model", opts.model],
        "sink": ["--input", f"bind:{ep['results']}",
                 "--expected-streams", str(expected_streams),
                 "--status-path", str(run_dir / "sink_status.json"),
                 "--display", str(opts.display).lower(),
                 "--metrics-only", str(opts.metrics_only).lower()],
    }
    if opts.second_opinion is not None:
        args["classifier"] += ["--second-opinion", opts.second_opinion]
    if opts.out_dir is not None:  # the run holds the folder's lock itself
        args["sink"] += ["--out-dir", str(Path(opts.out_dir).resolve()),
                         "--lock-out-dir", "false"]
    if video_fps:
        args["sink"] += ["--video-fps", f"{video_fps:.4f}"]
    if opts.trace_path is not None:
        args["sink"] += ["--trace-path", str(Path(opts.trace_path).resolve())]
    return {s: common + ["--http-port", str(ports[s]), "--threads",
                         str(opts.threads.get(s, 1))]
            + args[s] + list(opts.service_args.get(s, [])) for s in SERVICES}


def service_environments(opts: StackOptions) -> dict[str, dict[str, str]]:
    """Extra environment variables of each service: capture's sources as JSON in
    :data:`SOURCES_ENV` (a process's environment is readable only by its user and root,
    its command line by everyone; camera URLs carry passwords). Always set, so a
    variable of the same name in the user's environment cannot add sources."""
    return {"capture": {SOURCES_ENV: json.dumps(list(opts.sources))}}
