"""Model runtimes: ONNX Runtime (CPU, no TensorFlow import) and Keras on TensorFlow.

A model folder lists its Keras networks in ``meta["files"]`` (``{head: file}``) and, once
exported (:mod:`training.export`), the same networks as ONNX files in
``meta["onnx"]["files"]``. :func:`load_networks` opens every network of a folder in the
runtime :func:`choose_runtime` picks.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: ``runtime`` values: ``"auto"`` (ONNX when exported and on the CPU), ``"onnx"``, ``"keras"``.
RUNTIMES = ("auto", "onnx", "keras")


def configure_tensorflow(threads: int | None = None, device: str = "auto"):
    """Import TensorFlow with a thread budget and safe GPU settings.

    Sets intra/inter-op threads to ``threads`` (when given and TF is not initialised yet),
    enables memory growth on every GPU before first use, and hides GPUs for
    ``device="cpu"``.

    Args:
        threads: intra-op threads (inter-op gets ``min(threads, 2)``); ``None`` leaves TF's
            default.
        device: ``"auto"`` (GPU when present), ``"cpu"`` or ``"gpu"``.

    Returns:
        The ``tensorflow`` module.

    Raises:
        RuntimeError: ``device="gpu"`` and TensorFlow sees no GPU.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(min(int(threads), 2))
        except RuntimeError as exc:  # TF already initialised: keep its settings
            log.debug("TensorFlow thread budget unchanged: %s", exc)
    gpus = tf.config.list_physical_devices("GPU")
    if device == "cpu" and gpus:
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError as exc:
            log.warning("cannot hide GPUs (TensorFlow already initialised): %s", exc)
        gpus = []
    if device == "gpu" and not gpus:
        raise RuntimeError("--device gpu requested but TensorFlow sees no GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError as exc:
            log.debug("memory growth unchanged: %s", exc)
    return tf


def choose_runtime(directory: Path, meta: dict, runtime: str = "auto",
                   device: str = "auto") -> str:
    """The runtime a model folder will run on: ``"onnx"`` or ``"keras"``.

    ``"auto"`` picks ONNX Runtime when ``meta["onnx"]["files"]`` exist in ``directory``,
    ``onnxruntime`` imports and ``device`` is not ``"gpu"``; otherwise Keras.

    Raises:
        ValueError: unknown ``runtime``, or ``"onnx"`` asked for a folder without ONNX
            files, a missing ``onnxruntime`` or ``device="gpu"``.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if runtime == "keras":
        return "keras"
    directory = Path(directory)
    files = (meta.get("onnx") or {}).get("files") or {}
    why = None
    if not files or not all((directory / f).is_file() for f in files.values()):
        why = f"{directory} has no ONNX export (agegender export)"
    elif device == "gpu":
        why = "the ONNX runtime here runs on the CPU only; use runtime 'keras' for a GPU"
    else:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            why = f"onnxruntime is not installed ({exc})"
    if why is None:
        return "onnx"
    if runtime == "onnx":
        raise ValueError(f"runtime 'onnx' unavailable: {why}")
    log.debug("runtime keras: %s", why)
    return "keras"


def onnx_session(path: Path, threads: int | None):
    """An ONNX Runtime CPU session for ``path`` with ``threads`` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or 0)  # 0: ONNX Runtime's default
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    # No busy-waiting between runs: a spinning pool steals the cores of whatever runs next
    # (measured with two sessions back to back, `agegender evaluate --threads 2`: 3.3 / 2.6
    # ms per crop at batch 1 / 32 with spinning, 1.9-2.5 / 1.3-1.9 ms without), and the
    # detector and the classifier share a small CPU.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_session(session, x: np.ndarray) -> list[np.ndarray]:
    """Outputs of an ONNX Runtime ``session`` for its single input ``x``."""
    return session.run(None, {session.get_inputs()[0].name: x})


def load_networks(directory: Path, meta: dict, runtime: str = "auto",
                  threads: int | None = None, device: str = "auto") -> tuple[str, dict]:
    """Open every network of a model folder.

    Returns:
        ``(runtime, networks)``: ``"onnx"`` with ``{head: onnxruntime.InferenceSession}``
        or ``"keras"`` with ``{head: keras.Model}`` (uncompiled).

    Raises:
        ValueError: see :func:`choose_runtime`.
        RuntimeError: see :func:`configure_tensorflow`.
    """
    directory = Path(directory)
    chosen = choose_runtime(directory, meta, runtime, device)
    if chosen == "onnx":
        return chosen, {head: onnx_session(directory / f, threads)
                        for head, f in meta["onnx"]["files"].items()}
    tf = configure_tensorflow(threads, device)
    return chosen, {head: tf.keras.models.load_model(directory / f, compile=False)
                    for head, f in meta["files"].items()}
