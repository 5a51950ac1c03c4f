"""Age/gender models as the classifier uses them, with their own preprocessing.

A model lives in a folder ``models/<name>/`` with ``meta.json`` and Keras files (``.keras``,
standard layers only), plus, when exported (:mod:`training.export`), the same networks as
ONNX files listed in ``meta["onnx"]["files"]``. :func:`load_model` reads it and runs the
networks with one of two runtimes: ONNX Runtime (CPU; no TensorFlow import) or Keras on
TensorFlow (any device). The default, ``"auto"``, takes ONNX Runtime when the folder has
ONNX files and ``device`` is not ``"gpu"`` (:func:`choose_runtime`).
:meth:`AgeGenderModel.predict` takes face crops (``(h, w, 3)`` uint8 BGR: the detector
box, widened by the caller to the model's ``crop_aspect``, see
:func:`services.detector.backends.widen_box`), turns rolled heads upright when the model
has a roll estimator (:mod:`services.classifier.align`) and returns one dict per crop.

Preprocessing (:func:`resize_crop`) is shared with training (``training/``), so the
network sees the same pixels at training and at run time: the crop is resized to the
model's input size (area interpolation when shrinking, bilinear when enlarging) and turned
gray for one-channel models; colour models keep BGR order. Scaling to 0..1 is the first
layer of each network (``Rescaling(1/255)``), so it cannot drift.

Two kinds (``meta["kind"]``):

* ``"compact"``: one network, outputs ``[age_probs (N, K), gender_probs (N, 2)]``. Age is
  the expected value over the K age bins (DEX: Rothe, Timofte and Van Gool, "DEX: Deep
  EXpectation of apparent age from a single image", ICCVW 2015). The age interval is a
  central interval of the predicted distribution widened or narrowed by a factor
  calibrated on the validation split (:func:`age_interval`). Test-time horizontal flip
  averages the probabilities of the crop and its mirror image.
* ``"seed"``: the thesis' two networks, age ``(N, 1)`` regression and gender
  ``(N, 2)`` softmax. Its interval is ``age +- q`` where ``q`` is the validation split's
  absolute-error quantile at the stated coverage (split conformal prediction).

Gender labels by output index come from ``meta["genders"]`` (canonical: ``["male",
"female"]``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import threading
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

#: Folder holding the shipped models (``<repo>/models``).
MODELS_DIR = Path(__file__).resolve().parents[2] / "models"

#: Largest batch handed to the network in one call by :meth:`AgeGenderModel.predict`.
CHUNK = 256

#: ``runtime`` values of :func:`load_model`.
RUNTIMES = ("auto", "onnx", "keras")


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """Network input size: ``height`` x ``width`` pixels, ``channels`` 1 (gray) or 3 (BGR)."""

    height: int
    width: int
    channels: int

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(height, width, channels)``."""
        return (self.height, self.width, self.channels)

    @property
    def tag(self) -> str:
        """Short name used in cache files, e.g. ``"64x64x3"`` (height x width x channels)."""
        return f"{self.height}x{self.width}x{self.channels}"

    @classmethod
    def from_meta(cls, meta: dict) -> "InputSpec":
        """Read ``meta["input"] = {"height", "width", "channels"}``."""
        spec = meta["input"]
        return cls(int(spec["height"]), int(spec["width"]), int(spec["channels"]))


