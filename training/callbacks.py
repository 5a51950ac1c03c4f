"""Keras callbacks of the training loop: a wall-time budget, cosine learning-rate decay,
stochastic weight averaging, and the thesis' plateau schedule."""

from __future__ import annotations

import logging
import math
import time

import numpy as np

log = logging.getLogger(__name__)


def plateau_schedule(lr: float, epochs: int, minutes: float | None):
    """The seed thesis' schedule: learning rate x0.1 after 12 epochs without a better
    validation loss (``lr``, ``epochs`` and ``minutes`` unused; same signature as
    :meth:`CosineSchedule.make`)."""
    import keras

    return keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.1, patience=12)


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
