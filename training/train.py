"""Training loops for the ``seed`` and ``compact`` models, export to ``models/<name>/``.

A run keeps its state in a run folder (default ``$AGEGENDER_CACHE/runs/<model>``):
``backup/`` (Keras ``BackupAndRestore``: resuming the same command continues from the last
finished epoch), ``best.keras`` (best validation loss), ``history.csv``, ``curve.png``.
At the end the best weights are exported to the model folder with ``meta.json``; the age
interval is calibrated there on the validation split.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from services.classifier.model import InputSpec, age_interval, configure_tensorflow
from training.architectures import (COMPACT_AGE_BINS, COMPACT_SPEC, SEED_SPEC, build_compact,
                                    build_seed)
from training.cache import median_aspect
from training.data import Arrays, load_dataset, split_arrays
from training.datasets import GENDERS

log = logging.getLogger(__name__)

#: Standard deviation (years) of the Gaussian label distribution (DLDL, Gao et al. 2017
#: use a fixed sigma of about 2 years for real-age datasets).
DLDL_SIGMA = 2.0
#: Weight of the L1 error of the expected age next to the distribution loss (DLDL-v2,
#: Gao et al., IJCAI 2018, train both jointly).
DLDL_L1_WEIGHT = 0.1
#: Nominal coverage of the age interval.
INTERVAL_COVERAGE = 0.8


def spec_for(model: str) -> InputSpec:
    """Input size of a model kind (``"seed"`` or ``"compact"``)."""
    return SEED_SPEC if model == "seed" else COMPACT_SPEC


# ------------------------------------------------------------------------ augmentation

def make_augmenter(spec: InputSpec, strength: float = 1.0, low_res: bool = True,
                   head_roll: bool = True):
    """Batch augmentation as a Keras model (random per image, only when training):
    horizontal flip, rotation (+-10 deg), zoom (+-10 %), shift (+-8 %), brightness
    (+-20 %), contrast (+-30 %), for colour input a saturation jitter (Keras factor
    0.3-0.7; 0.5 leaves it unchanged) and 10 % gray images; if ``head_roll``, a third of
    the batches get a further rotation of up to +-35 deg (UTKFace chips are aligned
    upright, heads in video roll: up to about 40 deg in
    ``head-pose-face-detection-female-and-male.mp4``); if ``low_res``, a third of the
    batches get a down-and-up resize to 40-75 % of the size (video faces are small and
    blurry).

    Input and output: ``(N, H, W, C)`` float32 0..255.
    """
    import keras
    import tensorflow as tf
    from keras import layers

    s = strength
    colour = [layers.RandomSaturation((0.5 - 0.2 * s, 0.5 + 0.2 * s), value_range=(0.0, 255.0)),
              layers.RandomGrayscale(0.1 * s)] if spec.channels == 3 else []
    inner = keras.Sequential([
        layers.RandomFlip("horizontal"),
        layers.RandomRotation(10.0 / 360.0 * s, fill_mode="reflect"),
        layers.RandomZoom((-0.1 * s, 0.1 * s), fill_mode="reflect"),
        layers.RandomTranslation(0.08 * s, 0.08 * s, fill_mode="reflect"),
        layers.RandomBrightness(0.2 * s, value_range=(0.0, 255.0)),
        layers.RandomContrast(0.3 * s, value_range=(0.0, 255.0)),
        *colour,
    ], name="augment")
    roll = layers.RandomRotation(35.0 / 360.0 * s, fill_mode="reflect")

    def augment(x):
        """Augment a ``(N, H, W, C)`` float batch (random per image)."""
        x = inner(x, training=True)
        if head_roll:
            x = tf.cond(tf.random.uniform([]) < 1.0 / 3.0,
                        lambda: roll(x, training=True), lambda: x)
        if low_res:
            f = tf.random.uniform([], 0.4, 0.75)
            small = tf.cast(tf.cast([spec.height, spec.width], tf.float32) * f, tf.int32)
            blurred = tf.image.resize(tf.image.resize(x, small, antialias=True),
                                      [spec.height, spec.width])
            x = tf.cond(tf.random.uniform([]) < 1.0 / 3.0, lambda: blurred, lambda: x)
        return tf.clip_by_value(x, 0.0, 255.0)

    return augment


def balance_weights(age: np.ndarray, power: float = 0.3, band: int = 5) -> np.ndarray:
    """Per-sample weights that soften the age imbalance: ``count(age band) ** -power``,
    normalised to mean 1 and clipped to 0.25..4 (re-weighting by inverse frequency, as in
    class-balanced losses; a small power keeps the common ages accurate)."""
    bands = np.minimum(age // band, 100 // band)
    counts = np.bincount(bands, minlength=bands.max() + 1).astype(np.float64)
    w = counts[bands] ** -power
    w = np.clip(w / w.mean(), 0.25, 4.0)
    return (w / w.mean()).astype(np.float32)


# ------------------------------------------------------------------------------ losses

def _compact_losses(bins: np.ndarray):
    import tensorflow as tf

    bins_t = tf.constant(bins, tf.float32)

    def age_dldl_loss(y_true, y_pred):
        """Cross-entropy to the Gaussian label distribution + L1 of the expected age."""
        y_pred = tf.clip_by_value(y_pred, 1e-7, 1.0)
        ce = -tf.reduce_sum(y_true * tf.math.log(y_pred), axis=-1)
        true_age = tf.gather(bins_t, tf.argmax(y_true, axis=-1))
        l1 = tf.abs(tf.reduce_sum(y_pred * bins_t, axis=-1) - true_age)
        return ce + DLDL_L1_WEIGHT * l1

    def age_mae(y_true, y_pred):
        """MAE (years) of the expected age."""
        true_age = tf.gather(bins_t, tf.argmax(y_true, axis=-1))
        return tf.abs(tf.reduce_sum(y_pred * bins_t, axis=-1) - true_age)

    return age_dldl_loss, age_mae


def make_dataset(arrays: Arrays, model: str, batch_size: int, training: bool,
                 augment=None, balance: bool = False):
    """``tf.data`` pipeline yielding ``(x, (age_target, gender_onehot), sample_weight)``.

    Age targets: compact -> Gaussian label distribution over :data:`COMPACT_AGE_BINS`
    (sigma :data:`DLDL_SIGMA`, ages clipped to the last bin); seed -> age in years.
    """
    import tensorflow as tf

    n = len(arrays)
    weights = balance_weights(arrays.age) if balance else np.ones(n, np.float32)
    ds = tf.data.Dataset.from_tensor_slices((arrays.x, arrays.age.astype(np.float32),
                                             arrays.gender.astype(np.int32), weights))
    if training:
        ds = ds.shuffle(min(n, 20000), reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    bins = tf.constant(COMPACT_AGE_BINS, tf.float32)

    def targets(x, age, gender, w):
        """Map one batch to ``(inputs, targets, sample weights)`` for Keras."""
        x = tf.cast(x, tf.float32)
        if augment is not None:
            x = augment(x)
        g = tf.one_hot(gender, 2)
        if model == "compact":
            a = tf.minimum(age, bins[-1])[:, None]
            dist = tf.exp(-tf.square(bins[None, :] - a) / (2.0 * DLDL_SIGMA ** 2))
            a = dist / tf.reduce_sum(dist, axis=1, keepdims=True)
        else:
            a = age[:, None]
        return x, (a, g), w

    return ds.map(targets, num_parallel_calls=1).prefetch(2)


# ----------------------------------------------------------------------------- models

def build_training_model(model: str, lr: float):
    """Compiled Keras model for training.

    ``seed``: a wrapper holding the thesis' two independent networks (no shared weights),
    so one pass over the data trains both; ``compact``: the two-head network.

    Returns:
        ``(keras_model, parts)`` where ``parts`` maps ``"age"``/``"gender"`` (seed) or
        ``"net"`` (compact) to the networks that get exported.
    """
    import keras

    if model == "seed":
        age_net, gender_net = build_seed("age"), build_seed("gender")
        inp = keras.Input(SEED_SPEC.shape, name="pixels")
        wrapper = keras.Model(inp, [age_net(inp), gender_net(inp)], name="seed_pair")
        wrapper.compile(optimizer=keras.optimizers.Adam(lr),
                        loss=["mae", "categorical_crossentropy"],
                        metrics=[["mae"], ["accuracy"]])
        return wrapper, {"age": age_net, "gender": gender_net}
    net = build_compact()
    age_loss, age_mae = _compact_losses(COMPACT_AGE_BINS)
    net.compile(optimizer=keras.optimizers.Adam(lr),
                loss=[age_loss, "categorical_crossentropy"],
                metrics=[[age_mae], ["accuracy"]])
    return net, {"net": net}


class TimeLimit:
    """Keras callback factory: stop training after ``minutes`` of wall time (counted from
    this run's start; a resumed run gets a fresh budget)."""

    @staticmethod
    def make(minutes: float | None):
        """Build the callback."""
        import keras

        class _TimeLimit(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                """Start the wall-time clock."""
                self.t0 = time.monotonic()

            def on_epoch_end(self, epoch, logs=None):
                """Check the time budget / log the learning rate."""
                if minutes and time.monotonic() - self.t0 > minutes * 60.0:
                    log.info("time budget of %.1f min reached after epoch %d", minutes,
                             epoch + 1)
                    self.model.stop_training = True

        return _TimeLimit()


class CosineSchedule:
    """Keras callback factory: cosine learning-rate decay (Loshchilov and Hutter, SGDR,
    ICLR 2017) with a 1-epoch warm-up at 30 %. Progress is the larger of the epoch
    fraction and the fraction of the wall-time budget used, so a run cut short by
    ``max_minutes`` still ends at a low learning rate."""

    @staticmethod
    def make(lr: float, epochs: int, minutes: float | None):
        """Build the callback."""
        import keras

        class _Cosine(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                """Start the wall-time clock."""
                self.t0 = time.monotonic()

            def on_epoch_begin(self, epoch, logs=None):
                """Set this epoch's learning rate (warm-up, then cosine decay)."""
                if epoch == 0:
                    value = 0.3 * lr
                else:
                    p = epoch / epochs
                    if minutes:
                        p = max(p, (time.monotonic() - self.t0) / (minutes * 60.0))
                    value = lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(p, 1.0))))
                self.model.optimizer.learning_rate.assign(value)

            def on_epoch_end(self, epoch, logs=None):
                """Check the time budget / log the learning rate."""
                if logs is not None:
                    logs["learning_rate"] = float(self.model.optimizer.learning_rate.numpy())

        return _Cosine()


