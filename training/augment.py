"""Training-time augmentation of face crops (random per image, on the graph)."""

from __future__ import annotations

from common.models import InputSpec


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
