"""Calibration of a trained model's age interval on the validation split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from common.models import AgeGenderModel, age_interval
from training.data import Arrays

#: Nominal coverage of the age interval.
INTERVAL_COVERAGE = 0.8


def calibrate_interval(model_dir: Path, val: Arrays, coverage: float = INTERVAL_COVERAGE,
                       threads: int | None = None) -> dict:
    """Calibrate the model's age interval on the validation split and write it to
    ``meta.json``.

    A model with an age distribution (compact): the smallest scale factor of
    :func:`common.models.age_interval` whose validation coverage reaches ``coverage``
    (bisection; coverage grows with the scale). An age regression (seed): the
    ``coverage`` quantile of the validation absolute errors (split conformal prediction,
    Vovk et al. 2005; Lei et al. 2018).

    Returns:
        the ``interval`` dict stored in ``meta.json``.
    """
    meta_path = model_dir / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta.pop("interval", None)
    meta_path.write_text(json.dumps(meta, indent=2))
    model = AgeGenderModel(model_dir, threads=threads)
    out = model.predict_arrays(val.x)
    age = val.age.astype(np.float64)
    if "age_probs" in out:
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
