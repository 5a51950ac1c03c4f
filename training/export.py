"""Writing model folders: the trained networks with ``meta.json`` (:func:`write_model`),
and a model folder's Keras networks exported to ONNX (for the ONNX Runtime path of
:mod:`common.models`) or to a TensorFlow SavedModel (TF Serving, TFLite converters).

ONNX export goes through Keras' own exporter (``Model.export(format="onnx")``, which uses
tf2onnx). Each exported network is checked against its Keras original on the same input
before ``meta.json`` lists it: the largest absolute difference of any output (softmax
probabilities, or years for the seed's age network) must stay under ``tolerance``,
otherwise the export fails and ``meta.json`` is left as it was.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from common.models import InputSpec, read_meta, resolve_model_dir, run_session
from common.models.runtimes import onnx_session
from training.datasets import GENDERS

log = logging.getLogger(__name__)

#: Largest accepted absolute difference between Keras and ONNX Runtime outputs.
#: Measured on the compact model: 4e-7 on probabilities (float32 rounding).
ONNX_TOLERANCE = 1e-4


def _load_keras(path: Path, spec: InputSpec):
    """A Keras network from ``path``, called once so that it can be exported."""
    import keras

    net = keras.models.load_model(path, compile=False)
    net(np.zeros((1, *spec.shape), np.float32), training=False)
    return net


def _check_input(spec: InputSpec, x: np.ndarray | None, n: int = 64) -> np.ndarray:
    """``x`` as float32 (0..255), or ``n`` random pixel images of the input size."""
    if x is not None and len(x):
        return np.ascontiguousarray(x[:256], np.float32)
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, *spec.shape)).astype(np.float32)


def export_onnx(model: str | os.PathLike, x: np.ndarray | None = None,
                tolerance: float = ONNX_TOLERANCE) -> dict:
    """Write ``<head>.onnx`` next to each Keras network of a model folder and list them
    in ``meta["onnx"]``.

    Args:
        model: model name under ``models/`` or a model folder.
        x: ``(N, H, W, C)`` preprocessed crops (0..255) to compare Keras and ONNX Runtime
            on; ``None``: 64 random images.
        tolerance: largest accepted absolute output difference.

    Returns:
        ``meta["onnx"]``: ``{"files": {head: file}, "max_abs_diff": float, "checked_on":
        int, "opset": int}``.

    Raises:
        ValueError: an exported network differs from its Keras original by more than
            ``tolerance`` (the model folder is left as it was).
        ImportError: ``tf2onnx``, ``onnx`` or ``onnxruntime`` missing.
    """
    import onnx

    directory = resolve_model_dir(str(model))
    meta_path = directory / "meta.json"
    meta = read_meta(directory)
    spec = InputSpec.from_meta(meta)
    x = _check_input(spec, x)
    files, worst, opset = {}, 0.0, 0
    with tempfile.TemporaryDirectory() as tmp:
        for head, keras_file in meta["files"].items():
            net = _load_keras(directory / keras_file, spec)
            tmp_path = Path(tmp) / f"{head}.onnx"
            net.export(str(tmp_path), format="onnx", verbose=False)
            ref = net(x, training=False)
            ref = ref if isinstance(ref, (list, tuple)) else [ref]
            got = run_session(onnx_session(tmp_path, threads=None), x)
            diff = max(float(np.max(np.abs(np.asarray(r) - g))) for r, g in zip(ref, got))
            if diff > tolerance:
                raise ValueError(f"{directory.name}/{head}: ONNX output differs from Keras "
                                 f"by {diff:.2e} > {tolerance:.0e}; not exported")
            worst = max(worst, diff)
            opset = max(i.version for i in onnx.load(str(tmp_path)).opset_import
                        if i.domain in ("", "ai.onnx"))
            files[head] = f"{head}.onnx"
        for head, name in files.items():  # every network passed: only now replace files
            shutil.move(str(Path(tmp) / name), directory / name)
    meta["onnx"] = {"files": files, "max_abs_diff": float(f"{worst:.3g}"),
                    "checked_on": int(len(x)), "opset": int(opset)}
    meta_path.write_text(json.dumps(meta, indent=2))
    log.info("%s: ONNX export of %s, largest difference from Keras %.2e on %d inputs",
             directory.name, sorted(files), worst, len(x))
    return meta["onnx"]


def export_saved_model(model: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Write each Keras network of a model folder as a TensorFlow SavedModel
    ``out_dir/<head>/`` (serving signature ``serve``: float32 ``(N, H, W, C)`` pixels
    0..255 in, the network's outputs out).

    Returns:
        The SavedModel folders written.
    """
    directory = resolve_model_dir(str(model))
    meta = read_meta(directory)
    spec = InputSpec.from_meta(meta)
    written = []
    for head, keras_file in meta["files"].items():
        target = Path(out_dir) / head
        if target.exists():
            shutil.rmtree(target)
        _load_keras(directory / keras_file, spec).export(str(target),
                                                        format="tf_saved_model",
                                                        verbose=False)
        written.append(target)
    log.info("%s: SavedModel(s) in %s", directory.name, [str(p) for p in written])
    return written


def export_onnx_checked(out_dir: Path, x_val: np.ndarray) -> dict | None:
    """:func:`export_onnx` of a freshly trained model, checked on validation crops; a
    failure is logged (the Keras model stays usable) and gives ``None``."""
    try:
        return export_onnx(out_dir, x_val)
    except (ImportError, ValueError) as exc:
        log.error("no ONNX export of %s: %s", out_dir, exc)
        return None


def write_model(recipe, parts: dict, out_dir: Path, info: dict) -> None:
    """Write fresh, uncompiled copies of the trained networks and ``meta.json``.

    Args:
        recipe: the family's :class:`training.recipes.Recipe` (networks, input size,
            age bins, test-time flip, float16 storage).
        parts: the trained networks ``{head: keras.Model}``.
        out_dir: the model folder (created).
        info: training facts for ``meta["training"]``; its ``crop_aspect`` (the median
            width/height of the training boxes) moves to the top level of ``meta.json``.
    """
    from training.weights import store_weights_float16

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for head, net in recipe.networks().items():
        net.set_weights(parts[head].get_weights())
        net.save(out_dir / f"{head}.keras")
        if recipe.half_weights:
            store_weights_float16(out_dir / f"{head}.keras")
        files[head] = f"{head}.keras"
    spec = recipe.spec
    meta = {"name": info.get("name", recipe.kind), "kind": recipe.kind,
            "input": {"height": spec.height, "width": spec.width, "channels": spec.channels,
                      "color": "gray" if spec.channels == 1 else "bgr"},
            "files": files, "genders": list(GENDERS), "tta_flip": recipe.tta_flip,
            "crop_aspect": info.pop("crop_aspect", None), "training": info}
    if recipe.age_bins is not None:
        meta["age_bins"] = [int(b) for b in recipe.age_bins]
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2))
