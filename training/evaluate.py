"""Evaluation: age MAE, gender accuracy, per age band and per gender, interval coverage,
latency per crop at batch 1 and 32."""

from __future__ import annotations

import logging
import math
import os
import time

import numpy as np

from common.models import AgeGenderModel
from training.data import load_dataset, split_arrays
from training.datasets import GENDERS, SPLITS

log = logging.getLogger(__name__)

#: Age bands of the report (true age).
BANDS = ("0-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+")


def band_of(age: float) -> str:
    """Ten-year age band label of :data:`BANDS`: ``"0-9"``, ``"10-19"``, ..., ``"70+"``."""
    b = int(math.floor(max(age, 0) / 10))
    return "70+" if b >= 7 else f"{10 * b}-{10 * b + 9}"


def _group(err, correct, covered, width) -> dict:
    n = len(err)
    return {"n": int(n),
            "age_mae": round(float(np.mean(err)), 3) if n else None,
            "gender_accuracy": round(float(np.mean(correct)), 4) if n else None,
            "interval_coverage": round(float(np.mean(covered)), 4)
            if n and covered is not None else None,
            "interval_width": round(float(np.mean(width)), 2)
            if n and width is not None else None}


def metrics(age_true: np.ndarray, gender_true: np.ndarray, out: dict) -> dict:
    """Metrics of predictions ``out`` (:meth:`AgeGenderModel.predict_arrays`) against the
    true ages (years) and canonical gender labels.

    Returns:
        ``{"overall": group, "per_band": {band: group}, "per_gender": {name: group}}``
        where a group is ``{n, age_mae (years), gender_accuracy (0..1),
        interval_coverage (0..1 or None), interval_width (years or None)}``.
    """
    age_true = np.asarray(age_true, np.float64)
    err = np.abs(out["age"] - age_true)
    correct = out["gender"] == np.asarray(gender_true)
    has_interval = len(out["age_lo"]) and np.all(out["age_lo"] >= 0)
    covered = ((age_true >= out["age_lo"]) & (age_true <= out["age_hi"])) \
        if has_interval else None
    width = (out["age_hi"] - out["age_lo"]) if has_interval else None

    def sub(mask):
        """Metrics of the faces selected by the boolean ``mask``."""
        return _group(err[mask], correct[mask], covered[mask] if covered is not None else None,
                      width[mask] if width is not None else None)

    bands = np.array([band_of(a) for a in age_true])
    return {"overall": sub(np.ones(len(err), bool)),
            "per_band": {b: sub(bands == b) for b in BANDS},
            "per_gender": {g: sub(np.asarray(gender_true) == i) for i, g in enumerate(GENDERS)}}


