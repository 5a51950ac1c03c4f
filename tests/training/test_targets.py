"""Training targets, class balancing and augmentation shapes."""

from __future__ import annotations

import numpy as np

from training.architectures import COMPACT_AGE_BINS, COMPACT_SPEC, SEED_SPEC
from training.augment import make_augmenter
from training.batches import balance_weights, make_dataset
from training.data import Arrays


def test_balance_weights_favour_rare_ages():
    # given many 25-year-olds and few 80-year-olds
    age = np.array([25] * 90 + [80] * 10)
    w = balance_weights(age)
    # then mean 1 and rare ages weigh more, but not by the full frequency ratio
    assert abs(w.mean() - 1.0) < 1e-5
    assert 1.0 < w[-1] / w[0] < 9.0


def test_compact_targets_are_label_distributions_centred_on_the_age():
    arrays = Arrays(np.zeros((3, 64, 64, 3), np.uint8), np.array([0, 30, 116]),
                    np.array([0, 1, 0]), ["a", "b", "c"])
    x, (age, gender), w = next(iter(make_dataset(arrays, 3, training=False,
                                                 age_bins=COMPACT_AGE_BINS)))
    age = age.numpy()
    assert age.shape == (3, len(COMPACT_AGE_BINS))
    np.testing.assert_allclose(age.sum(axis=1), 1.0, rtol=1e-5)
    assert age.argmax(axis=1).tolist() == [0, 30, 100]   # 116 clipped to the last bin
    assert gender.numpy().tolist() == [[1, 0], [0, 1], [1, 0]]
    assert x.dtype.name == "float32" and w.numpy().tolist() == [1, 1, 1]


def test_regression_targets_are_the_age_in_years_with_balance_weights():
    # given ages of which one is rare
    arrays = Arrays(np.zeros((4, 80, 60, 1), np.uint8), np.array([25, 25, 25, 80]),
                    np.array([1, 0, 1, 0]), ["a", "b", "c", "d"])
    # when batched without age bins (the seed's regression) and balanced
    _, (age, gender), w = next(iter(make_dataset(arrays, 4, training=False, balance=True)))
    # then the target is the age itself, and the rare age weighs more
    assert age.numpy().ravel().tolist() == [25, 25, 25, 80]
    assert w.numpy()[3] > w.numpy()[0]


def test_augmenter_keeps_shape_and_range():
    import tensorflow as tf
    aug = make_augmenter(COMPACT_SPEC)
    x = tf.random.uniform((8, 64, 64, 3), 0, 255)
    y = aug(x).numpy()
    assert y.shape == (8, 64, 64, 3) and y.min() >= 0 and y.max() <= 255
    assert not np.allclose(y, x.numpy())
    gray = make_augmenter(SEED_SPEC)(tf.random.uniform((4, 80, 60, 1), 0, 255)).numpy()
    assert gray.shape == (4, 80, 60, 1) and gray.min() >= 0 and gray.max() <= 255


def test_weight_average_skips_warm_up_and_averages_the_low_lr_epochs():
    import keras

    from training.callbacks import WeightAverage

    # given a one-weight model and an averager for peak LR 1.0 (start at half of it)
    net = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    net.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    avg = WeightAverage.make(lr=1.0)
    avg.set_model(net)
    # when epochs end with these learning rates and weights (warm-up, peak, decay)
    for epoch, (rate, w) in enumerate([(0.3, 100.0), (1.0, 50.0), (0.6, 40.0),
                                       (0.5, 2.0), (0.2, 4.0), (0.01, 6.0)]):
        net.optimizer.learning_rate.assign(rate)
        net.set_weights([np.array([[w]], np.float32)])
        avg.on_epoch_end(epoch)
    # then only the epochs after the peak with LR <= 0.5 are in the mean
    assert avg.count == 3
    np.testing.assert_allclose(avg.mean[0], [[4.0]])