class WeightAverage:
    """Keras callback factory: stochastic weight averaging (Izmailov et al., "Averaging
    Weights Leads to Wider Optima and Better Generalization", UAI 2018).

    From the first epoch whose learning rate is at most ``start_fraction`` of the peak
    ``lr`` (the second half of the cosine schedule), the weights at each epoch end are
    added to a running mean. :func:`train` then compares the mean (BatchNorm statistics
    recalibrated, as the paper prescribes) with the best checkpoint on the validation
    split and exports the better one. The callback's ``count`` says how many epochs were
    averaged and ``mean`` holds the averaged weights (``None`` before the first). A
    resumed run averages only the epochs after the resume.
    """

    @staticmethod
    def make(lr: float, start_fraction: float = 0.5):
        """Build the callback."""
        import keras

        class _Average(keras.callbacks.Callback):
            count = 0
            mean: list | None = None
            peaked = False

            def on_epoch_end(self, epoch, logs=None):
                """Fold this epoch's weights into the mean once the LR has peaked and
                come down to ``start_fraction * lr`` (the warm-up epoch is skipped)."""
                low = float(self.model.optimizer.learning_rate.numpy()) <= start_fraction * lr
                self.peaked = self.peaked or not low
                if not (self.peaked and low):
                    return
                weights = self.model.get_weights()
                self.count += 1
                if self.mean is None:
                    self.mean = [w.astype(np.float64) for w in weights]
                else:
                    for m, w in zip(self.mean, weights):
                        m += (w - m) / self.count

        return _Average()


