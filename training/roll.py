"""Train the roll estimator of :mod:`common.models.align` (``agegender train --model roll``).

UTKFace chips are aligned upright, so the roll of a training face is known after turning
it by a random angle: the estimator learns to read that angle back (self-supervised; the
labels are the rotations, not annotations). Each epoch draws new angles, uniform in
``+-max_degrees``, together with a horizontal flip, a scale of 0.8-1.15 (a detector box
around a rolled head is wider than one around an upright head), a shift of up to 3 px,
brightness/contrast changes and, for a third of the faces, a down-and-up resize to 40-75 %
(video faces are small). Same folders, same cached 64x64 crops and same 80/10/10 split as
the age/gender models; it trains on the training split only.

The exported folder holds ``net.keras``, ``net.onnx`` and ``meta.json`` with the
validation error and ``min_degrees``: the 95th percentile of the estimate on upright
validation faces, rounded up (so about 95 % of upright faces are left untouched), at least
5 degrees.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
from pathlib import Path

import click
import numpy as np

from common.models import rotate_crop
from training.architectures import COMPACT_SPEC
from training.data import load_dataset, split_arrays

log = logging.getLogger(__name__)

#: Largest roll the estimator is trained on (degrees); larger rolls read as this value.
MAX_DEGREES = 60.0


def build_roll(max_degrees: float = MAX_DEGREES):
    """The roll estimator network: 64x64 BGR pixels (0..255) -> roll in degrees.

    Average-pooled to 32x32, three blocks of two 3x3 convolutions (16, 32, 64 channels,
    BatchNorm, ReLU) with 2x2 max pooling, then Flatten-Dense64-Dense1 scaled to
    ``+-max_degrees`` (``tanh``). About 0.1 M parameters.

    Returns:
        An uncompiled ``keras.Model`` named ``roll``: ``(N, 64, 64, 3)`` -> ``(N, 1)``.
    """
    import keras
    from keras import layers

    inp = keras.Input(COMPACT_SPEC.shape, name="pixels")
    x = layers.Rescaling(1.0 / 255.0)(inp)
    x = layers.AveragePooling2D(2)(x)
    for filters in (16, 32, 64):
        for _ in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.ReLU()(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu")(x)
    x = layers.Dropout(0.2)(x)
    x = layers.Dense(1, activation="tanh")(x)
    out = layers.Rescaling(float(max_degrees), name="roll_degrees")(x)
    return keras.Model(inp, out, name="roll")


def rolled_faces(x: np.ndarray, rng: np.random.Generator, max_degrees: float = MAX_DEGREES,
                 angles: np.ndarray | None = None, jitter: bool = True
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Turn upright faces by random (or given) angles.

    Args:
        x: ``(N, 64, 64, 3)`` uint8 upright face crops.
        rng: random generator.
        max_degrees: angles are uniform in ``+-max_degrees`` when ``angles`` is None.
        angles: ``(N,)`` degrees to use instead.
        jitter: also flip, scale, shift, change brightness/contrast and resolution.

    Returns:
        ``(rolled (N, 64, 64, 3) uint8, angles (N,) float32 degrees)``.
    """
    import cv2

    n, h, w = x.shape[:3]
    if angles is None:
        angles = rng.uniform(-max_degrees, max_degrees, n)
    angles = np.asarray(angles, np.float32)
    out = np.empty_like(x)
    for i in range(n):
        img = x[i]
        if not jitter:
            out[i] = rotate_crop(img, angles[i])
            continue
        if rng.random() < 0.5:
            img = img[:, ::-1]
        m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), float(angles[i]),
                                    float(rng.uniform(0.8, 1.15)))
        m[:, 2] += rng.uniform(-3, 3, 2)
        img = cv2.warpAffine(np.ascontiguousarray(img), m, (w, h), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT)
        if rng.random() < 1.0 / 3.0:
            side = max(8, int(round(w * rng.uniform(0.4, 0.75))))
            img = cv2.resize(cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA),
                             (w, h), interpolation=cv2.INTER_LINEAR)
        gain, bias = rng.uniform(0.7, 1.3), rng.uniform(-30, 30)
        out[i] = np.clip(img.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
    return out, angles


def _predict(net, x: np.ndarray, batch: int = 512) -> np.ndarray:
    """``(N,)`` degrees for ``(N, 64, 64, 3)`` pixels."""
    return np.concatenate([np.asarray(net(x[i:i + batch].astype(np.float32),
                                          training=False)).reshape(-1)
                           for i in range(0, len(x), batch)])


def train_roll(dataset: str, out_dir: str | os.PathLike, epochs: int = 30,
               batch_size: int = 128, lr: float = 2e-3, max_minutes: float | None = None,
               threads: int | None = None, limit: int | None = None,
               max_degrees: float = MAX_DEGREES, seed: int = 1234,
               progress: bool | None = None) -> dict:
    """Train the roll estimator and export it to ``out_dir`` (Keras + checked ONNX).

    Adam with a cosine learning-rate decay, mean absolute error in degrees; new angles and
    jitter every epoch; the epoch with the lowest validation error is kept.

    Args:
        dataset: ``utkface=FOLDER`` (see :func:`training.data.load_dataset`).
        out_dir: model folder to write.
        epochs: passes over the training split.
        batch_size: faces per step.
        lr: peak learning rate.
        max_minutes: stop after the epoch that exceeds this wall time.
        threads: TensorFlow intra-op threads.
        limit: use only the first ``limit`` images (smoke runs).
        max_degrees: training angle range (degrees).
        seed: random seed (angles, jitter, weights).
        progress: Keras progress bar (``None``: when stderr is a terminal).

    Returns:
        The ``training`` and ``validation`` dicts written to ``meta.json``.

    Raises:
        ValueError: no training images with a detected face.
    """
    import sys

    from common.models import configure_tensorflow
    from training.export import export_onnx

    tf = configure_tensorflow(threads, "auto")
    import keras

    t0 = time.monotonic()
    loaded = load_dataset(dataset, COMPACT_SPEC, limit=limit,
                          progress=progress is not False)
    parts = split_arrays(loaded.arrays)
    train_x, val_x = parts["train"].x, parts["val"].x
    if len(val_x) == 0:  # tiny smoke datasets
        val_x = train_x
    if len(train_x) == 0:
        raise ValueError(f"{dataset}: no training images with a detected face")
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    val_rolled, val_angles = rolled_faces(val_x, np.random.default_rng(seed + 1), max_degrees)
    net = build_roll(max_degrees)
    net.compile(optimizer=keras.optimizers.Adam(lr), loss="mae")
    best, best_weights, history = math.inf, None, []
    verbose = (1 if sys.stderr.isatty() else 2) if progress is None else (1 if progress else 2)
    for epoch in range(epochs):
        net.optimizer.learning_rate.assign(
            lr * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))))
        x, y = rolled_faces(train_x, rng, max_degrees)
        fit = net.fit(x, y, batch_size=batch_size, epochs=1, verbose=verbose, shuffle=True)
        val_mae = float(np.mean(np.abs(_predict(net, val_rolled) - val_angles)))
        history.append({"epoch": epoch + 1, "loss": float(fit.history["loss"][-1]),
                        "val_mae_degrees": round(val_mae, 3)})
        log.info("roll epoch %d/%d: train MAE %.2f, val MAE %.2f degrees", epoch + 1, epochs,
                 fit.history["loss"][-1], val_mae)
        if val_mae < best:
            best, best_weights = val_mae, net.get_weights()
        if max_minutes and time.monotonic() - t0 > max_minutes * 60.0:
            log.info("time budget of %.1f min reached after epoch %d", max_minutes, epoch + 1)
            break
    net.set_weights(best_weights)
    err = np.abs(_predict(net, val_rolled) - val_angles)
    upright = np.abs(_predict(net, val_x))
    min_degrees = max(5.0, float(math.ceil(np.percentile(upright, 95))))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    export_net = build_roll(max_degrees)  # uncompiled: saved without the optimizer state
    export_net.set_weights(net.get_weights())
    export_net.save(out / "net.keras")
    info = {
        "training": {"dataset": dataset, "train_images": int(len(train_x)),
                     "val_images": int(len(val_x)), "epochs_run": len(history),
                     "batch_size": batch_size, "lr": lr, "max_degrees": max_degrees,
                     "seconds": round(time.monotonic() - t0, 1),
                     "hardware": f"{platform.processor() or platform.machine()}, "
                                 f"{os.cpu_count()} CPU cores, TF threads {threads or 'default'}",
                     "tensorflow": tf.__version__, "history": history},
        "validation": {"rolled_faces": int(len(err)),
                       "mae_degrees": round(float(err.mean()), 2),
                       "p95_error_degrees": round(float(np.percentile(err, 95)), 2),
                       "upright_p95_estimate_degrees": round(float(np.percentile(upright, 95)), 2)},
    }
    meta = {"name": out.name, "kind": "roll",
            "input": {"height": COMPACT_SPEC.height, "width": COMPACT_SPEC.width,
                      "channels": COMPACT_SPEC.channels, "color": "bgr"},
            "files": {"net": "net.keras"}, "output": "roll angle, degrees, counter-clockwise",
            "max_degrees": max_degrees, "min_degrees": min_degrees, **info}
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    meta["onnx"] = export_onnx(out, val_x[:256])
    log.info("roll estimator: val MAE %.2f degrees (p95 %.2f); upright faces under %.0f "
             "degrees are left as they are; exported to %s", err.mean(),
             np.percentile(err, 95), min_degrees, out)
    return info


