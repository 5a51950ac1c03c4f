"""Calibrating how one person's per-frame answers narrow when fused: ``meta.json``
``fusion.rho``.

The sink fuses a track's classified faces (the tracking branch's ``common/fusion.py``):
the fused age is the (quality-weighted) mean of the per-frame ages, and each side of the
fused 80 % interval is the mean of that side of the per-frame intervals times
``sqrt((1 - rho) / n_eff + rho)``, the standard deviation of the mean of ``n_eff``
equally correlated errors relative to one error. ``rho``, the correlation of one
person's errors between frames, is a property of the model (and of how alike a track's
frames are), so the model carries it in ``meta.json`` ``fusion`` and every ``result``
message passes it on.

Fitting it needs several views of the same people with known ages: here a *simulated
track* per validation face, ``views`` wild-proxy versions of it (:mod:`training.wild`,
the evaluation recipe, seeds ``image_seed(name, v)``) that share what a real track keeps
from frame to frame (the scene: colour cast, grayscale, face size; ``SHARED``) and draw
the rest anew per view (blur, JPEG quality, occlusion, the detector box's error).
:func:`fusion_coverage` fuses the first ``n`` views of each track with equal weights
(``n_eff = n``) exactly as the sink does (mean age; mean distances to the interval's
ends, shrunk; whole years outwards) and measures how often the true age is inside;
:func:`fit_rho` picks the ``rho`` whose fused intervals come closest to the nominal
coverage for ``n = 2 .. views`` (least squares over ``n``; ``n = 1`` does not depend on
``rho``). The direct estimate, the mean correlation of age errors between two views of a
face, is reported beside it.

Real frames of one walking person are more alike than these views (same pose, light and
camera for a second or more), so their errors correlate more: the fitted ``rho`` is a
lower bound for video; the default is never lowered below :data:`MIN_RHO`.

``python -m training.fusion --model DIR --cache CACHE.npz`` writes ``meta.json``
``fusion`` and prints the table.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: Wild-proxy parameters a simulated track keeps from its first view (the scene).
SHARED = ("cast", "gray", "face_px")
#: The fitted rho is never written below this (real frames are more alike than views).
MIN_RHO = 0.3
#: Views per simulated track.
VIEWS = 8


def track_params(name: str, views: int = VIEWS, shared: tuple[str, ...] = SHARED) -> list[dict]:
    """Wild-proxy parameters (:func:`training.wild.sample_params`) of the ``views`` views
    of one simulated track: view ``v`` drawn from ``image_seed(name, v)``, with the
    ``shared`` keys taken from view 0."""
    from training.wild import DEFAULT_PARAMS, image_seed, sample_params

    ps = [sample_params(np.random.default_rng(image_seed(name, v)), DEFAULT_PARAMS)
          for v in range(views)]
    return [{**p, **{k: ps[0][k] for k in shared}} for p in ps]


def track_inputs(cache, index: np.ndarray, views: int = VIEWS, shape=(64, 64),
                 shared: tuple[str, ...] = SHARED) -> np.ndarray:
    """Network inputs of the simulated tracks of cached faces ``index``
    (:func:`training.distill.cache_rule` crops of the cached sources):
    ``(len(index), views, H, W, 3)`` uint8."""
    from common.models import InputSpec, resize_crop
    from training.distill import cache_rule
    from training.wild import apply_params

    rule = cache_rule(cache.meta)
    spec = InputSpec(shape[0], shape[1], 3)
    out = np.empty((len(index), views, shape[0], shape[1], 3), np.uint8)
    for j, i in enumerate(index):
        kps = None if cache.keypoints is None else cache.keypoints[i]
        for v, p in enumerate(track_params(cache.names[i], views, shared)):
            crop = apply_params(cache.sources[i], tuple(float(x) for x in cache.boxes[i]), p,
                                rule, kps)
            out[j, v] = resize_crop(crop, spec)
    return out


def fused_interval(age: np.ndarray, lo: np.ndarray, hi: np.ndarray, rho: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal-weight fusion of ``n`` views per row, as the sink fuses a track.

    Args:
        age, lo, hi: ``(M, n)`` per-view ages and interval ends (years).
        rho: correlation of the views' errors, 0..1.

    Returns:
        ``(age (M,), lo (M,), hi (M,))``: mean age, and its interval whose sides are the
        mean distances to the views' ends times ``sqrt((1 - rho) / n + rho)``, rounded
        outwards to whole years.
    """
    n = age.shape[1]
    a = age.mean(axis=1)
    shrink = math.sqrt((1.0 - rho) / n + rho)
    below = np.maximum(age - lo, 0).mean(axis=1) * shrink
    above = np.maximum(hi - age, 0).mean(axis=1) * shrink
    return (a, np.maximum(0, np.floor(a - below + 1e-9)), np.ceil(a + above - 1e-9))


def fusion_coverage(pred: dict, true_age: np.ndarray, rho: float, ns=range(1, VIEWS + 1)
                    ) -> dict[int, dict]:
    """Coverage and width of the fused interval of the first ``n`` views, per ``n``.

    Args:
        pred: ``{"age", "age_lo", "age_hi"}`` each ``(M, V)`` (M tracks, V views).
        true_age: ``(M,)`` years.

    Returns:
        ``{n: {"coverage", "width", "mae"}}``.
    """
    out = {}
    for n in ns:
        a, lo, hi = fused_interval(pred["age"][:, :n], pred["age_lo"][:, :n],
                                   pred["age_hi"][:, :n], rho)
        out[n] = {"coverage": round(float(np.mean((true_age >= lo) & (true_age <= hi))), 4),
                  "width": round(float(np.mean(hi - lo)), 2),
                  "mae": round(float(np.mean(np.abs(a - true_age))), 3)}
    return out


