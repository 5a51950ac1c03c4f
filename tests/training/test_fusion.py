"""Calibration of the fused interval's rho (training/fusion.py)."""

from __future__ import annotations

import numpy as np
import pytest

from training import fusion


def simulated(rho: float, tracks: int = 4000, views: int = 8, sigma: float = 12.0,
              seed: int = 0) -> tuple[dict, np.ndarray]:
    """Tracks whose age errors have correlation ``rho`` between views and per-view 80 %
    intervals of the right width (normal errors: +-1.2816 sigma)."""
    rng = np.random.default_rng(seed)
    true = rng.uniform(20, 70, tracks)
    err = np.sqrt(rho) * rng.normal(0, sigma, (tracks, 1)) + \
        np.sqrt(1 - rho) * rng.normal(0, sigma, (tracks, views))
    age = true[:, None] + err
    h = 1.2816 * sigma
    return {"age": age, "age_lo": age - h, "age_hi": age + h,
            "p_female": np.full((tracks, views), 0.7)}, true


def test_fused_interval_is_the_sinks_mean_and_shrunk_sides():
    age = np.array([[30.0, 34.0]])
    lo, hi = np.array([[20.0, 28.0]]), np.array([[40.0, 38.0]])
    a, flo, fhi = fusion.fused_interval(age, lo, hi, rho=0.5)
    # mean age 32; mean sides 8 below, 7 above; shrink sqrt(0.5 / 2 + 0.5)
    k = np.sqrt(0.75)
    assert a[0] == 32.0
    assert flo[0] == np.floor(32 - 8 * k) and fhi[0] == np.ceil(32 + 7 * k)
    # one view gives back its own interval whatever rho is
    a1, lo1, hi1 = fusion.fused_interval(age[:, :1], lo[:, :1], hi[:, :1], rho=0.0)
    assert (a1[0], lo1[0], hi1[0]) == (30.0, 20.0, 40.0)


@pytest.mark.parametrize("rho", [0.2, 0.6, 0.9])
def test_fit_recovers_the_correlation_of_simulated_tracks(rho):
    # given tracks with a known correlation of errors between views
    pred, true = simulated(rho)
    # when rho is fitted on the fused intervals' coverage
    fit, direct = fusion.fit_rho(pred, true, 0.8)
    # then both the fit and the direct estimate find it, and the fused intervals keep 80 %
    assert fit == pytest.approx(rho, abs=0.1)
    assert direct == pytest.approx(rho, abs=0.05)
    cov = fusion.fusion_coverage(pred, true, fit)
    assert all(abs(c["coverage"] - 0.8) < 0.04 for c in cov.values()), cov
    # and the interval narrows with views unless rho is 1
    assert cov[8]["width"] < cov[1]["width"]


def test_track_views_share_the_scene_and_vary_the_rest():
    ps = fusion.track_params("30_1_0_x.jpg", views=6)
    for k in fusion.SHARED:
        assert all(p[k] == ps[0][k] for p in ps)
    assert len({p["box"]["scale"] for p in ps}) == 6


def test_gender_by_views_fuses_log_odds():
    pred = {"p_female": np.array([[0.9, 0.4, 0.4], [0.2, 0.2, 0.9]])}
    acc = fusion.gender_by_views(pred, np.array([1, 0]))
    # one view: both right; two views: first track mean logit > 0 (0.9 outweighs 0.4)
    assert acc[1] == 1.0 and acc[2] == 1.0
    # three views: first track mean(logit .9, .4, .4) > 0; second: mean(.2, .2, .9) < 0
    assert acc[3] == 1.0