def rotation_benchmark(model, estimator, x: np.ndarray, age: np.ndarray, gender: np.ndarray,
                       angles=(0, 15, 30, 45), seed: int = 7) -> dict:
    """Age/gender accuracy on faces turned by fixed rolls, with and without alignment.

    Each face of ``x`` is turned by ``+-angle`` (random sign) and classified as is and
    after :meth:`common.models.RollEstimator.upright_arrays`.

    Args:
        model: an :class:`common.models.AgeGenderModel` with 64x64x3 input.
        estimator: a :class:`common.models.RollEstimator`.
        x: ``(N, 64, 64, 3)`` uint8 upright crops; ``age`` ``(N,)`` years; ``gender``
            ``(N,)`` canonical labels.
        angles: rolls to test (degrees).

    Returns:
        ``{angle: {"as_cut": {"age_mae", "gender_accuracy"}, "aligned": {...},
        "roll_mae_degrees": float}}``.
    """
    rng = np.random.default_rng(seed)
    report = {}
    for a in angles:
        signs = rng.choice([-1.0, 1.0], len(x))
        rolled, truth = rolled_faces(x, rng, angles=signs * a, jitter=False)
        aligned, est = estimator.upright_arrays(rolled)
        row = {"roll_mae_degrees": round(float(np.mean(np.abs(est - truth))), 2)}
        for key, batch in (("as_cut", rolled), ("aligned", aligned)):
            out = model.predict_arrays(batch)
            row[key] = {"age_mae": round(float(np.mean(np.abs(out["age"] - age))), 3),
                        "gender_accuracy": round(float(np.mean(out["gender"] == gender)), 4)}
        report[int(a)] = row
    return report


