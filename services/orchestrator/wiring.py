"""How the four services are wired: HTTP ports, ``ipc://`` endpoints, their arguments."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from services.orchestrator.options import PORT_OFFSET, SERVICES, StackOptions

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


def source_path(spec: str) -> str:
    """The URI of a source spec ``[NAME=]URI``."""
    return spec.split("=", 1)[1] if "=" in spec and not os.path.exists(spec) else spec


def probe_video(path: str) -> tuple[float, int]:
    """``(fps, frame_count)`` of a video file (0 each when unknown)."""
    import cv2
    cap = cv2.VideoCapture(path)
    try:
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        cap.release()
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
    ``run_dir/capture_status.json``.

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
                    "--status-path", str(run_dir / "capture_status.json")]
        + [a for s in opts.sources for a in ("--sources", s)],
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
