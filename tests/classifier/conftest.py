"""Classifier test helpers: a small stand-in model for tests of batching and plumbing only.

Tests of the model itself (and the end-to-end tests) use the real ``load_model``.
"""

from __future__ import annotations

import numpy as np
import pytest


class StandInModel:
    """Deterministic stand-in with the ``AgeGenderModel`` interface.

    Age = mean blue value of the crop / 4 (years), gender by crop width parity; records
    the size of every batch it was called with.
    """

    name = "stand-in"

    def __init__(self):
        self.batches: list[int] = []
        self.trace_count = 0

    def warmup(self, max_batch: int) -> None:
        self.trace_count = 1

    def predict(self, crops):
        self.batches.append(len(crops))
        out = []
        for c in crops:
            assert c.ndim == 3 and c.shape[2] == 3 and c.dtype == np.uint8
            age = float(c[..., 0].mean()) / 4.0
            out.append({"age": age, "age_range": [int(age) - 2, int(age) + 3],
                        "gender": "female" if c.shape[1] % 2 else "male",
                        "gender_confidence": 0.9})
        return out


@pytest.fixture
def stand_in_model():
    """A fresh :class:`StandInModel`."""
    return StandInModel()
