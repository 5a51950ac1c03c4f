"""What happens to trained weights before export: BatchNorm recalibration, the choice
between the best checkpoint and the weight average (SWA), and float16 storage."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


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


def pick_average(net, averager, x_train: np.ndarray, ds_val) -> str:
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
