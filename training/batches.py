"""The training data pipeline: ``tf.data`` batches of crops with age/gender targets and
per-sample weights."""

from __future__ import annotations

import numpy as np

from training.data import Arrays

#: Standard deviation (years) of the Gaussian label distribution (DLDL, Gao et al. 2017
#: use a fixed sigma of about 2 years for real-age datasets).
DLDL_SIGMA = 2.0


def balance_weights(age: np.ndarray, power: float = 0.3, band: int = 5) -> np.ndarray:
    """Per-sample weights that soften the age imbalance: ``count(age band) ** -power``,
    normalised to mean 1 and clipped to 0.25..4 (re-weighting by inverse frequency, as in
    class-balanced losses; a small power keeps the common ages accurate)."""
    bands = np.minimum(age // band, 100 // band)
    counts = np.bincount(bands, minlength=bands.max() + 1).astype(np.float64)
    w = counts[bands] ** -power
    w = np.clip(w / w.mean(), 0.25, 4.0)
    return (w / w.mean()).astype(np.float32)


def make_dataset(arrays: Arrays, batch_size: int, training: bool, augment=None,
                 balance: bool = False, age_bins: np.ndarray | None = None):
    """``tf.data`` pipeline yielding ``(x, (age_target, gender_onehot), sample_weight)``.

    Args:
        arrays: crops ``(N, H, W, C)`` uint8 with ages (years) and canonical genders.
        batch_size: crops per batch.
        training: shuffle (each epoch anew).
        augment: a function of a float batch (:func:`training.augment.make_augmenter`).
        balance: weight samples by :func:`balance_weights` (else all 1).
        age_bins: ``(K,)`` bin ages (years): the age target is a Gaussian label
            distribution over them (sigma :data:`DLDL_SIGMA`, ages clipped to the last
            bin); ``None``: the age in years.
    """
    import tensorflow as tf

    n = len(arrays)
    weights = balance_weights(arrays.age) if balance else np.ones(n, np.float32)
    ds = tf.data.Dataset.from_tensor_slices((arrays.x, arrays.age.astype(np.float32),
                                             arrays.gender.astype(np.int32), weights))
    if training:
        ds = ds.shuffle(min(n, 20000), reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    bins = None if age_bins is None else tf.constant(age_bins, tf.float32)

    def targets(x, age, gender, w):
        """Map one batch to ``(inputs, targets, sample weights)`` for Keras."""
        x = tf.cast(x, tf.float32)
        if augment is not None:
            x = augment(x)
        g = tf.one_hot(gender, 2)
        if bins is None:
            return x, (age[:, None], g), w
        a = tf.minimum(age, bins[-1])[:, None]
        dist = tf.exp(-tf.square(bins[None, :] - a) / (2.0 * DLDL_SIGMA ** 2))
        return x, (dist / tf.reduce_sum(dist, axis=1, keepdims=True), g), w

    return ds.map(targets, num_parallel_calls=1).prefetch(2)