def latency(model: AgeGenderModel, repeats: int = 20) -> dict:
    """Median wall time per crop (ms) of :meth:`AgeGenderModel.predict` (preprocessing
    included) on 120x100 crops at batch 1 and batch 32 on this machine."""
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (120, 100, 3), dtype=np.uint8) for _ in range(32)]
    model.warmup(32)
    result = {}
    for n in (1, 32):
        times = []
        for _ in range(repeats if n == 1 else max(3, repeats // 4)):
            t0 = time.perf_counter()
            model.predict(crops[:n])
            times.append(time.perf_counter() - t0)
        result[f"batch{n}_ms_per_crop"] = round(1000.0 * float(np.median(times)) / n, 3)
    return result


def evaluate(model: AgeGenderModel, dataset: str, split: str = "all", limit: int | None = None,
             with_latency: bool = True, progress: bool = True) -> dict:
    """Evaluate ``model`` on a dataset spec (``utkface=PATH``: any folder of UTKFace-named
    images; faces are detected and cropped with the pipeline's SSD detector, cached).

    Args:
        split: ``"all"`` (every image: use this for a held-out folder), or ``"train"``,
            ``"val"``, ``"test"`` (this project's hash split of the folder).
        limit: first ``limit`` images by file name only.
        with_latency: also measure latency per crop.

    Returns:
        ``{"model", "runtime" ("onnx" or "keras"), "dataset", "split", "images",
        "skipped_names", "no_face",
        "evaluated", **metrics, "latency": {...}}``.
    """
    if split not in ("all", *SPLITS):
        raise ValueError(f"split must be all, train, val or test, got {split!r}")
    loaded = load_dataset(dataset, model.spec, limit=limit, progress=progress)
    arrays = loaded.arrays if split == "all" else split_arrays(loaded.arrays)[split]
    trained_on = (model.meta.get("training") or {}).get("dataset", "")
    same = os.path.realpath(trained_on.split("=", 1)[-1]) == \
        os.path.realpath(dataset.split("=", 1)[-1])
    if split in ("all", "train") and trained_on and same:
        log.warning("model %s was trained on %s: split %r includes its training images",
                    model.name, dataset, split)
    out = model.predict_arrays(arrays.x)
    report = {"model": model.name, "runtime": model.runtime, "dataset": dataset,
              "split": split,
              "images_with_label": len(arrays) + (loaded.no_face if split == "all" else 0),
              "skipped_names": loaded.skipped_names,
              "no_face_dropped": loaded.no_face, "evaluated": len(arrays)}
    report.update(metrics(arrays.age, arrays.gender, out))
    if with_latency:
        report["latency"] = latency(model)
    return report


def _fmt(v, pct: bool = False, missing: str = "-", pct_sep: str = "") -> str:
    if v is None:
        return missing
    return f"{100 * v:.1f}{pct_sep}%" if pct else f"{v:.2f}"


def _rows(r: dict, overall: str, fmt) -> list[tuple[str, list[str]]]:
    """``(group name, [n, age MAE, gender accuracy, coverage, width])`` as text, per group."""
    groups = [(overall, r["overall"])] + list(r["per_band"].items()) + \
        list(r["per_gender"].items())
    return [(name, [str(g["n"]), fmt(g["age_mae"]), fmt(g["gender_accuracy"], True),
                    fmt(g["interval_coverage"], True), fmt(g["interval_width"])])
            for name, g in groups]


def format_report(r: dict) -> str:
    """Human-readable table of an :func:`evaluate` report."""
    lines = [f"model {r['model']} ({r.get('runtime', 'keras')}) on {r['dataset']} "
             f"(split {r['split']}): "
             f"{r['evaluated']} faces evaluated, {r['no_face_dropped']} image(s) with no "
             f"detected face{' in the whole folder' if r['split'] != 'all' else ''}, "
             f"{r['skipped_names']} malformed name(s) skipped",
             f"{'group':<10}{'n':>7}{'age MAE':>10}{'gender acc':>12}{'interval cov':>14}"
             f"{'width':>8}"]
    for name, (n, mae, acc, cov, width) in _rows(r, "overall", _fmt):
        lines.append(f"{name:<10}{n:>7}{mae:>10}{acc:>12}{cov:>14}{width:>8}")
    if "latency" in r:
        lat = r["latency"]
        lines.append(f"latency per crop: batch 1 {lat['batch1_ms_per_crop']:.2f} ms, "
                     f"batch 32 {lat['batch32_ms_per_crop']:.2f} ms")
    return "\n".join(lines)


def markdown_report(r: dict) -> str:
    """Markdown table of an :func:`evaluate` report (for model cards)."""
    def fmt(v, pct=False):
        """A metric as text for the markdown table ('–' when missing)."""
        return _fmt(v, pct, missing="–", pct_sep=" ")

    lines = ["| group | n | age MAE (years) | gender accuracy | interval coverage | "
             "interval width (years) |", "|---|---:|---:|---:|---:|---:|"]
    for name, cells in _rows(r, "**overall**", fmt):
        lines.append("| " + " | ".join([name, *cells]) + " |")
    if "latency" in r:
        lat = r["latency"]
        lines.append("")
        lines.append(f"Latency per crop (preprocessing included): batch 1 "
                     f"{lat['batch1_ms_per_crop']:.2f} ms, batch 32 "
                     f"{lat['batch32_ms_per_crop']:.2f} ms.")
    return "\n".join(lines)
