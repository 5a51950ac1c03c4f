"""Wild-proxy evaluation: the UTKFace test split re-cut the way real detections look.

UTKFace chips are aligned, sharp, well-lit 200x200 portraits; faces in video and everyday
photos are small, blurred, compressed, badly lit and cut by a detector box that is never
exactly where training boxes were. :func:`wild_version` turns one dataset image and its
detector box into such a detection, deterministically from a seed, so that a model (or a
teacher) can be scored on "clean" and "wild" versions of the same faces.

Pipeline of :func:`wild_version` (each step a small pure function of an ``(H, W, 3)``
uint8 BGR image and explicit parameters, in :mod:`training.degrade`;
:func:`sample_params` draws the parameters from one ``numpy.random.Generator`` seeded per
image, every parameter drawn in a fixed order whether its step is applied or not, so each
step's parameters do not depend on the others' probabilities):

1. the image is placed in a larger *frame* (:func:`pad_frame`: replicated border of
   :data:`FRAME_PAD` of its longer side), so that a jittered box can reach past the chip;
2. scene: partial occlusion (:func:`occlude`), colour cast and exposure
   (:func:`colour_cast`) or grayscale (:func:`grayscale`, e.g. infrared night cameras),
   low contrast (:func:`haze`, training only);
3. optics: motion blur (:func:`motion_blur`) or defocus (:func:`defocus_blur`), sized as
   a fraction of the face box width;
4. sensor: the whole frame downscaled so the face box is ``face_px`` pixels wide
   (:func:`downscale`, area interpolation), then JPEG-compressed (:func:`jpeg`) as a
   video encoder or a photo app would;
5. detector: the box is jittered in scale, position and aspect (:func:`jitter_box`) and
   rounded to whole pixels of the small frame;
6. the crop is cut by a pluggable *crop rule* (:data:`CropRule`; the serving rule for the
   default detector's faces is :func:`blazeface_crop_rule` with the model's
   ``crop_rule``, :func:`model_crop_rule`; SSD boxes: :func:`ssd_crop_rule`, the box
   widened to the model's ``crop_aspect``), then enlarged back by the downscale factor
   (bilinear), the "and back up" of a small face.

Parameter ranges are the fields of :class:`WildParams` (defaults documented there); they
follow the issue's list (faces 16-40 px, JPEG quality 20-60, ...) and, where it says
nothing, are our choice, stated as such. Evaluation (:func:`evaluate_wild`) reports age
MAE, gender accuracy, age within one decade band, 80 % interval coverage and width,
overall, per age band, per UTKFace race x gender group and per face size, for the clean
and the wild version of each test face, and writes JSON + markdown.

``python -m training.wild --model compact --out /tmp/wild`` runs it (BlazeFace boxes and
keypoints, detected once per chip and cached; ``--detector ssd`` for SSD boxes);
``agegender evaluate --wild`` prints the same report for one model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Callable, Protocol

import cv2
import numpy as np

from training.defaults import DEFAULT_DATASET
from training.degrade import (Box, colour_cast, defocus_blur, downscale, grayscale, haze,
                              jitter_box, jpeg, motion_blur, occlude, round_box)

#: The default UTKFace folder (``$AGEGENDER_UTKFACE``, else under ``$AGEGENDER_SHARED``).
UTKFACE_FOLDER = DEFAULT_DATASET.split("=", 1)[1]

log = logging.getLogger(__name__)

#: Version of the wild-proxy recipe; part of every per-image seed, so a changed recipe
#: never silently reuses old numbers.
WILD_VERSION = "wild-v1"
#: Border around a dataset image, as a fraction of its longer side (each side).
FRAME_PAD = 0.4
#: Ten-year age bands of the reports (true age); the last one is open.
BANDS = ("0-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+")
#: UTKFace race codes (file name field 3).
RACES = ("white", "black", "asian", "indian", "others")
GENDERS = ("male", "female")


# ------------------------------------ the frame (the degradations are in training.degrade)

def pad_frame(image: np.ndarray, pad: float = FRAME_PAD) -> tuple[np.ndarray, int]:
    """``image`` in the middle of a larger frame with a replicated border.

    Args:
        image: ``(H, W, 3)`` uint8 BGR.
        pad: border on each side as a fraction of ``max(H, W)``.

    Returns:
        ``(frame (H + 2b, W + 2b, 3), b)``: add ``b`` to image coordinates to get frame
        coordinates.
    """
    b = int(round(pad * max(image.shape[:2])))
    return cv2.copyMakeBorder(image, b, b, b, b, cv2.BORDER_REPLICATE), b


# ------------------------------------------------------------------------ crop rules

class CropRule(Protocol):
    """How the serving path cuts a face crop: ``rule(frame, box, keypoints) -> crop``.

    ``frame`` ``(H, W, 3)`` uint8 BGR; ``box`` ``(x1, y1, x2, y2)`` int pixels (``x2``,
    ``y2`` exclusive), as a detector returns it; ``keypoints`` ``(6, 2)`` float pixels in
    MediaPipe's order or ``None``. Returns the ``(h, w, 3)`` uint8 crop the classifier
    would resize (:func:`common.models.resize_crop`).
    """

    def __call__(self, frame: np.ndarray, box: tuple[int, int, int, int],
                 keypoints: np.ndarray | None = None) -> np.ndarray: ...


def ssd_crop_rule(aspect: float | None = 0.883) -> CropRule:
    """Today's serving rule for SSD boxes: the box widened about its centre to ``aspect``
    = width/height (never taller; :func:`common.geometry.widen_box`, the
    ``crop_aspect`` 0.883 of ``models/compact/meta.json``) and cut from the frame; no
    keypoints used."""
    from common.geometry import widen_box

    def rule(frame, box, keypoints=None):
        """Cut the widened box."""
        x1, y1, x2, y2 = widen_box(box, aspect, frame.shape[1])
        return frame[y1:y2, x1:x2]

    return rule


def blazeface_crop_rule(rule=None) -> CropRule:
    """The serving rule for BlazeFace detections: :func:`common.crops.cut_crop` with a
    :class:`common.crops.CropRule` (a rectangle ``width`` x ``height`` box sides, centred
    ``shift_down`` sides below the box centre, turned upright by the eye line of the
    keypoints; pixels beyond the frame repeat its edge).

    Args:
        rule: a :class:`common.crops.CropRule` (default :data:`common.crops.CHIP_RULE`);
            a model's own is ``AgeGenderModel.crop_rule`` (its ``meta.json``).
    """
    from common.crops import CHIP_RULE, cut_crop

    rule = rule or CHIP_RULE

    def cut(frame, box, keypoints=None):
        """Cut (and turn upright) by the BlazeFace rule."""
        return cut_crop(frame, box, keypoints, rule=rule)

    return cut


def model_crop_rule(model, detector: str = "blazeface") -> CropRule:
    """The crop rule a model is served with for ``detector``'s faces: BlazeFace faces by
    its ``crop_rule`` (:attr:`common.models.AgeGenderModel.crop_rule`), SSD boxes widened
    to its ``crop_aspect``."""
    if detector == "blazeface":
        return blazeface_crop_rule(model.crop_rule)
    return ssd_crop_rule(model.crop_aspect)


# ------------------------------------------------------------------------ parameters

@dataclasses.dataclass(frozen=True)
class WildParams:
    """Probabilities and ranges of the wild-proxy steps (our choices where the issue
    gives none; the issue's: faces 16-40 px, JPEG quality 20-60).

    Attributes:
        p_occlude: probability of an occluder; it covers ``occlude_frac`` (fraction of
            the face box's width and height, each side drawn separately) at a random
            place on the lower half or either side of the box (hands, masks, other heads).
        p_cast: probability of a colour cast: gains per channel in ``cast_gain``, gamma
            log-uniform in ``cast_gamma``.
        p_gray: probability of a gray frame (applied after the cast).
        p_blur: probability of blur, motion or defocus with equal odds: motion length
            ``motion_frac`` of the box width, any angle; defocus sigma ``defocus_frac``
            of the box width.
        p_small: probability that the face is made small: box width ``face_px``
            (log-uniform, pixels); otherwise the image keeps its resolution.
        p_jpeg: probability of JPEG compression at quality ``jpeg_quality`` (uniform
            integers, inclusive).
        box_scale: detector box size error (log-uniform factor).
        box_shift: centre error, uniform in +-this fraction of the box size (x and y).
        box_aspect: width error, log-uniform factor in ``1/box_aspect .. box_aspect``.
        p_haze: probability of low contrast (:func:`haze`): blend ``haze_amount`` towards
            a gray ``haze_level``. Off in the evaluation recipe (``wild-v1`` predates it;
            its values are drawn after all others, so the recipe's faces are unchanged);
            training uses it (:data:`training.distill.TRAIN_PARAMS`).
    """

    p_occlude: float = 0.2
    occlude_frac: tuple[float, float] = (0.25, 0.5)
    p_cast: float = 0.5
    cast_gain: tuple[float, float] = (0.8, 1.2)
    cast_gamma: tuple[float, float] = (0.6, 1.6)
    p_gray: float = 0.1
    p_blur: float = 0.35
    motion_frac: tuple[float, float] = (0.03, 0.10)
    defocus_frac: tuple[float, float] = (0.01, 0.035)
    p_small: float = 0.75
    face_px: tuple[float, float] = (16.0, 40.0)
    p_jpeg: float = 0.75
    jpeg_quality: tuple[int, int] = (20, 60)
    box_scale: tuple[float, float] = (0.85, 1.2)
    box_shift: float = 0.1
    box_aspect: float = 1.1
    p_haze: float = 0.0
    haze_amount: tuple[float, float] = (0.15, 0.5)
    haze_level: tuple[float, float] = (90.0, 220.0)

    def only(self, step: str) -> "WildParams":
        """These ranges with every step off except ``step`` (``occlude``, ``cast``,
        ``gray``, ``blur``, ``small``, ``jpeg``, ``box``: jitter only) at probability 1;
        the box is not jittered unless ``step == "box"``."""
        off = {f: 0.0 for f in ("p_occlude", "p_cast", "p_gray", "p_blur", "p_small",
                                "p_jpeg", "p_haze")}
        steps = {"occlude", "cast", "gray", "blur", "small", "jpeg", "box", "haze"}
        if step not in steps:
            raise ValueError(f"step must be one of {sorted(steps)}, got {step!r}")
        if step != "box":
            off[f"p_{step}"] = 1.0
            off.update(box_scale=(1.0, 1.0), box_shift=0.0, box_aspect=1.0)
        return dataclasses.replace(self, **off)


#: The recipe of the wild-proxy evaluation.
DEFAULT_PARAMS = WildParams()
#: No change at all (the clean version through the same code path).
CLEAN_PARAMS = dataclasses.replace(
    WildParams(), p_occlude=0.0, p_cast=0.0, p_gray=0.0, p_blur=0.0, p_small=0.0, p_jpeg=0.0,
    box_scale=(1.0, 1.0), box_shift=0.0, box_aspect=1.0)


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def sample_params(rng: np.random.Generator, p: WildParams = DEFAULT_PARAMS) -> dict:
    """Draw one image's wild-proxy parameters.

    Every value is drawn in a fixed order whether or not its step is applied, so a
    step's values do not depend on the other steps' probabilities.

    Returns:
        A JSON-able dict: ``occlude`` (None or ``{"rect": (x1, y1, x2, y2)`` as
        fractions of the box, ``"colour"``), ``cast`` (None or ``{"gains", "gamma"}``),
        ``gray`` (bool), ``blur`` (None or ``{"kind": "motion", "frac", "angle"}`` /
        ``{"kind": "defocus", "frac"}``), ``face_px`` (None or pixels), ``jpeg`` (None
        or quality), ``box`` (``{"scale", "shift", "aspect"}``), ``haze`` (None or
        ``{"amount", "level"}``).
    """
    u = rng.uniform(size=6)
    ow, oh = rng.uniform(*p.occlude_frac, size=2)
    where = int(rng.integers(0, 3))  # 0 lower part, 1 left side, 2 right side
    opos = rng.uniform(size=2)
    ocol = tuple(int(v) for v in rng.integers(0, 256, size=3))
    if where == 0:
        ox1, oy1 = opos[0] * (1 - ow), 0.5 + opos[1] * (0.5 - min(oh, 0.5))
    elif where == 1:
        ox1, oy1 = -0.05, opos[1] * (1 - oh)
    else:
        ox1, oy1 = 1.05 - ow, opos[1] * (1 - oh)
    gains = tuple(float(g) for g in rng.uniform(*p.cast_gain, size=3))
    gamma = _loguniform(rng, *p.cast_gamma)
    motion = rng.random() < 0.5
    blur_frac = float(rng.uniform(*(p.motion_frac if motion else p.defocus_frac)))
    angle = float(rng.uniform(0.0, 180.0))
    face_px = _loguniform(rng, *p.face_px)
    quality = int(rng.integers(p.jpeg_quality[0], p.jpeg_quality[1] + 1))
    scale = _loguniform(rng, *p.box_scale)
    shift = tuple(float(s) for s in rng.uniform(-p.box_shift, p.box_shift, size=2))
    aspect = _loguniform(rng, 1.0 / p.box_aspect, p.box_aspect)
    u_haze = rng.random()          # drawn last: recipes without haze keep their values
    haze_amount = float(rng.uniform(*p.haze_amount))
    haze_level = float(rng.uniform(*p.haze_level))
    return {
        "occlude": {"rect": (float(ox1), float(oy1), float(ox1 + ow), float(oy1 + oh)),
                    "colour": ocol} if u[0] < p.p_occlude else None,
        "cast": {"gains": gains, "gamma": gamma} if u[1] < p.p_cast else None,
        "gray": bool(u[2] < p.p_gray),
        "blur": ({"kind": "motion", "frac": blur_frac, "angle": angle} if motion
                 else {"kind": "defocus", "frac": blur_frac}) if u[3] < p.p_blur else None,
        "face_px": face_px if u[4] < p.p_small else None,
        "jpeg": quality if u[5] < p.p_jpeg else None,
        "box": {"scale": scale, "shift": shift, "aspect": aspect},
        "haze": {"amount": haze_amount, "level": haze_level} if u_haze < p.p_haze else None,
    }


def image_seed(name: str, index: int = 0, salt: str = WILD_VERSION) -> int:
    """Seed of one image's ``index``-th wild version: the first 8 bytes of
    ``sha1(salt|name|index)`` (stable across machines and runs)."""
    digest = hashlib.sha1(f"{salt}|{os.path.basename(name)}|{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def apply_params(image: np.ndarray, box: Box, params: dict, crop_rule: CropRule,
                 keypoints: np.ndarray | None = None) -> np.ndarray:
    """The wild crop of ``image`` for drawn ``params`` (:func:`sample_params`); see the
    module docstring for the order of the steps.

    Args:
        image: ``(H, W, 3)`` uint8 BGR dataset image.
        box: the detector's face box in ``image`` (``x1, y1, x2, y2`` pixels).
        params: one image's parameters.
        crop_rule: the serving path's crop rule.
        keypoints: ``(K, 2)`` pixels in ``image`` or ``None``; moved with the frame and
            scaled with it (no extra noise).

    Returns:
        ``(h, w, 3)`` uint8 BGR crop at about the resolution of the original image.
    """
    frame, b = pad_frame(image)
    fb = (box[0] + b, box[1] + b, box[2] + b, box[3] + b)
    bw, bh = fb[2] - fb[0], fb[3] - fb[1]
    kps = None if keypoints is None else np.asarray(keypoints, np.float64) + b
    occ = params.get("occlude")
    if occ:
        r = occ["rect"]
        frame = occlude(frame, (fb[0] + r[0] * bw, fb[1] + r[1] * bh, fb[0] + r[2] * bw,
                                fb[1] + r[3] * bh), occ["colour"])
    if params.get("cast"):
        frame = colour_cast(frame, params["cast"]["gains"], params["cast"]["gamma"])
    if params.get("gray"):
        frame = grayscale(frame)
    if params.get("haze"):
        frame = haze(frame, params["haze"]["amount"], params["haze"]["level"])
    blur = params.get("blur")
    if blur:
        frame = motion_blur(frame, blur["frac"] * bw, blur["angle"]) \
            if blur["kind"] == "motion" else defocus_blur(frame, blur["frac"] * bw)
    factor = 1.0
    if params.get("face_px") and params["face_px"] < bw:
        factor = params["face_px"] / bw
        frame = downscale(frame, factor)
    if params.get("jpeg"):
        frame = jpeg(frame, params["jpeg"])
    j = params["box"]
    small = tuple(v * factor for v in fb)
    jb = jitter_box(small, j["scale"], j["shift"], j["aspect"])
    ib = round_box(jb, frame.shape[1], frame.shape[0])
    crop = crop_rule(frame, ib, None if kps is None else kps * factor)
    if factor < 1.0:
        h, w = crop.shape[:2]
        crop = cv2.resize(crop, (max(1, int(round(w / factor))), max(1, int(round(h / factor)))),
                          interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(crop)


def wild_version(image: np.ndarray, box: Box, seed: int,
                 crop_rule: CropRule | None = None, keypoints: np.ndarray | None = None,
                 params: WildParams = DEFAULT_PARAMS) -> np.ndarray:
    """A deterministic wild version of one detection (the same ``seed`` gives the same
    pixels).

    Args:
        image: ``(H, W, 3)`` uint8 BGR dataset image.
        box: detector box in ``image`` pixels ``(x1, y1, x2, y2)``.
        seed: e.g. :func:`image_seed` of the file name.
        crop_rule: default :func:`ssd_crop_rule` (the compact model's aspect 0.883).
        keypoints: optional ``(K, 2)`` keypoints in ``image`` pixels for the crop rule.
        params: probabilities and ranges (default :data:`DEFAULT_PARAMS`).

    Returns:
        ``(h, w, 3)`` uint8 BGR crop.
    """
    p = sample_params(np.random.default_rng(seed), params)
    return apply_params(image, box, p, crop_rule or ssd_crop_rule(), keypoints)


# ------------------------------------------------------------------------ metrics

def band_index(age) -> np.ndarray:
    """Index into :data:`BANDS` of ages (years): ``min(age // 10, 7)``."""
    return np.minimum(np.floor(np.maximum(np.asarray(age, np.float64), 0) / 10), 7
                      ).astype(np.int64)


def group_metrics(age_true, gender_true, pred: dict, mask=None) -> dict:
    """Metrics of one group of faces.

    Args:
        age_true: ``(N,)`` years. gender_true: ``(N,)`` 0 male / 1 female.
        pred: ``{"age": (N,) years, "gender": (N,) 0/1, optional "age_lo", "age_hi"
            (N,) years (interval; absent or negative: no interval)}``.
        mask: boolean ``(N,)`` selection (default all).

    Returns:
        ``{"n", "age_mae", "gender_accuracy", "within_one_band" (predicted decade band
        within one band of the true one, :data:`BANDS`), "interval_coverage",
        "interval_width"}``; values ``None`` for empty groups or missing intervals.
    """
    age_true = np.asarray(age_true, np.float64)
    mask = np.ones(len(age_true), bool) if mask is None else np.asarray(mask, bool)
    n = int(mask.sum())
    out = {"n": n, "age_mae": None, "gender_accuracy": None, "within_one_band": None,
           "interval_coverage": None, "interval_width": None}
    if not n:
        return out
    a, g = age_true[mask], np.asarray(gender_true)[mask]
    pa, pg = np.asarray(pred["age"], np.float64)[mask], np.asarray(pred["gender"])[mask]
    out["age_mae"] = round(float(np.mean(np.abs(pa - a))), 3)
    out["gender_accuracy"] = round(float(np.mean(pg == g)), 4)
    out["within_one_band"] = round(float(np.mean(np.abs(band_index(pa) - band_index(a)) <= 1)), 4)
    lo, hi = pred.get("age_lo"), pred.get("age_hi")
    if lo is not None and hi is not None:
        lo, hi = np.asarray(lo, np.float64)[mask], np.asarray(hi, np.float64)[mask]
        if np.all(lo >= 0):
            out["interval_coverage"] = round(float(np.mean((a >= lo) & (a <= hi))), 4)
            out["interval_width"] = round(float(np.mean(hi - lo)), 2)
    return out


def report(age_true, gender_true, race, pred: dict, face_px=None) -> dict:
    """:func:`group_metrics` overall, per age band, per gender in 20-69 (the issue's adult
    target), per race x gender and (``face_px`` given: ``(N,)`` pixels or NaN for native
    resolution) per face size bucket."""
    age_true = np.asarray(age_true, np.float64)
    gender_true, race = np.asarray(gender_true), np.asarray(race)
    bands = band_index(age_true)
    adult = (age_true >= 20) & (age_true < 70)
    r = {"overall": group_metrics(age_true, gender_true, pred),
         "adults_20_69": group_metrics(age_true, gender_true, pred, adult),
         "per_band": {b: group_metrics(age_true, gender_true, pred, bands == i)
                      for i, b in enumerate(BANDS)},
         "per_race_gender": {f"{RACES[ra]} {GENDERS[ge]}":
                             group_metrics(age_true, gender_true, pred,
                                           (race == ra) & (gender_true == ge))
                             for ra in range(len(RACES)) for ge in range(2)},
         "per_race_gender_adults": {f"{RACES[ra]} {GENDERS[ge]}":
                                    group_metrics(age_true, gender_true, pred,
                                                  (race == ra) & (gender_true == ge) & adult)
                                    for ra in range(len(RACES)) for ge in range(2)}}
    if face_px is not None:
        fp = np.asarray(face_px, np.float64)
        buckets = {"16-24 px": (fp >= 0) & (fp < 24), "24-32 px": (fp >= 24) & (fp < 32),
                   "32-40 px": (fp >= 32) & (fp <= 40), "native": np.isnan(fp)}
        r["per_face_size"] = {k: group_metrics(age_true, gender_true, pred, m)
                              for k, m in buckets.items()}
    return r


# ------------------------------------------------------------------------ data

@dataclasses.dataclass
class Faces:
    """Dataset faces with their detector boxes (images without a face are left out).

    Attributes:
        paths, names: image files.
        age: ``(N,)`` years. gender: ``(N,)`` 0/1. race: ``(N,)`` UTKFace race codes.
        boxes: ``(N, 4)`` int detector boxes in image pixels (SSD:
            :func:`training.cache.detect_boxes`; BlazeFace: :func:`blazeface_boxes`).
        no_face: images of the split the detector found no face in.
        keypoints: ``(N, 6, 2)`` float keypoints (BlazeFace) or ``None`` (SSD).
    """

    paths: list[str]
    names: list[str]
    age: np.ndarray
    gender: np.ndarray
    race: np.ndarray
    boxes: np.ndarray
    no_face: int
    keypoints: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, idx) -> "Faces":
        """Rows ``idx`` (int array)."""
        idx = np.asarray(idx, np.int64)
        return Faces([self.paths[i] for i in idx], [self.names[i] for i in idx],
                     self.age[idx], self.gender[idx], self.race[idx], self.boxes[idx],
                     self.no_face, None if self.keypoints is None else self.keypoints[idx])


def blazeface_boxes(paths: list[str], folder: str | os.PathLike, pad: float = 0.5
                    ) -> dict[str, tuple[np.ndarray, np.ndarray] | None]:
    """Highest-confidence BlazeFace box and keypoints of each image, cached in
    ``$AGEGENDER_CACHE/blazeface-<key>.npz``. Each image is centred on a black border of
    ``pad`` x its longer side before detection (as the detector branch's crop-rule study
    did on UTKFace chips), and the results are mapped back to image pixels.

    Returns:
        ``{file name: (box (4,) float, keypoints (6, 2) float) or None}``.

    Raises:
        ImportError: no ``common.detectors.blazeface``.
    """
    from training.cache import cache_dir

    key = hashlib.sha1(f"{Path(folder).resolve()}|pad={pad}".encode()).hexdigest()[:12]
    path = cache_dir() / f"blazeface-{key}.npz"
    found: dict = {}
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            for n, b, k in zip(z["names"], z["boxes"], z["keypoints"]):
                found[str(n)] = None if not np.isfinite(b).all() else (b, k)
    todo = [p for p in paths if os.path.basename(p) not in found]
    if todo:
        from common.detectors.blazeface import BlazeFaceDetector

        det = BlazeFaceDetector(threads=1)
        for i, p in enumerate(todo):
            image = cv2.imread(p, cv2.IMREAD_COLOR)
            found[os.path.basename(p)] = None
            if image is None:
                continue
            b = int(round(pad * max(image.shape[:2])))
            dets = det.detect(cv2.copyMakeBorder(image, b, b, b, b, cv2.BORDER_CONSTANT))
            if dets:
                d = max(dets, key=lambda d: d.confidence)
                found[os.path.basename(p)] = (np.asarray(d.box, np.float64) - b,
                                              np.asarray(d.keypoints, np.float64) - b)
            if (i + 1) % 500 == 0:
                log.info("BlazeFace: %d / %d images", i + 1, len(todo))
        names = sorted(found)
        nan_b, nan_k = np.full(4, np.nan), np.full((6, 2), np.nan)
        np.savez(path, names=np.array(names),
                 boxes=np.array([found[n][0] if found[n] else nan_b for n in names]),
                 keypoints=np.array([found[n][1] if found[n] else nan_k for n in names]))
    return {os.path.basename(p): found[os.path.basename(p)] for p in paths}


def load_faces(folder: str | os.PathLike, split: str = "test", limit: int | None = None,
               progress: bool = False, detector: str = "ssd") -> Faces:
    """UTKFace faces of one split (:func:`training.datasets.split_of`) with their cached
    detector boxes.

    Args:
        folder: UTKFace folder.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        limit: keep every ``len // limit``-th image (an even subset across the sorted
            names, taken before detection, so a small subset detects only its images).
        detector: ``"ssd"`` (the training crops' detector, :func:`training.cache.detect_boxes`,
            boxes only) or ``"blazeface"`` (:func:`blazeface_boxes`, with keypoints).
    """
    from training.datasets import load_utkface, parse_utkface_name, split_of

    samples, _ = load_utkface(folder)
    if split != "all":
        samples = [s for s in samples if split_of(s.name) == split]
    if limit and len(samples) > limit:
        samples = samples[::len(samples) // limit][:limit]
    kps = None
    if detector == "ssd":
        from training.cache import detect_boxes

        raw = detect_boxes([s.path for s in samples], folder, progress=progress)
        boxes = {n: (np.asarray(v[:4]), None) if v[4] > 0 else None for n, v in raw.items()}
    elif detector == "blazeface":
        boxes = blazeface_boxes([s.path for s in samples], folder)
    else:
        raise ValueError(f"detector must be 'ssd' or 'blazeface', got {detector!r}")
    keep = [s for s in samples if boxes[s.name] is not None]
    no_face = len(samples) - len(keep)
    if detector == "blazeface":
        kps = np.array([boxes[s.name][1] for s in keep], np.float64).reshape(-1, 6, 2)
    return Faces([s.path for s in keep], [s.name for s in keep],
                 np.array([s.age for s in keep], np.int64),
                 np.array([s.gender for s in keep], np.int64),
                 np.array([parse_utkface_name(s.name)[2] for s in keep], np.int64),
                 np.array([boxes[s.name][0] for s in keep], np.float64).reshape(-1, 4),
                 no_face, kps)


def make_crops(faces: Faces, wild: bool, crop_rule: CropRule | None = None,
               params: WildParams = DEFAULT_PARAMS, index: int = 0
               ) -> tuple[list[np.ndarray], np.ndarray]:
    """Crops of ``faces``: clean (the crop rule on the detector box) or wild
    (:func:`wild_version` with :func:`image_seed` ``(name, index)``).

    Returns:
        ``(crops, face_px (N,) pixels of the face box width, NaN at native resolution)``.
    """
    rule = crop_rule or ssd_crop_rule()
    crops, face_px = [], np.full(len(faces), np.nan)
    for i, (path, name, box) in enumerate(zip(faces.paths, faces.names, faces.boxes)):
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise OSError(f"cannot read {path}")
        p = sample_params(np.random.default_rng(image_seed(name, index)),
                          params if wild else CLEAN_PARAMS)
        crops.append(apply_params(image, tuple(box), p, rule,
                                  None if faces.keypoints is None else faces.keypoints[i]))
        if p["face_px"] and p["face_px"] < box[2] - box[0]:
            face_px[i] = p["face_px"]
    return crops, face_px


def wild_face_px(faces: Faces, params: WildParams = DEFAULT_PARAMS, index: int = 0
                 ) -> np.ndarray:
    """``(N,)`` face box width (pixels) of each face's wild version, NaN where it keeps
    its native resolution (the ``face_px`` that :func:`make_crops` returns, without
    cutting any crop)."""
    out = np.full(len(faces), np.nan)
    for i, (name, box) in enumerate(zip(faces.names, faces.boxes)):
        p = sample_params(np.random.default_rng(image_seed(name, index)), params)
        if p["face_px"] and p["face_px"] < box[2] - box[0]:
            out[i] = p["face_px"]
    return out


# ------------------------------------------------------------------------ predictors

Predictor = Callable[[list], dict]


def student_predictor(model) -> Predictor:
    """Wrap an :class:`common.models.AgeGenderModel` as a predictor:
    crops -> ``{"age", "gender" (0 male / 1 female), "age_lo", "age_hi", "p_female"}``."""
    def predict(crops):
        """Run the model as the classifier does (resize, flip TTA)."""
        out = model.predict(crops)
        return {"age": np.array([o["age"] for o in out]),
                "gender": np.array([int(o["gender"] == "female") for o in out]),
                "p_female": np.array([o["gender_confidence"] if o["gender"] == "female"
                                      else 1 - o["gender_confidence"] for o in out]),
                "age_lo": np.array([o["age_range"][0] if o["age_range"] else -1
                                    for o in out]),
                "age_hi": np.array([o["age_range"][1] if o["age_range"] else -1
                                    for o in out])}

    return predict


def opinion_predictor(predictor: Predictor, opinion, weight: float | None = None
                      ) -> Predictor:
    """``predictor`` with its gender merged with a second opinion, as the classifier
    merges them (:func:`common.models.dlib_descriptor.combine_gender`: the weighted mean
    of the two logits, ``weight`` the opinion's; default
    :data:`common.models.dlib_descriptor.OPINION_WEIGHT`); faces the opinion has no answer
    for keep the model's, counted in ``"failed"``.

    The returned predictor takes ``(crops, opinion_crops=None, face_px=None)``: the
    opinion reads ``opinion_crops`` (cut by its own rule, as the classifier cuts them) or,
    without them, the model's crops; faces whose ``face_px`` (the face's width in the
    simulated frame, NaN at native size) is under the opinion's ``min_face_px`` keep the
    model's answer, as the classifier keeps it for small boxes."""
    from common.models.dlib_descriptor import OPINION_WEIGHT, logits_of_large_faces

    w = OPINION_WEIGHT if weight is None else float(weight)

    def predict(crops, opinion_crops=None, face_px=None):
        """The model's answer, its P(female) merged with the opinion's."""
        out = dict(predictor(crops))
        theirs = crops if opinion_crops is None else opinion_crops
        logits = logits_of_large_faces(
            opinion, theirs, np.full(len(theirs), np.nan) if face_px is None else face_px)
        p = np.clip(out["p_female"].astype(np.float64), 1e-4, 1 - 1e-4)
        z = (1 - w) * np.log(p / (1 - p)) + w * logits
        pf = np.where(np.isfinite(logits), 1 / (1 + np.exp(-np.nan_to_num(z))), p)
        out.update(p_female=pf, gender=(pf > 0.5).astype(np.int64),
                   failed=~np.isfinite(logits))
        return out

    return predict


def evaluate_wild(predictor: Predictor, faces: Faces, crop_rule: CropRule | None = None,
                  params: WildParams = DEFAULT_PARAMS, batch: int = 64,
                  steps: tuple[str, ...] = (), opinion_rule: CropRule | None = None) -> dict:
    """Clean vs wild-proxy report of one predictor on ``faces``.

    Args:
        predictor: crops -> dict (:func:`student_predictor`, or a teacher's); may add
            ``"failed"`` (N,) bool for faces it could not read (they still count, with
            its fallback answer).
        steps: also evaluate each listed step alone (:meth:`WildParams.only`).
        opinion_rule: a second crop rule; when given, each face is also cut by it (the
            same wild version) and the predictor is called as ``predictor(crops,
            opinion_crops, face_px)`` (:func:`opinion_predictor`).

    Returns:
        ``{"clean": report, "wild": report, "only": {step: report}, "seconds": {...},
        "failed": {"clean": n, "wild": n}}``.
    """
    def run(wild, p):
        """Predictions and timing of ``predictor`` on the faces cut clean or wild
        (``wild``) with degradation probability ``p``."""
        crops, face_px = make_crops(faces, wild, crop_rule, p)
        extra = make_crops(faces, wild, opinion_rule, p)[0] if opinion_rule else None
        t0 = time.perf_counter()
        parts = [predictor(crops[i:i + batch]) if extra is None else
                 predictor(crops[i:i + batch], extra[i:i + batch], face_px[i:i + batch])
                 for i in range(0, len(crops), batch)]
        dt = time.perf_counter() - t0
        pred = {k: np.concatenate([q[k] for q in parts]) for k in parts[0]}
        return pred, face_px, dt

    out = {"n": len(faces), "no_face": faces.no_face, "only": {}, "seconds": {},
           "failed": {}}
    for label, wild, p in [("clean", False, params), ("wild", True, params)] + \
            [(f"only:{s}", True, params.only(s)) for s in steps]:
        pred, face_px, dt = run(wild, p)
        r = report(faces.age, faces.gender, faces.race, pred,
                   face_px if wild else None)
        if label.startswith("only:"):
            out["only"][label[5:]] = r
        else:
            out[label] = r
        out["seconds"][label] = round(dt, 2)
        out["ms_per_face"] = out.get("ms_per_face") or round(1000 * dt / max(1, len(faces)), 2)
        out["failed"][label] = int(np.sum(pred["failed"])) if "failed" in pred else 0
    return out


def evaluate_served(model, faces: Faces, detector: str = "blazeface", opinion=None,
                    steps: tuple[str, ...] = ()) -> dict:
    """:func:`evaluate_wild` of ``model`` as the classifier serves it: faces cut by the
    model's crop rule for ``detector`` (:func:`model_crop_rule`) and, with ``opinion``
    (:func:`common.models.dlib_descriptor.load_opinion`), its gender merged with the
    opinion's at the model's weight (:func:`common.models.dlib_descriptor.opinion_weight`),
    the opinion reading its own crop rule's cut of the same (clean or wild) face, and
    faces under the opinion's ``min_face_px`` keeping the model's answer.

    Raises:
        ValueError: an opinion with ``detector`` other than ``"blazeface"`` (the opinion's
            crops are cut from BlazeFace boxes and keypoints, as served).
    """
    predictor, opinion_rule = student_predictor(model), None
    if opinion is not None:
        from common.models.dlib_descriptor import opinion_weight

        if detector != "blazeface":
            raise ValueError("the second opinion reads crops of BlazeFace boxes, as the "
                             "classifier does: use the blazeface detector")
        predictor = opinion_predictor(predictor, opinion,
                                      opinion_weight(model.meta, opinion.name))
        opinion_rule = blazeface_crop_rule(opinion.rule)
    return evaluate_wild(predictor, faces, model_crop_rule(model, detector), steps=steps,
                         opinion_rule=opinion_rule)


# ------------------------------------------------------------------------ markdown

def _f(v, pct=False):
    if v is None:
        return "–"
    return f"{100 * v:.1f} %" if pct else f"{v:.2f}"


def markdown(results: dict[str, dict]) -> str:
    """Markdown tables of :func:`evaluate_wild` results, one column pair per predictor
    (clean | wild) for each metric; sections: overall and adults, per age band, per race
    x gender, per face size, and each step alone when present."""
    names = list(results)
    lines = []

    def table(title, rows):
        """Append a markdown table titled ``title`` with one row per group of ``rows`` to
        the report."""
        lines.extend([f"### {title}", ""])
        head = "| group | n | " + " | ".join(
            f"{m} MAE clean / wild | {m} gender clean / wild | {m} ±1 band clean / wild | "
            f"{m} 80 % cov. (width) clean / wild" for m in names) + " |"
        lines.append(head)
        lines.append("|---|---:|" + "---:|---:|---:|---:|" * len(names))
        for label, getter in rows:
            cells = []
            n = None
            for m in names:
                c, w = getter(results[m]["clean"]), getter(results[m]["wild"])
                n = n or (c or {}).get("n")
                if c is None or w is None:
                    cells += ["–"] * 4
                    continue
                cells.append(f"{_f(c['age_mae'])} / {_f(w['age_mae'])}")
                cells.append(f"{_f(c['gender_accuracy'], True)} / "
                             f"{_f(w['gender_accuracy'], True)}")
                cells.append(f"{_f(c['within_one_band'], True)} / "
                             f"{_f(w['within_one_band'], True)}")
                cells.append(f"{_f(c['interval_coverage'], True)} ({_f(c['interval_width'])})"
                             f" / {_f(w['interval_coverage'], True)} "
                             f"({_f(w['interval_width'])})")
            lines.append(f"| {label} | {n} | " + " | ".join(cells) + " |")
        lines.append("")

    any_r = results[names[0]]["clean"]
    table("Overall", [("overall", lambda r: r["overall"]),
                      ("adults 20-69", lambda r: r["adults_20_69"])])
    table("Per age band", [(b, lambda r, b=b: r["per_band"][b]) for b in BANDS])
    table("Per race x gender (all ages)",
          [(g, lambda r, g=g: r["per_race_gender"][g]) for g in any_r["per_race_gender"]])
    table("Per race x gender (ages 20-69)",
          [(g, lambda r, g=g: r["per_race_gender_adults"][g])
           for g in any_r["per_race_gender_adults"]])
    lines.extend(["### Wild version per face size (box width after downscaling)", "",
                  "| size | n | " + " | ".join(f"{m} MAE | {m} gender | {m} ±1 band"
                                                 for m in names) + " |",
                  "|---|---:|" + "---:|---:|---:|" * len(names)])
    sizes = next((r["wild"]["per_face_size"] for r in results.values()
                  if "per_face_size" in r["wild"]), {})
    for k in sizes:
        row = [results[m]["wild"].get("per_face_size", {}).get(k) for m in names]
        lines.append(f"| {k} | {sizes[k]['n']} | " + " | ".join(
            f"{_f(g['age_mae'])} | {_f(g['gender_accuracy'], True)} | "
            f"{_f(g['within_one_band'], True)}" if g else "– | – | –" for g in row) + " |")
    lines.append("")
    steps = [s for s in results[names[0]].get("only", {})]
    if steps:
        lines.extend(["### One step at a time (probability 1, overall)", "",
                      "| step | " + " | ".join(f"{m} MAE | {m} gender | {m} ±1 band"
                                              for m in names) + " |",
                      "|---|" + "---:|---:|---:|" * len(names)])
        for s in steps:
            row = [results[m]["only"].get(s, {}).get("overall") for m in names]
            lines.append(f"| {s} | " + " | ".join(
                f"{_f(g['age_mae'])} | {_f(g['gender_accuracy'], True)} | "
                f"{_f(g['within_one_band'], True)}" if g else "– | – | –" for g in row) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> None:
    """``python -m training.wild --model compact-wild [--model seed] [--second-opinion dlib]
    --out DIR``."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", default=None,
                        help="model name or folder (repeatable; default: the default model)")
    parser.add_argument("--dataset", default=UTKFACE_FOLDER)
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", default="occlude,cast,gray,blur,small,jpeg,box",
                        help="steps to evaluate one at a time (comma list, '' for none)")
    parser.add_argument("--detector", default="blazeface", choices=("ssd", "blazeface"),
                        help="boxes and crop rule: blazeface (the default detector; each "
                             "model's meta.json crop_rule) or ssd (boxes widened to "
                             "crop_aspect)")
    parser.add_argument("--second-opinion", default="none", choices=("none", "dlib"),
                        help="merge the classifier's gender second opinion, on its own crops "
                             "and with the model's weight, as served (BlazeFace only)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from common.models import DEFAULT_MODEL, load_model
    from common.models.dlib_descriptor import load_opinion

    opinion = load_opinion(args.second_opinion)

    faces = load_faces(args.dataset, args.split, args.limit, detector=args.detector)
    steps = tuple(s for s in args.steps.split(",") if s)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.model or [DEFAULT_MODEL]:
        model = load_model(name, threads=args.threads)
        try:
            results[model.name] = evaluate_served(model, faces, args.detector, opinion, steps)
        except ValueError as exc:
            raise SystemExit(str(exc)) from None
        log.info("%s: clean %s wild %s", model.name, results[model.name]["clean"]["overall"],
                 results[model.name]["wild"]["overall"])
        results[model.name]["detector"] = args.detector
        (out / f"wild-{model.name}.json").write_text(json.dumps(results[model.name], indent=1))
    (out / "wild.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