@click.command()
@click.option("--model", default="compact", show_default=True,
              help="Age/gender model (64x64 BGR input).")
@click.option("--roll", default="roll", show_default=True, help="Roll estimator folder.")
@click.option("--dataset", default=None, help="utkface=FOLDER [default: the shared UTKFace].")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test",
              show_default=True)
@click.option("--threads", type=int, default=None)
def main(model, roll, dataset, split, threads):
    """Rotation benchmark of MODEL with the roll estimator: writes bench.json and
    MODEL_CARD.md into the estimator's folder and prints the benchmark as JSON."""
    from common.models import load_model, load_roll_estimator
    from training.defaults import DEFAULT_DATASET
    from training.roll_card import render_card

    estimator = load_roll_estimator(roll, threads=threads)
    net = load_model(model, threads=threads, align=None)
    arrays = split_arrays(load_dataset(dataset or DEFAULT_DATASET, net.spec,
                                       progress=False).arrays)[split]
    bench = rotation_benchmark(net, estimator, arrays.x, arrays.age, arrays.gender)
    (estimator.directory / "bench.json").write_text(json.dumps(
        {"model": net.name, "split": split, "faces": len(arrays), "angles": bench}, indent=2))
    (estimator.directory / "MODEL_CARD.md").write_text(render_card(estimator.meta, bench, split))
    click.echo(json.dumps(bench, indent=2))


if __name__ == "__main__":
    main()