def resize_crop(crop: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Model input pixels for one face crop.

    Args:
        crop: ``(h, w, 3)`` uint8 BGR face crop (``h, w >= 1``), as the detector cut it.
        spec: the model's input size.

    Returns:
        ``(spec.height, spec.width, spec.channels)`` uint8: BGR for 3 channels, gray
        (``cv2.COLOR_BGR2GRAY``) for 1.

    Raises:
        ValueError: the crop is not a non-empty ``(h, w, 3)`` uint8 array.
    """
    if not isinstance(crop, np.ndarray) or crop.ndim != 3 or crop.shape[2] != 3 \
            or crop.dtype != np.uint8 or crop.shape[0] < 1 or crop.shape[1] < 1:
        raise ValueError("face crop must be a non-empty (h, w, 3) uint8 BGR array, got "
                         f"{getattr(crop, 'shape', None)} {getattr(crop, 'dtype', None)}")
    h, w = crop.shape[:2]
    shrink = h * w > spec.height * spec.width
    out = cv2.resize(crop, (spec.width, spec.height),
                     interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    if spec.channels == 1:
        out = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)[:, :, None]
    return np.ascontiguousarray(out)


def age_interval(probs: np.ndarray, bins: np.ndarray, coverage: float,
                 scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Age interval ``[lo, hi]`` (whole years) from predicted age distributions.

    The central ``coverage`` interval of each distribution (its quantiles at
    ``(1 - coverage) / 2`` and ``(1 + coverage) / 2``) is scaled about the expected age by
    ``scale`` (calibrated on the validation split so that the interval holds the true age
    in about ``coverage`` of the cases), then rounded outwards to whole years.

    Args:
        probs: ``(N, K)`` probabilities over the age bins.
        bins: ``(K,)`` bin ages in years.
        coverage: nominal coverage in (0, 1).
        scale: width factor (> 0).

    Returns:
        ``(lo, hi)`` int arrays of shape ``(N,)``, ``lo <= hi``.
    """
    probs = np.asarray(probs, np.float64)
    bins = np.asarray(bins, np.float64)
    mean = probs @ bins
    cdf = np.cumsum(probs, axis=1)
    cdf /= np.maximum(cdf[:, -1:], 1e-12)
    lo_q = bins[np.argmax(cdf >= (1.0 - coverage) / 2.0, axis=1)]
    hi_q = bins[np.argmax(cdf >= (1.0 + coverage) / 2.0, axis=1)]
    lo = np.floor(mean - scale * np.maximum(mean - lo_q, 0.5)).astype(np.int64)
    hi = np.ceil(mean + scale * np.maximum(hi_q - mean, 0.5)).astype(np.int64)
    lo = np.clip(lo, 0, None)
    return lo, np.maximum(hi, lo)


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


def shipped_models() -> list[str]:
    """Names of the age/gender models under ``models/`` (not the roll estimator)."""
    return sorted(p.parent.name for p in MODELS_DIR.glob("*/meta.json")
                  if json.loads(p.read_text()).get("kind") != "roll")


def resolve_model_dir(name_or_path: str) -> Path:
    """``models/<name>`` for a bare name, else the given folder.

    Raises:
        FileNotFoundError: no such folder or no ``meta.json`` in it.
    """
    path = Path(name_or_path)
    if not (path.is_dir() and (path / "meta.json").is_file()):
        path = MODELS_DIR / str(name_or_path)
    if not (path / "meta.json").is_file():
        raise FileNotFoundError(f"no model {name_or_path!r}: expected a folder with meta.json "
                                f"(models/<name>/ or a path); shipped: "
                                f"{shipped_models()}"
                                if MODELS_DIR.is_dir() else f"no model {name_or_path!r}")
    return path


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
    # No busy-waiting between runs: the classifier runs two sessions back to back (roll
    # estimator, then age/gender), and a spinning pool of one steals the cores of the other
    # (`agegender evaluate --threads 2`, alignment on: 3.3 / 2.6 ms per crop at batch 1 / 32
    # with spinning, 1.9-2.5 / 1.3-1.9 ms without).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class AgeGenderModel:
    """A loaded age/gender model (see the module docstring for the two kinds).

    Args:
        directory: the model folder (``meta.json`` + Keras files, ONNX files if exported).
        threads: intra-op thread budget of the runtime (``None``: its default).
        device: ``"auto"``, ``"cpu"`` or ``"gpu"``.
        runtime: ``"auto"``, ``"onnx"`` or ``"keras"`` (see :func:`choose_runtime`).
        aligner: a :class:`services.classifier.align.RollEstimator` that turns rolled
            heads upright in :meth:`predict` (``None``: crops are used as cut).

    Attributes:
        name: model name (``meta["name"]``).
        meta: the parsed ``meta.json``.
        spec: network input size.
        runtime: ``"onnx"`` or ``"keras"``, the one in use.
        aligner: the roll estimator or ``None``.
        crop_aspect: width/height the face boxes are widened to before cutting
            (``meta["crop_aspect"]``, the median of the training crops; ``None``: boxes
            are cut as detected); see :func:`services.detector.backends.widen_box`.
        trace_count: number of TensorFlow graph traces so far (Keras runtime; always 0 on
            ONNX Runtime, which has no tracing); stays constant across batch sizes after
            :meth:`warmup` (the graph has a ``[None, H, W, C]`` input signature).

    Raises:
        ValueError: unknown model kind, or see :func:`choose_runtime`.
    """

    def __init__(self, directory: str | os.PathLike, threads: int | None = None,
                 device: str = "auto", runtime: str = "auto", aligner=None):
        self.directory = Path(directory)
        self.aligner = aligner
        self.meta = json.loads((self.directory / "meta.json").read_text())
        self.name = str(self.meta.get("name", self.directory.name))
        self.kind = self.meta["kind"]
        if self.kind not in ("compact", "seed"):
            raise ValueError(f"unknown model kind {self.kind!r} in {self.directory}")
        self.spec = InputSpec.from_meta(self.meta)
        self.genders = list(self.meta.get("genders", ["male", "female"]))
        self.crop_aspect = self.meta.get("crop_aspect")
        self.tta_flip = bool(self.meta.get("tta_flip", False))
        self.trace_count = 0
        self._lock = threading.Lock()
        self.bins = np.asarray(self.meta["age_bins"], np.float64) \
            if self.kind == "compact" else None
        self.runtime = choose_runtime(self.directory, self.meta, runtime, device)
        if self.runtime == "onnx":
            self._sessions = {head: onnx_session(self.directory / f, threads)
                              for head, f in self.meta["onnx"]["files"].items()}
            return
        tf = configure_tensorflow(threads, device)
        self._tf = tf
        self._nets = {head: tf.keras.models.load_model(self.directory / f, compile=False)
                      for head, f in self.meta["files"].items()}
        self._fn = tf.function(self._forward, input_signature=[
            tf.TensorSpec([None, *self.spec.shape], tf.float32)], reduce_retracing=True)

    def _forward(self, x):
        """Graph body: ``x`` ``(N, H, W, C)`` float32 0..255 -> (age, gender_probs)."""
        self.trace_count += 1  # Python side effect: runs once per trace only
        tf = self._tf
        if self.kind == "compact":
            net = self._nets["net"]
            age, gender = net(x, training=False)
            if self.tta_flip:
                age_f, gender_f = net(tf.reverse(x, axis=[2]), training=False)
                age, gender = (age + age_f) / 2.0, (gender + gender_f) / 2.0
            return age, gender
        age = self._nets["age"](x, training=False)
        gender = self._nets["gender"](x, training=False)
        return age, gender

    def _run_onnx(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ONNX Runtime counterpart of :meth:`_forward` (same outputs, numpy in and out)."""
        def run(head, pixels):
            """Outputs of network ``head`` for ``(N, H, W, C)`` float32 pixels."""
            sess = self._sessions[head]
            return sess.run(None, {sess.get_inputs()[0].name: pixels})

        if self.kind == "compact":
            age, gender = run("net", x)
            if self.tta_flip:
                age_f, gender_f = run("net", np.ascontiguousarray(x[:, :, ::-1]))
                age, gender = (age + age_f) / 2.0, (gender + gender_f) / 2.0
            return age, gender
        return run("age", x)[0], run("gender", x)[0]

    def raw(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Network outputs for preprocessed input.

        Args:
            batch: ``(N, H, W, C)`` uint8 or float32 (0..255), as :func:`resize_crop` makes.

        Returns:
            ``(age, gender_probs)``: age ``(N, K)`` bin probabilities (compact) or ``(N, 1)``
            years (seed); ``gender_probs`` ``(N, 2)`` in ``meta["genders"]`` order.
        """
        outs_a, outs_g = [], []
        for i in range(0, len(batch), CHUNK):
            x = np.ascontiguousarray(batch[i:i + CHUNK], np.float32)
            with self._lock:
                if self.runtime == "onnx":
                    a, g = self._run_onnx(x)
                else:
                    a, g = (t.numpy() for t in self._fn(self._tf.convert_to_tensor(x)))
            outs_a.append(a)
            outs_g.append(g)
        return np.concatenate(outs_a), np.concatenate(outs_g)

    def predict_arrays(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Vectorised predictions for preprocessed input ``(N, H, W, C)`` (0..255).

        Returns:
            ``{"age": (N,) years, "age_lo": (N,) int, "age_hi": (N,) int (``-1`` when the
            model has no interval), "gender": (N,) label index, "gender_confidence": (N,),
            "age_probs": (N, K) or absent}``.
        """
        if len(batch) == 0:
            return {"age": np.zeros(0), "age_lo": np.zeros(0, np.int64),
                    "age_hi": np.zeros(0, np.int64), "gender": np.zeros(0, np.int64),
                    "gender_confidence": np.zeros(0)}
        a, g = self.raw(batch)
        interval = self.meta.get("interval") or {}
        out = {"gender": np.argmax(g, axis=1), "gender_confidence": np.max(g, axis=1)}
        if self.kind == "compact":
            out["age_probs"] = a
            out["age"] = a.astype(np.float64) @ self.bins
            if "scale" in interval:
                out["age_lo"], out["age_hi"] = age_interval(
                    a, self.bins, float(interval["coverage"]), float(interval["scale"]))
            else:
                out["age_lo"] = out["age_hi"] = np.full(len(a), -1, np.int64)
        else:
            out["age"] = np.clip(a[:, 0].astype(np.float64), 0.0, 120.0)
            if "halfwidth" in interval:
                q = float(interval["halfwidth"])
                out["age_lo"] = np.clip(np.floor(out["age"] - q), 0, None).astype(np.int64)
                out["age_hi"] = np.ceil(out["age"] + q).astype(np.int64)
            else:
                out["age_lo"] = out["age_hi"] = np.full(len(a), -1, np.int64)
        return out

    def predict(self, crops: list[np.ndarray]) -> list[dict]:
        """Age and gender of each face crop.

        Crops are turned upright first when the model has an :attr:`aligner`.

        Args:
            crops: face crops, each ``(h, w, 3)`` uint8 BGR (any size), cut from the
                detector box widened to :attr:`crop_aspect`
                (``Detection.crop(frame, model.crop_aspect)``).

        Returns:
            One dict per crop, same order: ``{"age": float years, "age_range": [lo, hi]
            whole years or None, "gender": "female" | "male", "gender_confidence": float
            0..1}``.

        Raises:
            ValueError: a crop is not a non-empty ``(h, w, 3)`` uint8 array (the message
                names its index).
        """
        if len(crops) == 0:
            return []
        batch = np.empty((len(crops), *self.spec.shape), np.uint8)
        for i, crop in enumerate(crops):
            try:
                batch[i] = resize_crop(crop, self.spec)
            except ValueError as exc:
                raise ValueError(f"crop {i}: {exc}") from None
        if self.aligner is not None:
            same = self.aligner.spec == self.spec
            turned, _ = self.aligner.upright(crops, batch if same else None)
            for i, (crop, up) in enumerate(zip(crops, turned)):
                if up is not crop:
                    batch[i] = resize_crop(up, self.spec)
        out = self.predict_arrays(batch)
        results = []
        for i in range(len(crops)):
            lo, hi = int(out["age_lo"][i]), int(out["age_hi"][i])
            results.append({
                "age": round(float(out["age"][i]), 2),
                "age_range": [lo, hi] if lo >= 0 else None,
                "gender": self.genders[int(out["gender"][i])],
                "gender_confidence": round(float(out["gender_confidence"][i]), 4),
            })
        return results

    def warmup(self, max_batch: int) -> None:
        """Trace the graph once and run batch sizes 1 and ``max_batch`` (no retrace later);
        the roll estimator, if any, runs the same sizes."""
        for n in sorted({1, max(1, min(int(max_batch), CHUNK))}):
            self.raw(np.zeros((n, *self.spec.shape), np.float32))
            if self.aligner is not None:
                self.aligner.angles(np.zeros((n, *self.aligner.spec.shape), np.float32))
        log.info("model %s warmed up on %s (%d trace(s))", self.name, self.runtime,
                 self.trace_count)


def load_model(name_or_path: str = "compact", threads: int | None = None,
               device: str = "auto", runtime: str = "auto",
               align: str | None = "roll") -> AgeGenderModel:
    """Load a shipped model by name (``"compact"``, ``"seed"``) or a model folder path.

    Args:
        name_or_path: a folder under ``models/`` or a path to a folder with ``meta.json``.
        threads: intra-op thread budget of the runtime (``None``: its default).
        device: ``"auto"`` (GPU when present), ``"cpu"`` or ``"gpu"``.
        runtime: ``"auto"``, ``"onnx"`` or ``"keras"`` (see :func:`choose_runtime`).
        align: roll estimator (name under ``models/`` or folder) that turns rolled heads
            upright before classification (:mod:`services.classifier.align`); ``None``:
            no alignment.

    Raises:
        FileNotFoundError: no such model or roll estimator folder.
        ValueError: unknown model kind in ``meta.json``; runtime unavailable.
    """
    directory = resolve_model_dir(name_or_path)
    aligner = None
    if align:
        from services.classifier.align import load_roll_estimator

        aligner = load_roll_estimator(align, threads=threads, runtime=runtime, device=device)
    return AgeGenderModel(directory, threads=threads, device=device, runtime=runtime,
                          aligner=aligner)


def band_of(age: float) -> str:
    """Ten-year age band label: ``"0-9"``, ``"10-19"``, ..., ``"70+"``."""
    b = int(math.floor(max(age, 0) / 10))
    return "70+" if b >= 7 else f"{10 * b}-{10 * b + 9}"