def fit_rho(pred: dict, true_age: np.ndarray, coverage: float = 0.8,
            grid: np.ndarray | None = None) -> tuple[float, float]:
    """The ``rho`` whose fused coverage for ``n = 2 .. V`` is closest to ``coverage``
    (least squares over ``n``, grid 0..1 step 0.01), and the direct estimate: the mean
    correlation of the age errors of two different views of a track.

    Returns:
        ``(rho_fit, rho_direct)``.
    """
    grid = np.round(np.arange(0, 1.001, 0.01), 2) if grid is None else grid
    views = pred["age"].shape[1]
    ns = range(2, views + 1)

    def loss(r):
        """Squared miss of the fused interval's coverage from the target, summed over track
        lengths, for correlation ``r``."""
        cov = fusion_coverage(pred, true_age, float(r), ns)
        return sum((c["coverage"] - coverage) ** 2 for c in cov.values())

    rho_fit = float(min(grid, key=loss))
    err = pred["age"] - true_age[:, None]
    c = np.corrcoef(err.T)
    rho_direct = float(np.mean(c[~np.eye(views, dtype=bool)]))
    return rho_fit, round(rho_direct, 3)


def gender_by_views(pred: dict, true_gender: np.ndarray, ns=range(1, VIEWS + 1)
                    ) -> dict[int, float]:
    """Accuracy of the fused gender (mean log-odds of female over the first ``n`` views,
    as the sink fuses it) per ``n``."""
    p = np.clip(pred["p_female"], 1e-4, 1 - 1e-4)
    logit = np.log(p / (1 - p))
    return {n: round(float(np.mean((logit[:, :n].mean(axis=1) > 0) == (true_gender == 1))), 4)
            for n in ns}


def calibrate(model, cache, views: int = VIEWS, limit: int | None = None,
              coverage: float | None = None) -> dict:
    """Simulated tracks of the cache's validation faces through ``model`` (an
    :class:`common.models.AgeGenderModel`), ``rho`` fitted (:func:`fit_rho`).

    Returns:
        the ``meta.json`` ``fusion`` dict: ``rho`` (written: the fit, at least
        :data:`MIN_RHO`), ``rho_fit``, ``rho_direct``, ``coverage_by_n`` (fused interval
        coverage, width and age MAE for ``n = 1 .. views`` at the written ``rho``),
        ``gender_by_n``, ``tracks``, ``views``, ``shared``, ``method``.
    """
    va = np.flatnonzero(cache.split == 1)
    if limit and len(va) > limit:
        va = va[::len(va) // limit][:limit]
    x = track_inputs(cache, va, views, (model.spec.height, model.spec.width))
    out = model.predict_arrays(x.reshape(-1, *x.shape[2:]))
    female = model.genders.index("female")
    p_female = np.where(out["gender"] == female, out["gender_confidence"],
                        1 - out["gender_confidence"])
    pred = {"age": out["age"].reshape(len(va), views),
            "age_lo": out["age_lo"].reshape(len(va), views).astype(np.float64),
            "age_hi": out["age_hi"].reshape(len(va), views).astype(np.float64),
            "p_female": p_female.reshape(len(va), views)}
    age = cache.age[va].astype(np.float64)
    target = float(coverage or model.meta.get("interval", {}).get("coverage", 0.8))
    rho_fit, rho_direct = fit_rho(pred, age, target)
    rho = max(rho_fit, MIN_RHO)
    return {"rho": rho, "rho_fit": rho_fit, "rho_direct": rho_direct,
            "coverage_target": target,
            "coverage_by_n": {str(k): v for k, v in fusion_coverage(pred, age, rho).items()},
            "coverage_by_n_rho_fit": {str(k): v for k, v in
                                      fusion_coverage(pred, age, rho_fit).items()},
            "gender_by_n": {str(k): v for k, v in
                            gender_by_views(pred, cache.gender[va]).items()},
            "tracks": int(len(va)), "views": views, "shared": list(SHARED),
            "method": "simulated tracks: wild-proxy views of each validation face sharing "
                      "the scene (training.fusion); rho fitted so the equal-weight fused "
                      "80 % interval covers 80 % for n = 2..views; at least "
                      f"{MIN_RHO} (real frames are more alike)"}


def markdown(fusion: dict) -> str:
    """The ``coverage_by_n`` table of a ``fusion`` dict as markdown."""
    lines = [f"rho {fusion['rho']} (fit {fusion['rho_fit']}, direct {fusion['rho_direct']}); "
             f"{fusion['tracks']} simulated tracks of {fusion['views']} views", "",
             "| views n | fused interval coverage | mean width (years) | fused age MAE | "
             "fused gender |", "|---:|---:|---:|---:|---:|"]
    for n, c in fusion["coverage_by_n"].items():
        lines.append(f"| {n} | {100 * c['coverage']:.1f} % | {c['width']:.1f} | "
                     f"{c['mae']:.2f} | {100 * fusion['gender_by_n'][n]:.1f} % |")
    return "\n".join(lines)


def main(argv=None) -> None:
    """``python -m training.fusion --model DIR --cache CACHE [--write]``."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--cache", required=True, help="training.distill cache (val faces)")
    parser.add_argument("--views", type=int, default=VIEWS)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--write", action="store_true", help="write meta.json fusion")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from common.models import load_model
    from training.distill import load_cache

    model = load_model(args.model, threads=args.threads)
    fusion = calibrate(model, load_cache(args.cache), args.views, args.limit)
    if args.write:
        path = model.directory / "meta.json"
        meta = json.loads(path.read_text())
        meta["fusion"] = fusion
        path.write_text(json.dumps(meta, indent=2))
    print(json.dumps(fusion, indent=1))
    print(markdown(fusion))


if __name__ == "__main__":
    main()
