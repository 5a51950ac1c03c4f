"""Losses and metrics of the compact model's age head (a distribution over age bins)."""

from __future__ import annotations

import numpy as np

#: Weight of the L1 error of the expected age next to the distribution loss (DLDL-v2,
#: Gao et al., IJCAI 2018, train both jointly).
DLDL_L1_WEIGHT = 0.1


def dldl_losses(bins: np.ndarray):
    """``(loss, mae)`` Keras functions for an age head of softmax probabilities over
    ``bins`` (years) and a label-distribution target (:func:`training.batches.make_dataset`).

    ``loss``: cross-entropy to the target distribution plus :data:`DLDL_L1_WEIGHT` times the
    L1 error of the expected age (DLDL, Gao et al., IEEE TIP 2017; DLDL-v2, IJCAI 2018).
    ``mae``: the absolute error of the expected age (years), the target's age being its
    most likely bin.
    """
    import tensorflow as tf

    bins_t = tf.constant(bins, tf.float32)

    def age_dldl_loss(y_true, y_pred):
        """Cross-entropy to the Gaussian label distribution + L1 of the expected age."""
        y_pred = tf.clip_by_value(y_pred, 1e-7, 1.0)
        ce = -tf.reduce_sum(y_true * tf.math.log(y_pred), axis=-1)
        return ce + DLDL_L1_WEIGHT * age_mae(y_true, y_pred)

    def age_mae(y_true, y_pred):
        """MAE (years) of the expected age."""
        true_age = tf.gather(bins_t, tf.argmax(y_true, axis=-1))
        return tf.abs(tf.reduce_sum(y_pred * bins_t, axis=-1) - true_age)

    return age_dldl_loss, age_mae
