"""Process-wide set-up of a service: logs, thread budget, image size cap, signals, exit.

Also the exit contract every service and ``agegender run`` share: exit code
:data:`EXIT_CONFIG` means "refused its configuration or input" (restarting cannot help),
and the reason is written as JSON to the file named by the environment variable
:data:`EXIT_REASON_ENV` (``agegender run`` sets it per child), so the orchestrator
learns why without reading log text.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from common.redact import install_log_redaction, redact

log = logging.getLogger(__name__)

#: Exit code of a service that refused its configuration or input: a source that cannot
#: be opened, a model or detector that cannot be loaded, an option out of bounds (click's
#: usage errors exit 2 too).
EXIT_CONFIG = 2
#: Environment variable naming the file a service writes its exit reason to.
EXIT_REASON_ENV = "AGEGENDER_EXIT_REASON_FILE"


class Refused(Exception):
    """A service refuses to run before its ``main`` could return :data:`EXIT_CONFIG`
    itself (raised by :class:`common.service.ServiceRuntime` for settings that only fail
    when used, such as a key file that does not load). Its reason was logged and written
    to the exit-reason file already; the command line exits with :data:`EXIT_CONFIG`."""


def setup_logging(level: str = "INFO",
                  fmt: str = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"
                  ) -> None:
    """Configure one-line logs (default: time, level, process name, logger, message) on
    stderr, every line, traceback and stack passed through :func:`common.redact.redact`
    (:func:`common.redact.install_log_redaction`), so no camera or broker credential
    reaches a console or a kept log file."""
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), format=fmt,
                        force=True)
    install_log_redaction()


#: Largest image *file* decoded where files are read directly (``agegender predict``,
#: capture's image folders), in pixels: 2**27 (a 12000x9000 = 108 Mpx phone photo fits).
#: Reading one such photo peaks at about 6 bytes a pixel (670 MiB measured for 108 Mpx,
#: ``python -m bench.large_photo``); capture then sends it downscaled to what one message
#: takes. Services that only decode frames from the wire keep the wire's cap.
MAX_FILE_PIXELS = 2 ** 27


def limit_image_decoding(max_pixels: int | None = None) -> None:
    """Cap the image size OpenCV will decode in this process (pixels, width x height).

    OpenCV allocates the full image a JPEG/PNG header announces before reading the data
    (default limit 2**30 pixels: a 2 MB JPEG can expand to gigabytes). The default cap is
    the wire schema's largest frame, ``common.wire.MAX_SIDE ** 2``: nothing larger could
    be sent downstream anyway. Larger images make ``cv2.imdecode``/``cv2.imread`` raise
    ``cv2.error`` (catch it where images are decoded). Sets ``OPENCV_IO_MAX_IMAGE_PIXELS``
    unless the environment already sets it; OpenCV reads it at its first decode, so call
    this before decoding anything.
    """
    from common.wire import MAX_SIDE
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(max_pixels or MAX_SIDE * MAX_SIDE))


@contextlib.contextmanager
def image_decoding_limit(max_pixels: int):
    """:func:`limit_image_decoding` for the ``with`` block: the variable is removed again
    at its end when this set it, so processes started later (tests that run a service in
    a thread, then start others) do not inherit a larger cap. OpenCV keeps the value it
    read at its first decode either way."""
    was_set = "OPENCV_IO_MAX_IMAGE_PIXELS" in os.environ
    limit_image_decoding(max_pixels)
    try:
        yield
    finally:
        if not was_set:
            os.environ.pop("OPENCV_IO_MAX_IMAGE_PIXELS", None)


def set_thread_budget(threads: int) -> None:
    """Limit OpenMP, BLAS, OpenCV and TensorFlow threads of this process.

    Call before TensorFlow is imported for the environment variables to fully apply;
    TensorFlow's own pools are set again if it is already imported. Also caps the image
    size OpenCV decodes (:func:`limit_image_decoding`), as every entry point calls this
    first.
    """
    limit_image_decoding()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "TF_NUM_INTRAOP_THREADS"):
        os.environ[var] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import cv2
    cv2.setNumThreads(threads)
    if "tensorflow" in sys.modules:
        import tensorflow as tf
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # already initialised: keep what it has
            log.debug("TensorFlow thread pools already initialised")


def install_signal_handlers(stop: threading.Event) -> None:
    """Make SIGINT and SIGTERM set ``stop`` (nothing else happens in the handler)."""
    def handler(signum, frame):
        """Signal handler: only sets the stop event."""
        stop.set()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)


def exit_process(code: int) -> None:
    """End a service process at once with ``code``, after its ``main`` has cleaned up.

    Python's interpreter teardown after ``SystemExit`` takes 2-3 s in a process that ran
    TensorFlow (module and C++ object destructors), which breaks the "exit within 2 s of
    SIGTERM" budget although ``main`` itself returned in milliseconds. This flushes the
    logging handlers and standard streams and calls ``os._exit(code)``.

    When standard output is not the process's real file descriptor 1 (click's
    ``CliRunner`` and other in-process callers swap it), it raises ``SystemExit(code)``
    instead, so tests that invoke a command in-process keep their interpreter.

    Raises:
        SystemExit: in-process callers (see above).
    """
    logging.shutdown()
    try:
        real = sys.stdout is not None and sys.stdout.fileno() == 1
    except (AttributeError, ValueError, OSError):  # io.StringIO and friends
        real = False
    if not real:
        raise SystemExit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            log.debug("could not flush %r before exit", stream)
    os._exit(int(code))


def exit_reason_path() -> Path | None:
    """The exit-reason file this process should write (:data:`EXIT_REASON_ENV`), if any."""
    value = os.environ.get(EXIT_REASON_ENV)
    return Path(value) if value else None


def write_exit_reason(reason: str, *, refused: bool, path: Path | None = None) -> bool:
    """Write ``{"reason": str, "refused": bool, "pid": int}`` to the exit-reason file
    (``path``, else :func:`exit_reason_path`; atomic replace; ``reason`` redacted).
    ``refused`` is ``True`` when the service said so explicitly, ``False`` when the reason
    is only the last error it logged before it got ready.

    Returns:
        ``True`` when a file was written (``False``: no file configured, or it could not
        be written, which is logged).
    """
    path = path or exit_reason_path()
    if path is None:
        return False
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps({"reason": redact(reason), "refused": refused,
                                   "pid": os.getpid()}))
        os.replace(tmp, path)
    except OSError as exc:
        log.error("cannot write the exit reason to %s: %s", path, exc)
        return False
    return True


def read_exit_reason(path: Path) -> dict | None:
    """The exit reason a service wrote to ``path`` (see :func:`write_exit_reason`);
    ``None`` when there is none or it is not a JSON object with a string ``reason``."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("reason"), str):
        return None
    return data
