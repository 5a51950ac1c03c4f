"""The ``agegender run`` click command."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import click

from common.detectors import BACKENDS, DEFAULT_BACKEND
from common.models.registry import DEFAULT_MODEL
from common.outdir import OutDirError, OutDirLock
from common.process import install_signal_handlers, setup_logging
from common.redact import redact
from services.orchestrator.options import (EXIT_CONFIG, StackOptions, parse_service_args,
                                           parse_threads)
from services.orchestrator.runner import run_stack
from services.orchestrator.summary import format_summary


def _parsed(parse, hint: str):
    """A click callback applying ``parse``; its ``ValueError`` becomes a usage error."""
    def callback(ctx, param, values):
        """Parse the option's values."""
        try:
            return parse(values)
        except ValueError as exc:
            raise click.BadParameter(redact(exc), param_hint=hint) from None
    return callback


def _check_sources(ctx, param, sources):
    """The capture service's own rules, checked before four processes start."""
    from pydantic import ValidationError

    from services.capture.config import CaptureConfig
    try:
        CaptureConfig(sources=list(sources))
    except ValidationError as exc:
        err = exc.errors()[0]  # the ValueError's own text, without pydantic's prefix
        raise click.BadParameter(redact(err.get("ctx", {}).get("error") or err["msg"]),
                                 param_hint="--source") from None
    return list(sources)


@click.command(name="run", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--source", "sources", multiple=True, metavar="[NAME=]URI",
              callback=_check_sources,
              help="Video file, image folder, rtsp://..., http(s)://... MJPEG, camera index "
                   "(0) or /dev/videoN; repeat for several streams. None: the built-in demo.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write DIR/annotated.mp4, DIR/events.jsonl, DIR/people.jsonl and "
                   "DIR/summary.json; the run owns DIR while it runs (a second run on it is "
                   "refused).")
@click.option("--realtime", type=click.BOOL, default=True, is_flag=False, flag_value="true",
              show_default=True, help="Pace files at their native frame rate; "
              "'--realtime false' (or --no-realtime) runs as fast as the stack allows.")
@click.option("--no-realtime", "no_realtime", is_flag=True, help="Same as --realtime false.")
@click.option("--loop", is_flag=True, help="Repeat files (run until Ctrl-C).")
@click.option("--model", default=DEFAULT_MODEL, show_default=True,
              help="Age/gender model under models/ or a model directory.")
@click.option("--second-opinion", type=click.Choice(["none", "dlib"]), default=None,
              help="Gender second opinion in the classifier (its second_opinion setting; "
                   "default: the classifier's, AGEGENDER_CLASSIFIER_SECOND_OPINION).")
@click.option("--detector-backend", type=click.Choice(list(BACKENDS)),
              default=DEFAULT_BACKEND, show_default=True,
              help="Face detector (docs/detectors.md).")
@click.option("--display", is_flag=True, help="Show a desktop window (needs a display).")
@click.option("--threads", "threads", multiple=True, metavar="N|SERVICE=N",
              callback=_parsed(parse_threads, "--threads"),
              help="Thread budget per service process (default 1 each), e.g. "
                   "--threads classifier=2.")
@click.option("--http-base-port", type=click.IntRange(0, 65530), default=9101,
              show_default=True, help="capture's HTTP port; detector +1, classifier +2, "
              "sink +3 (live view at /), orchestrator metrics +4. 0: free ports.")
@click.option("--hwm", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="ZeroMQ high-water mark (messages) of the data sockets; small keeps "
              "latency low, larger smooths bursts.")
@click.option("--max-restarts", type=click.IntRange(0, 100), default=3, show_default=True,
              help="Restarts of one service allowed within 60 s before giving up.")
@click.option("--stall-timeout-s", type=click.FloatRange(1.0, 3600.0), default=8.0,
              show_default=True, help="A running service without a heartbeat, or without "
              "progress while work waits for it, for this many seconds is reported as "
              "stalled, killed and restarted.")
@click.option("--service-arg", "service_args", multiple=True, metavar="SERVICE=ARG",
              callback=_parsed(parse_service_args, "--service-arg"),
              help="Extra argument for one service, e.g. detector=--confidence=0.6.")
@click.option("--summary-json", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the summary as JSON here.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Progress bar on stderr.")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
              default="INFO", show_default=True, help="Services' log level (logs go to "
              "files; their folder is printed when something fails).")
def command(sources, out_dir, realtime, no_realtime, loop, model, second_opinion,
            detector_backend, display,
            threads, http_base_port, hwm, max_restarts, stall_timeout_s, service_args,
            summary_json, progress, log_level):
    """Run the whole stack (capture -> detector -> classifier -> sink, four processes over
    ipc://) with progress and a summary. Ctrl-C stops everything within 5 s."""
    setup_logging("INFO", fmt="%(asctime)s %(levelname)s run: %(message)s")  # redacted
    if not sources:
        click.echo("No --source given: playing the built-in demo (a scene synthesized at "
                   "run time from scikit-image's public-domain astronaut photo).", err=True)
    if display:
        from services.sink.display import display_available
        ok, why = display_available()
        if not ok:
            click.echo(f"warning: --display asked for a window but {why}; running without "
                       "one (the live view is in the browser, see the sink's port).", err=True)
    opts = StackOptions(sources=sources, out_dir=out_dir,
                        realtime=realtime and not no_realtime, loop=loop, model=model,
                        second_opinion=second_opinion,
                        detector_backend=detector_backend, display=display,
                        threads=threads, http_base_port=http_base_port,
                        max_restarts=max_restarts, hwm=hwm, stall_timeout_s=stall_timeout_s,
                        service_args=service_args, log_level=log_level)
    lock = None
    if out_dir is not None:
        try:
            lock = OutDirLock(out_dir).acquire()
        except OutDirError as exc:  # before anything starts: one line, exit 2
            click.echo(f"agegender run: {exc}", err=True)
            raise SystemExit(EXIT_CONFIG) from None
    stop = threading.Event()
    install_signal_handlers(stop)
    try:
        code, summary = run_stack(opts, stop, progress=progress, out_lock=lock)
    finally:
        if lock is not None:
            lock.release()
    click.echo(format_summary(summary))
    if summary_json is not None:
        summary_json.write_text(json.dumps(summary, indent=2))
    raise SystemExit(code)
