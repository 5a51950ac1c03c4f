"""The training loop: one function that follows a :class:`training.recipes.Recipe`.

A run keeps its state in a run folder (default ``$AGEGENDER_CACHE/runs/<model>``):
``backup/`` (Keras ``BackupAndRestore``: resuming the same command continues from the last
finished epoch), ``best.keras`` (best validation loss), ``history.csv``, ``curve.png``.
At the end the best weights are exported to the model folder with ``meta.json``
(:func:`training.export.write_model`); the age interval is calibrated there on the
validation split (:mod:`training.calibration`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import shutil
import sys
import time
from pathlib import Path

from common.models import configure_tensorflow
from training.augment import make_augmenter
from training.batches import make_dataset
from training.cache import median_aspect
from training.calibration import calibrate_interval
from training.callbacks import TimeLimit, WeightAverage
from training.data import load_dataset, split_arrays
from training.export import export_onnx_checked, write_model
from training.plots import plot_history
from training.recipes import Recipe, recipe_for
from training.weights import pick_average, recalibrate_batchnorm

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """How long and how to run one training (what is not the family's recipe).

    Attributes:
        epochs: maximum epochs.
        batch_size: crops per step (``None``: the recipe's).
        lr: Adam learning rate (1e-3 in the thesis).
        patience: early-stopping patience in epochs (``None``: the recipe's).
        max_minutes: wall-time budget; training stops after the epoch that exceeds it.
        device: ``"auto"``, ``"cpu"`` or ``"gpu"``.
        threads: TensorFlow thread budget (``None``: its default).
        limit: use only the first ``limit`` images (smoke tests).
        augment: random augmentation (:func:`training.augment.make_augmenter`).
        balance: age re-weighting (``None``: the recipe's).
        resume: continue from ``run_dir/backup`` if present; ``False`` starts afresh.
        name: model name in ``meta.json`` (``None``: the family).
        progress: Keras progress bar (``None``: when stderr is a terminal), else one line
            per epoch.
        init_weights: a ``.keras`` checkpoint of the same training model (e.g. a previous
            run's ``best.keras``) to start from instead of a random initialisation.
    """

    epochs: int = 60
    batch_size: int | None = None
    lr: float = 1e-3
    patience: int | None = None
    max_minutes: float | None = None
    device: str = "auto"
    threads: int | None = None
    limit: int | None = None
    augment: bool = True
    balance: bool | None = None
    resume: bool = True
    name: str | None = None
    progress: bool | None = None
    init_weights: str | os.PathLike | None = None


def _callbacks(recipe: Recipe, opts: TrainOptions, run_dir: Path, patience: int) -> list:
    """Checkpoint, early stop, history, time budget and the recipe's LR schedule."""
    import keras

    return [
        keras.callbacks.BackupAndRestore(str(run_dir / "backup")),
        keras.callbacks.ModelCheckpoint(str(run_dir / "best.keras"), monitor="val_loss",
                                        save_best_only=True),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        TimeLimit.make(opts.max_minutes),
        recipe.schedule(opts.lr, opts.epochs, opts.max_minutes),
    ]


def train(model: str | Recipe, dataset: str, out_dir: str | os.PathLike,
          run_dir: str | os.PathLike, options: TrainOptions | None = None) -> dict:
    """Train a model family on ``dataset`` and export it.

    Args:
        model: a family name of :data:`training.recipes.RECIPES` (``"seed"``,
            ``"compact"``) or a :class:`training.recipes.Recipe`.
        dataset: ``utkface=PATH`` etc. (see :func:`training.data.load_dataset`).
        out_dir: model folder to write (``models/<name>``).
        run_dir: folder for checkpoints, history and curve.
        options: see :class:`TrainOptions` (defaults when ``None``).

    Returns:
        summary dict (epochs run, seconds, val metrics, interval calibration, sizes).

    Raises:
        ValueError: unknown family, or no training image with a detected face.
    """
    recipe, opts = recipe_for(model), options or TrainOptions()
    tf = configure_tensorflow(opts.threads, opts.device)
    import keras

    t_start = time.monotonic()
    out_dir, run_dir = Path(out_dir), Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not opts.resume and (run_dir / "backup").exists():
        shutil.rmtree(run_dir / "backup")
        (run_dir / "history.csv").unlink(missing_ok=True)
    loaded = load_dataset(dataset, recipe.spec, seed_prep=recipe.seed_prep, limit=opts.limit,
                          progress=opts.progress is not False)
    splits = split_arrays(loaded.arrays)
    train_a, val_a = splits["train"], splits["val"]
    if len(val_a) == 0:  # tiny smoke datasets: validate on the training images
        val_a = train_a
    if len(train_a) == 0:
        raise ValueError(f"{dataset}: no training images with a detected face")
    batch_size = opts.batch_size or recipe.batch_size
    patience = recipe.patience if opts.patience is None else opts.patience
    balance = recipe.balance if opts.balance is None else opts.balance
    log.info("%s: train %d, val %d images (%d dropped: no face), batch %d", recipe.kind,
             len(train_a), len(val_a), loaded.no_face, batch_size)
    keras.utils.set_random_seed(1234)
    parts = recipe.networks()
    net = recipe.compile(parts, opts.lr)
    if opts.init_weights:
        net.set_weights(keras.models.load_model(opts.init_weights, compile=False).get_weights())
        log.info("initialised from %s", opts.init_weights)
    aug = make_augmenter(recipe.spec, head_roll=recipe.head_roll) if opts.augment else None
    ds_train = make_dataset(train_a, batch_size, True, aug, balance, recipe.age_bins)
    ds_val = make_dataset(val_a, batch_size, False, age_bins=recipe.age_bins)
    callbacks = _callbacks(recipe, opts, run_dir, patience)
    averager = WeightAverage.make(opts.lr)
    if recipe.average_weights:
        callbacks.append(averager)
    progress = sys.stderr.isatty() if opts.progress is None else opts.progress
    hist = net.fit(ds_train, validation_data=ds_val, epochs=opts.epochs, callbacks=callbacks,
                   verbose=1 if progress else 2)
    if (run_dir / "best.keras").is_file():
        best = keras.models.load_model(run_dir / "best.keras", compile=False)
        net.set_weights(best.get_weights())
    weights_from = "best checkpoint (val_loss)"
    if recipe.average_weights:
        recalibrate_batchnorm(net, train_a.x)
        if averager.count >= 2:
            weights_from = pick_average(net, averager, train_a.x, ds_val)
    seconds = time.monotonic() - t_start
    rows = (run_dir / "history.csv").read_text().strip().splitlines()
    name = opts.name or recipe.kind
    info = {"name": name, "dataset": dataset,
            "init_weights": str(opts.init_weights) if opts.init_weights else None,
            "train_images": len(train_a),
            "crop_aspect": median_aspect(train_a.names, loaded.folder),
            "val_images": len(val_a), "no_face_dropped": loaded.no_face,
            "epochs_run": max(0, len(rows) - 1), "batch_size": batch_size, "lr": opts.lr,
            "augment": opts.augment, "balance": balance,
            "batchnorm_recalibrated": recipe.average_weights,
            "weights": weights_from,
            "seconds_this_run": round(seconds, 1),
            "hardware": f"{platform.processor() or platform.machine()}, "
                        f"{os.cpu_count()} CPU cores, TF threads {opts.threads or 'default'}, "
                        f"GPU: {bool(tf.config.list_physical_devices('GPU'))}",
            "tensorflow": tf.__version__}
    write_model(recipe, parts, out_dir, info)
    interval = calibrate_interval(out_dir, val_a, threads=opts.threads)
    try:
        plot_history(run_dir / "history.csv", run_dir / "curve.png", f"{name} training")
        shutil.copy(run_dir / "curve.png", out_dir / "curve.png")
    except (OSError, KeyError, ValueError) as exc:
        log.warning("no training curve: %s", exc)
    info["interval"] = interval
    if recipe.onnx:
        info["onnx"] = export_onnx_checked(out_dir, val_a.x)
    info["last_epoch_logs"] = {k: float(v[-1]) for k, v in hist.history.items()}
    log.info("exported %s to %s in %.0f s", recipe.kind, out_dir, seconds)
    return info
