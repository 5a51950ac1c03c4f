"""Keras model definitions: the seed thesis' two CNNs and the compact two-head network.

All networks take ``(N, H, W, C)`` float32 pixels in 0..255 (what
:func:`common.models.resize_crop` makes) and rescale them in their first layer.
Only standard Keras layers are used, so the saved ``.keras`` files load without custom
objects.
"""

from __future__ import annotations

import numpy as np

from common.models import InputSpec

#: Seed input: 60 px wide, 80 px high, gray (the thesis' 60x80x1; portrait face crops).
SEED_SPEC = InputSpec(height=80, width=60, channels=1)
#: Compact input: 64x64 BGR.
COMPACT_SPEC = InputSpec(height=64, width=64, channels=3)
#: Compact age bins: whole years 0..100 (older ages are clipped to 100 for training).
COMPACT_AGE_BINS = np.arange(0, 101, dtype=np.float32)


def build_seed(head: str, spec: InputSpec = SEED_SPEC):
    """One of the seed thesis' two networks, layer for layer.

    Conv64-Conv64-MaxPool-Dropout0.3-Conv128-Conv128-MaxPool-Dropout0.3-Conv196-Dropout0.3-
    Flatten-Dense64-output, 3x3 ReLU convolutions and 2x2 pooling with Keras' defaults
    (``"valid"`` padding). ``head="age"``: ``Dense(1)`` linear output in years (trained
    with MAE); ``head="gender"``: ``Dense(2)`` softmax (categorical cross-entropy).

    Args:
        head: ``"age"`` or ``"gender"``.
        spec: input size (default 80 high x 60 wide x 1).

    Returns:
        An uncompiled ``keras.Model`` named ``seed_<head>``: input ``(N, H, W, C)`` 0..255.
    """
    import keras
    from keras import layers

    if head not in ("age", "gender"):
        raise ValueError("head must be 'age' or 'gender'")
    inp = keras.Input(spec.shape, name="pixels")
    x = layers.Rescaling(1.0 / 255.0)(inp)
    x = layers.Conv2D(64, (3, 3), activation="relu")(x)
    x = layers.Conv2D(64, (3, 3), activation="relu")(x)
    x = layers.MaxPooling2D((2, 2))(x)
    x = layers.Dropout(0.3)(x)
    x = layers.Conv2D(128, (3, 3), activation="relu")(x)
    x = layers.Conv2D(128, (3, 3), activation="relu")(x)
    x = layers.MaxPooling2D((2, 2))(x)
    x = layers.Dropout(0.3)(x)
    x = layers.Conv2D(196, (3, 3), activation="relu")(x)
    x = layers.Dropout(0.3)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu")(x)
    if head == "age":
        out = layers.Dense(1, name="age")(x)
    else:
        out = layers.Dense(2, activation="softmax", name="gender")(x)
    return keras.Model(inp, out, name=f"seed_{head}")


def _conv_block(x, filters: int, name: str, separable: bool):
    from keras import layers

    if separable:
        x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False,
                                   name=f"{name}_sep")(x)
    else:
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def build_compact(spec: InputSpec = COMPACT_SPEC, n_bins: int = len(COMPACT_AGE_BINS),
                  width: float = 1.0, separable: bool = False):
    """The compact age/gender network: one convolutional trunk, two heads.

    Trunk: Conv3x3(32, stride 2)-BN-ReLU (64 -> 32 px), then 3x3 conv blocks with BN and
    ReLU: 32 | pool | 64-64 | pool | 128-128 | pool | 256 | global average pool,
    dropout 0.25 (about 45 M multiply-adds per 64x64 crop). ``separable=True`` uses
    depthwise-separable convolutions (MobileNet, Howard et al. 2017) with 2x the channels
    instead; measured on this 2-core CPU (TF 2.21, oneDNN, under load) the plain variant
    trains at 272 vs 147 images/s and infers at 0.94 vs 1.61 ms/crop (batch 64), so plain
    3x3 convolutions give more accuracy per millisecond here and are the default.

    Heads:

    * ``age``: ``Dense(n_bins)`` softmax over whole-year age bins; the age is the
      distribution's expected value (DEX, Rothe et al., ICCVW 2015) and training matches
      a Gaussian label distribution around the true age (DLDL, Gao et al., IEEE TIP 2017)
      plus the L1 error of the expectation (DLDL-v2, Gao et al., IJCAI 2018).
    * ``gender``: ``Dense(2)`` softmax (male, female).

    Args:
        spec: input size (default 64x64x3 BGR).
        n_bins: number of age bins.
        width: channel multiplier.
        separable: depthwise-separable blocks instead of plain 3x3 convolutions.

    Returns:
        An uncompiled ``keras.Model`` named ``compact`` with outputs ``[age, gender]``.
    """
    import keras
    from keras import layers

    k = 2 if separable else 1
    c = lambda n: max(8, int(round(n * width * k)))  # noqa: E731
    inp = keras.Input(spec.shape, name="pixels")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0)(inp)
    x = layers.Conv2D(max(8, int(round(32 * width))), 3, strides=2, padding="same",
                      use_bias=False, name="stem_conv")(x)            # 32x32
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    x = _conv_block(x, c(32), "b1", separable)
    x = layers.MaxPooling2D(2, name="pool1")(x)                      # 16x16
    x = _conv_block(x, c(64), "b2a", separable)
    x = _conv_block(x, c(64), "b2b", separable)
    x = layers.MaxPooling2D(2, name="pool2")(x)                      # 8x8
    x = _conv_block(x, c(128), "b3a", separable)
    x = _conv_block(x, c(128), "b3b", separable)
    x = layers.MaxPooling2D(2, name="pool3")(x)                      # 4x4
    x = _conv_block(x, c(256), "b4", separable)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.25, name="drop")(x)
    age = layers.Dense(n_bins, activation="softmax", name="age")(x)
    gender = layers.Dense(2, activation="softmax", name="gender")(x)
    return keras.Model(inp, [age, gender], name="compact")
