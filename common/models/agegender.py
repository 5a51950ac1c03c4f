"""Age/gender models, as the classifier, ``agegender predict`` and training use them.

A model lives in a folder (:mod:`common.models.registry`) with ``meta.json`` and Keras
files (``.keras``, standard layers only), plus, when exported (:mod:`training.export`),
the same networks as ONNX files; they run on ONNX Runtime or Keras
(:mod:`common.models.runtimes`). :meth:`AgeGenderModel.predict` takes face crops
(``(h, w, 3)`` uint8 BGR, cut by the caller with :func:`common.crops.face_crop`: upright
by the eye line by the model's :attr:`AgeGenderModel.crop_rule` when the detector gives
keypoints, else the box widened to its ``crop_aspect``), preprocesses them
(:func:`common.models.preprocess.resize_crop`) and returns one dict per crop.

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

import logging
import os
import threading
from pathlib import Path

import numpy as np

from common.crops import CropRule
from common.models.preprocess import InputSpec, resize_crop
from common.models.dlib_descriptor import opinion_weights
from common.models.registry import DEFAULT_MODEL, read_meta, resolve_model_dir
from common.models.runtimes import load_networks, run_session

log = logging.getLogger(__name__)

#: Largest batch handed to the network in one call by :meth:`AgeGenderModel.predict`.
CHUNK = 256
#: ``meta["kind"]`` values of age/gender models.
KINDS = ("compact", "seed")


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


class AgeGenderModel:
    """A loaded age/gender model (see the module docstring for the two kinds).

    Args:
        directory: the model folder (``meta.json`` + Keras files, ONNX files if exported).
        threads: intra-op thread budget of the runtime (``None``: its default).
        device: ``"auto"``, ``"cpu"`` or ``"gpu"``.
        runtime: ``"auto"``, ``"onnx"`` or ``"keras"`` (see
            :func:`common.models.runtimes.choose_runtime`).

    Attributes:
        name: model name (``meta["name"]``).
        meta: the parsed ``meta.json``.
        spec: network input size.
        runtime: ``"onnx"`` or ``"keras"``, the one in use.
        crop_aspect: width/height the face boxes are widened to before cutting
            (``meta["crop_aspect"]``, the median of the training crops; ``None``: boxes
            are cut as detected), for faces without keypoints; see
            :func:`common.crops.face_crop`.
        crop_rule: :class:`common.crops.CropRule` for faces with keypoints
            (``meta["crop_rule"]``; default :data:`common.crops.SSD_VIDEO_RULE`, the
            served crops of models trained on SSD crops).
        trace_count: number of TensorFlow graph traces so far (Keras runtime; always 0 on
            ONNX Runtime, which has no tracing); stays constant across batch sizes after
            :meth:`warmup` (the graph has a ``[None, H, W, C]`` input signature).

    Raises:
        ValueError: unknown model kind; a malformed ``second_opinion`` block
            (:func:`common.models.dlib_descriptor.opinion_weights`); or see
            :func:`common.models.runtimes.choose_runtime`.
    """

    def __init__(self, directory: str | os.PathLike, threads: int | None = None,
                 device: str = "auto", runtime: str = "auto"):
        self.directory = Path(directory)
        self.meta = read_meta(self.directory)
        self.name = str(self.meta.get("name", self.directory.name))
        self.kind = self.meta["kind"]
        if self.kind not in KINDS:
            raise ValueError(f"unknown model kind {self.kind!r} in {self.directory}")
        self.spec = InputSpec.from_meta(self.meta)
        self.genders = list(self.meta.get("genders", ["male", "female"]))
        self.crop_aspect = self.meta.get("crop_aspect")
        self.crop_rule = CropRule.from_meta(self.meta)
        self.tta_flip = bool(self.meta.get("tta_flip", False))
        try:  # checked here, so a bad entry stops the model from loading, not a batch
            opinion_weights(self.meta)
        except ValueError as exc:
            raise ValueError(f"{self.directory}: {exc}") from None
        self.trace_count = 0
        self._lock = threading.Lock()
        self.bins = np.asarray(self.meta["age_bins"], np.float64) \
            if self.kind == "compact" else None
        self.runtime, self._nets = load_networks(self.directory, self.meta, runtime, threads,
                                                 device)
        if self.runtime == "keras":
            import tensorflow as tf  # configured by load_networks

            self._tf = tf
            self._fn = tf.function(self._forward, input_signature=[
                tf.TensorSpec([None, *self.spec.shape], tf.float32)], reduce_retracing=True)

    def _heads(self, run, x):
        """``(age, gender)`` of input ``x`` with ``run(head, x) -> outputs`` (list)."""
        if self.kind == "compact":
            age, gender = run("net", x)
            if self.tta_flip:
                age_f, gender_f = run("net", x[:, :, ::-1])
                age, gender = (age + age_f) / 2.0, (gender + gender_f) / 2.0
            return age, gender
        return run("age", x)[0], run("gender", x)[0]

    def _forward(self, x):
        """Graph body: ``x`` ``(N, H, W, C)`` float32 0..255 -> (age, gender_probs)."""
        self.trace_count += 1  # Python side effect: runs once per trace only

        def run(head, pixels):
            """Outputs of Keras network ``head`` as a list."""
            out = self._nets[head](pixels, training=False)
            return out if isinstance(out, (list, tuple)) else [out]

        return self._heads(run, x)

    def _run_onnx(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ONNX Runtime counterpart of :meth:`_forward` (same outputs, numpy in and out)."""
        return self._heads(lambda head, pixels: run_session(
            self._nets[head], np.ascontiguousarray(pixels)), x)

    def raw(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Network outputs for preprocessed input.

        Args:
            batch: ``(N, H, W, C)`` uint8 or float32 (0..255), as
                :func:`common.models.preprocess.resize_crop` makes.

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
        none = np.full(len(a), -1, np.int64)
        if self.kind == "compact":
            out["age_probs"] = a
            out["age"] = a.astype(np.float64) @ self.bins
            out["age_lo"], out["age_hi"] = age_interval(
                a, self.bins, float(interval["coverage"]), float(interval["scale"])) \
                if "scale" in interval else (none, none)
        else:
            out["age"] = np.clip(a[:, 0].astype(np.float64), 0.0, 120.0)
            q = interval.get("halfwidth")
            out["age_lo"], out["age_hi"] = (
                np.clip(np.floor(out["age"] - float(q)), 0, None).astype(np.int64),
                np.ceil(out["age"] + float(q)).astype(np.int64)) if q is not None \
                else (none, none)
        return out

    def predict(self, crops: list[np.ndarray]) -> list[dict]:
        """Age and gender of each face crop.

        Args:
            crops: face crops, each ``(h, w, 3)`` uint8 BGR (any size), cut by
                :func:`common.crops.face_crop` with :attr:`crop_aspect` and
                :attr:`crop_rule`.

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
        """Trace the graph once and run batch sizes 1 and ``max_batch`` (no retrace later)."""
        for n in sorted({1, max(1, min(int(max_batch), CHUNK))}):
            self.raw(np.zeros((n, *self.spec.shape), np.float32))
        log.info("model %s warmed up on %s (%d trace(s))", self.name, self.runtime,
                 self.trace_count)


def load_model(name_or_path: str = DEFAULT_MODEL, threads: int | None = None,
               device: str = "auto", runtime: str = "auto",
               models: str | os.PathLike | None = None) -> AgeGenderModel:
    """Load a shipped model by name (``"compact-wild"``, the default; ``"compact"``,
    ``"seed"``) or a model folder path.

    Args:
        name_or_path: a model name in the models folder or a folder with ``meta.json``.
        threads: intra-op thread budget of the runtime (``None``: its default).
        device: ``"auto"`` (GPU when present), ``"cpu"`` or ``"gpu"``.
        runtime: ``"auto"``, ``"onnx"`` or ``"keras"``.
        models: the models folder (``None``: :func:`common.models.registry.models_dir`).

    Raises:
        FileNotFoundError: no such model folder.
        ValueError: unknown model kind in ``meta.json``; runtime unavailable.
    """
    directory = resolve_model_dir(name_or_path, models)
    return AgeGenderModel(directory, threads=threads, device=device, runtime=runtime)