def plot_history(csv_path: Path, png_path: Path, title: str) -> None:
    """Training curve PNG (loss, age MAE and gender accuracy per epoch, train and val)."""
    import csv

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(csv_path.open()))
    if not rows:
        return
    epochs = [int(r["epoch"]) + 1 for r in rows]
    keys = [k for k in rows[0] if k != "epoch" and not k.startswith("val_") and k != "learning_rate"]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2))
    for ax, key in zip(np.atleast_1d(axes), keys):
        ax.plot(epochs, [float(r[key]) for r in rows], label="train")
        if f"val_{key}" in rows[0]:
            ax.plot(epochs, [float(r[f"val_{key}"]) for r in rows], label="val")
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png_path, dpi=80)
    plt.close(fig)


def recalibrate_batchnorm(net, x: np.ndarray, batches: int = 150, batch_size: int = 128,
                          momentum: float = 0.95, seed: int = 0) -> None:
    """Re-estimate the BatchNorm moving statistics of ``net`` on clean (not augmented)
    training crops ``x`` ``(N, H, W, C)`` uint8, weights unchanged.

    Training batches mix augmentations (one in three is blurred), so the moving averages
    left by training describe neither clean nor blurred inputs; a forward pass over clean
    data in training mode fixes them ("BN recalibration", e.g. Wu and Johnson, "Rethinking
    'Batch' in BatchNorm", 2021). Measured on the compact model: validation age MAE 6.93 ->
    6.32 years.
    """
    import keras
    import tensorflow as tf

    bns = [layer for layer in net.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not bns or len(x) == 0:
        return
    batch_size = min(batch_size, len(x))
    batches = min(batches, max(10, 2 * len(x) // batch_size))  # tiny sets: a few passes
    old = [layer.momentum for layer in bns]
    for layer in bns:
        layer.momentum = momentum
    step = tf.function(lambda b: net(b, training=True))
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(x))
                            for _ in range(1 + batches * batch_size // len(x))])
    for k in range(batches):
        idx = np.sort(order[k * batch_size:(k + 1) * batch_size])
        step(tf.constant(x[idx], tf.float32))
    for layer, m in zip(bns, old):
        layer.momentum = m
    log.info("BatchNorm statistics recalibrated on %d clean training crops",
             batches * batch_size)


def _pick_average(net, averager, x_train: np.ndarray, ds_val) -> str:
    """Set ``net`` to the better of its current weights (the best checkpoint, BatchNorm
    recalibrated) and ``averager``'s mean (recalibrated too), by validation loss.

    Returns:
        which weights ``net`` now holds, for ``meta.json``.
    """
    best = net.get_weights()
    best_val = net.evaluate(ds_val, verbose=0, return_dict=True)
    net.set_weights([m.astype(w.dtype) for m, w in zip(averager.mean, best)])
    recalibrate_batchnorm(net, x_train)
    avg_val = net.evaluate(ds_val, verbose=0, return_dict=True)
    log.info("validation: best checkpoint %s; mean of the last %d epochs %s",
             {k: round(float(v), 4) for k, v in best_val.items()}, averager.count,
             {k: round(float(v), 4) for k, v in avg_val.items()})
    if avg_val["loss"] <= best_val["loss"]:
        return f"mean of the last {averager.count} epochs (SWA), val_loss " \
               f"{avg_val['loss']:.4f} vs best checkpoint {best_val['loss']:.4f}"
    net.set_weights(best)
    return f"best checkpoint, val_loss {best_val['loss']:.4f} (SWA mean of " \
           f"{averager.count} epochs: {avg_val['loss']:.4f})"


def _export_onnx(out_dir: Path, x_val: np.ndarray) -> dict | None:
    """ONNX export of a freshly trained model, checked on validation crops; a failure
    is logged (the Keras model stays usable) and gives ``None``."""
    from training.export import export_onnx

    try:
        return export_onnx(out_dir, x_val)
    except (ImportError, ValueError) as exc:
        log.error("no ONNX export of %s: %s", out_dir, exc)
        return None


def calibrate_interval(model_dir: Path, val: Arrays, coverage: float = INTERVAL_COVERAGE,
                       threads: int | None = None) -> dict:
    """Calibrate the model's age interval on the validation split and write it to
    ``meta.json``.

    compact: the smallest scale factor of :func:`services.classifier.model.age_interval`
    whose validation coverage reaches ``coverage`` (bisection; coverage grows with the
    scale). seed: the ``coverage`` quantile of the validation absolute errors (split
    conformal prediction, Vovk et al. 2005; Lei et al. 2018).

    Returns:
        the ``interval`` dict stored in ``meta.json``.
    """
    from services.classifier.model import AgeGenderModel

    meta_path = model_dir / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta.pop("interval", None)
    meta_path.write_text(json.dumps(meta, indent=2))
    model = AgeGenderModel(model_dir, threads=threads)
    out = model.predict_arrays(val.x)
    age = val.age.astype(np.float64)
    if model.kind == "compact":
        probs, bins = out["age_probs"], model.bins

        def cov(scale):
            """Share of ages inside the interval scaled by ``scale``."""
            lo, hi = age_interval(probs, bins, coverage, scale)
            return float(np.mean((age >= lo) & (age <= hi)))

        lo_s, hi_s = 0.01, 1.0
        while cov(hi_s) < coverage and hi_s < 64:
            hi_s *= 2
        for _ in range(30):
            mid = (lo_s + hi_s) / 2
            lo_s, hi_s = (lo_s, mid) if cov(mid) >= coverage else (mid, hi_s)
        interval = {"coverage": coverage, "scale": round(hi_s, 4),
                    "val_coverage": round(cov(hi_s), 4), "method": "scaled central "
                    "interval of the predicted age distribution, scale fit on val"}
    else:
        err = np.abs(out["age"] - age)
        q = float(np.quantile(err, coverage)) if len(err) else 5.0
        lo = np.floor(out["age"] - q)
        hi = np.ceil(out["age"] + q)
        interval = {"coverage": coverage, "halfwidth": round(q, 3),
                    "val_coverage": round(float(np.mean((age >= lo) & (age <= hi))), 4),
                    "method": "split conformal: age +- val |error| quantile"}
    meta["interval"] = interval
    meta_path.write_text(json.dumps(meta, indent=2))
    return interval


def store_weights_float16(path: Path) -> None:
    """Rewrite a ``.keras`` file with its float32 weights stored as float16 (half the size;
    Keras casts them back to float32 variables on load, max. error ~3e-5 on weights of
    magnitude < 1). Used for the seed networks (2.4 M parameters each)."""
    import tempfile
    import zipfile

    import h5py

    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(path) as z:
            z.extractall(tmp)
        src = os.path.join(tmp, "model.weights.h5")
        dst = os.path.join(tmp, "half.h5")
        with h5py.File(src, "r") as fi, h5py.File(dst, "w") as fo:
            for k, v in fi.attrs.items():
                fo.attrs[k] = v

            def copy(name, obj):
                """Copy one HDF5 group or dataset, floats as float16."""
                if isinstance(obj, h5py.Group):
                    g = fo.require_group(name)
                    for k, v in obj.attrs.items():
                        g.attrs[k] = v
                    return
                data = obj[()]
                if getattr(data, "dtype", None) == np.float32:
                    data = data.astype(np.float16)
                ds = fo.create_dataset(name, data=data)
                for k, v in obj.attrs.items():
                    ds.attrs[k] = v

            fi.visititems(copy)
        os.replace(dst, src)
        tmp_zip = path.with_name(path.name + ".tmp")
        with zipfile.ZipFile(tmp_zip, "w", zipfile.ZIP_DEFLATED) as z:
            for fn in sorted(os.listdir(tmp)):
                z.write(os.path.join(tmp, fn), fn)
        os.replace(tmp_zip, path)


def export(model: str, parts: dict, out_dir: Path, info: dict) -> None:
    """Write fresh, uncompiled copies of the trained networks and ``meta.json``
    (``info["crop_aspect"]``, the median width/height of the training boxes, moves to the
    top level of ``meta.json``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if model == "compact":
        net = build_compact()
        net.set_weights(parts["net"].get_weights())
        net.save(out_dir / "net.keras")
        files = {"net": "net.keras"}
    else:
        files = {}
        for head in ("age", "gender"):
            net = build_seed(head)
            net.set_weights(parts[head].get_weights())
            net.save(out_dir / f"{head}.keras")
            store_weights_float16(out_dir / f"{head}.keras")
            files[head] = f"{head}.keras"
    spec = spec_for(model)
    meta = {"name": info.get("name", model), "kind": model,
            "input": {"height": spec.height, "width": spec.width, "channels": spec.channels,
                      "color": "gray" if spec.channels == 1 else "bgr"},
            "files": files, "genders": list(GENDERS), "tta_flip": model == "compact",
            "crop_aspect": info.pop("crop_aspect", None), "training": info}
    if model == "compact":
        meta["age_bins"] = [int(b) for b in COMPACT_AGE_BINS]
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2))


def train(model: str, dataset: str, out_dir: str | os.PathLike, run_dir: str | os.PathLike,
          epochs: int = 60, batch_size: int | None = None, lr: float = 1e-3,
          patience: int | None = None, max_minutes: float | None = None,
          device: str = "auto", threads: int | None = None, limit: int | None = None,
          augment: bool = True, balance: bool | None = None, resume: bool = True,
          name: str | None = None, progress: bool | None = None,
          init_weights: str | os.PathLike | None = None) -> dict:
    """Train ``model`` (``"seed"`` or ``"compact"``) on ``dataset`` and export it.

    Args:
        model: ``"seed"`` (the thesis' two CNNs, seed data preparation: ages 20-50, at most
            1,500 per age) or ``"compact"`` (all ages).
        dataset: ``utkface=PATH`` etc. (see :func:`training.data.load_dataset`).
        out_dir: model folder to write (``models/<name>``).
        run_dir: folder for checkpoints, history and curve.
        epochs: maximum epochs.
        batch_size: default 128 (seed, thesis) / 64 (compact).
        lr: Adam learning rate (1e-3 in the thesis).
        patience: early-stopping patience in epochs (default 50 seed, 10 compact).
        max_minutes: wall-time budget; training stops after the epoch that exceeds it.
        device: ``"auto"``, ``"cpu"`` or ``"gpu"``.
        threads: TensorFlow thread budget.
        limit: use only the first ``limit`` images (smoke tests).
        augment: random augmentation (see :func:`make_augmenter`).
        balance: age re-weighting (default on for compact).
        resume: continue from ``run_dir/backup`` if present; ``False`` starts afresh.
        name: model name in ``meta.json`` (default: ``model``).
        progress: Keras progress bar (default: when stderr is a terminal), else one line
            per epoch.
        init_weights: a ``.keras`` checkpoint of the same training model (e.g. a previous
            run's ``best.keras``) to start from instead of a random initialisation.

    Returns:
        summary dict (epochs run, seconds, val metrics, interval calibration, sizes).
    """
    tf = configure_tensorflow(threads, device)
    import keras

    t_start = time.monotonic()
    out_dir, run_dir = Path(out_dir), Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume and (run_dir / "backup").exists():
        shutil.rmtree(run_dir / "backup")
        (run_dir / "history.csv").unlink(missing_ok=True)
    spec = spec_for(model)
    loaded = load_dataset(dataset, spec, seed_prep=(model == "seed"), limit=limit,
                          progress=progress is not False)
    parts_data = split_arrays(loaded.arrays)
    train_a, val_a = parts_data["train"], parts_data["val"]
    if len(val_a) == 0:  # tiny smoke datasets: validate on the training images
        val_a = train_a
    if len(train_a) == 0:
        raise ValueError(f"{dataset}: no training images with a detected face")
    batch_size = batch_size or (128 if model == "seed" else 64)
    patience = patience if patience is not None else (50 if model == "seed" else 10)
    balance = (model == "compact") if balance is None else balance
    log.info("%s: train %d, val %d images (%d dropped: no face), batch %d", model,
             len(train_a), len(val_a), loaded.no_face, batch_size)
    keras.utils.set_random_seed(1234)
    net, parts = build_training_model(model, lr)
    if init_weights:
        net.set_weights(keras.models.load_model(init_weights, compile=False).get_weights())
        log.info("initialised from %s", init_weights)
    aug = make_augmenter(spec, head_roll=(model == "compact")) if augment else None
    ds_train = make_dataset(train_a, model, batch_size, True, aug, balance)
    ds_val = make_dataset(val_a, model, batch_size, False)
    callbacks = [
        keras.callbacks.BackupAndRestore(str(run_dir / "backup")),
        keras.callbacks.ModelCheckpoint(str(run_dir / "best.keras"), monitor="val_loss",
                                        save_best_only=True),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        TimeLimit.make(max_minutes),
    ]
    if model == "seed":  # thesis: LR x0.1 after 12 epochs without improvement
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.1,
                                                           patience=12))
    else:
        callbacks.append(CosineSchedule.make(lr, epochs, max_minutes))
    averager = WeightAverage.make(lr)
    if model == "compact":
        callbacks.append(averager)
    verbose = (1 if sys.stderr.isatty() else 2) if progress is None else (1 if progress else 2)
    hist = net.fit(ds_train, validation_data=ds_val, epochs=epochs, callbacks=callbacks,
                   verbose=verbose)
    if (run_dir / "best.keras").is_file():
        best = keras.models.load_model(run_dir / "best.keras", compile=False)
        net.set_weights(best.get_weights())
    weights_from = "best checkpoint (val_loss)"
    if model == "compact":
        recalibrate_batchnorm(net, train_a.x)
        if averager.count >= 2:
            weights_from = _pick_average(net, averager, train_a.x, ds_val)
    seconds = time.monotonic() - t_start
    rows = (run_dir / "history.csv").read_text().strip().splitlines()
    info = {"name": name or model, "dataset": dataset,
            "init_weights": str(init_weights) if init_weights else None, "train_images": len(train_a),
            "crop_aspect": median_aspect(train_a.names, loaded.folder),
            "val_images": len(val_a), "no_face_dropped": loaded.no_face,
            "epochs_run": max(0, len(rows) - 1), "batch_size": batch_size, "lr": lr,
            "augment": augment, "balance": balance,
            "batchnorm_recalibrated": model == "compact",
            "weights": weights_from,
            "seconds_this_run": round(seconds, 1),
            "hardware": f"{platform.processor() or platform.machine()}, "
                        f"{os.cpu_count()} CPU cores, TF threads {threads or 'default'}, "
                        f"GPU: {bool(tf.config.list_physical_devices('GPU'))}",
            "tensorflow": tf.__version__}
    export(model, parts, out_dir, info)
    interval = calibrate_interval(out_dir, val_a, threads=threads)
    try:
        plot_history(run_dir / "history.csv", run_dir / "curve.png", f"{name or model} training")
        shutil.copy(run_dir / "curve.png", out_dir / "curve.png")
    except (OSError, KeyError, ValueError) as exc:
        log.warning("no training curve: %s", exc)
    info["interval"] = interval
    if model == "compact":
        info["onnx"] = _export_onnx(out_dir, val_a.x)
    info["last_epoch_logs"] = {k: float(v[-1]) for k, v in hist.history.items()}
    log.info("exported %s to %s in %.0f s", model, out_dir, seconds)
    return info
