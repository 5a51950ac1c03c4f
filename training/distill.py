"""Distillation from teachers on wild-augmented crops, with a compact cache for a GPU run.

Two halves that never need each other's dependencies:

1. **Cache** (here, on the CPU; the teachers' wheels only with a teacher):
   :func:`build_cache` stores, per UTKFace train/val face, one small WebP *source* (the
   face's neighbourhood in the padded frame, ``size`` x ``size`` pixels) with its detector
   box (and, from BlazeFace, the default, its six keypoints) in source pixels, the labels,
   and teacher outputs on ``k_aug`` seeded augmentations of it (augmentation 0 is the
   clean crop, 1.. are wild versions drawn with the cache's recipe, default
   :data:`TRAIN_PARAMS`, from :func:`aug_seed`). Every crop is cut by the serving crop
   rule (:func:`cache_rule`: a :class:`common.crops.CropRule` for BlazeFace faces, which
   :func:`train` writes into ``meta.json`` ``crop_rule``). Training regenerates each
   augmentation from the same source and seed (:func:`augment`), so the teacher has seen
   exactly the pixels the student sees.
   The clean augmentation is stored separately as the network input cut from the
   full-resolution image (64x64), so clean training inputs are as sharp as serving ones.
   One ``.npz`` (``allow_pickle=False``): WebP bytes (about half the size of JPEG at these
   sizes: 1.1 KB per 72x72 source at quality 85, 1.1 KB per 64x64 clean input at 88)
   concatenated, with offsets.
2. **Training** (:func:`train`): Keras 3 on any backend (TensorFlow here, PyTorch on the
   GPU machine, which has no TensorFlow): the project's ``build_compact`` network, each
   epoch one of the ``k_aug`` augmentations per face (plus a random mirror), targets
   mixing the true labels with the teacher:

   - gender: ``(1 - alpha) * one_hot(label) + alpha * teacher``, the teacher's
     probability tempered by ``temperature`` (``p^(1/T)`` normalised; Hinton, Vinyals and
     Dean, "Distilling the Knowledge in a Neural Network", 2015, soften with T > 1);
   - age: ``(1 - beta) * N(label, 2 years) + beta * N(teacher mean, teacher std)`` over
     the 101 one-year bins (DLDL, Gao et al. 2017), plus the L1 error of the expected
     age against the true label (DLDL-v2), as ``training.train`` does;
   - faces whose teacher landmarks were implausible get the true labels only.

   Cosine learning rate with warm-up, weight averaging over the last ``swa_fraction`` of
   the run (SWA, Izmailov et al., UAI 2018) with BatchNorm statistics re-estimated on
   clean crops or on the training mixture; the best of last/averaged weights on the
   validation split (clean and wild together) is saved as ``net.keras`` + ``meta.json``
   (interval scale calibrated on clean and wild validation faces together,
   :func:`calibrate_interval`), with ``history.csv`` and ``summary.json``.

Commands (see ``python -m training.distill --help``)::

    python -m training.distill cache --out ~/.cache/agegender/distill/cache-k4.npz --k-aug 4
    python -m training.distill cache --out PATH --k-aug 8 --no-teacher --rule chip --p-haze 0.3
    python -m training.distill train --cache PATH --out DIR --epochs 40 --alpha 0.5
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import time
from pathlib import Path

import cv2
import numpy as np

from training.defaults import DEFAULT_DATASET

#: The default UTKFace folder (``$AGEGENDER_UTKFACE``, else under ``$AGEGENDER_SHARED``).
UTKFACE_FOLDER = DEFAULT_DATASET.split("=", 1)[1]

from training.wild import (CLEAN_PARAMS, FRAME_PAD, WildParams, apply_params, blazeface_crop_rule,
                           load_faces, pad_frame, sample_params, ssd_crop_rule)

log = logging.getLogger(__name__)

CACHE_VERSION = "distill-v1"
#: WebP quality of the stored clean inputs (64x64: about 1.1 KB each).
CLEAN_QUALITY = 88
#: Salt of the training augmentations' seeds (the evaluation uses ``training.wild``'s).
TRAIN_SALT = "train-v1"
#: Source side (pixels) of one face in the cache and the region it covers: a square of
#: ``SOURCE_MARGIN`` x the box's longer side around the box centre.
SOURCE_SIZE = 72
SOURCE_MARGIN = 1.15
#: Side of the stored clean network inputs (augmentation 0), cut from the full-resolution
#: image: a model fine-tuned on crops cut from the soft 80-px sources lost 0.27 years of
#: clean MAE on full-resolution test crops (5.10 on source crops, 5.37 full-res).
CLEAN_SIZE = 64
#: Wild augmentation for training: the evaluation recipe widened (faces 14-48 px,
#: JPEG 15-80, stronger box error), so training does not fit the proxy's exact ranges.
TRAIN_PARAMS = WildParams(p_occlude=0.2, p_cast=0.5, p_gray=0.1, p_blur=0.35,
                          p_small=0.7, face_px=(14.0, 48.0), p_jpeg=0.7,
                          jpeg_quality=(15, 80), box_scale=(0.8, 1.25), box_shift=0.12,
                          box_aspect=1.12)
AGE_BINS = np.arange(0, 101, dtype=np.float32)
DLDL_SIGMA = 2.0
DLDL_L1_WEIGHT = 0.1


def aug_seed(name: str, k: int) -> int:
    """Seed of augmentation ``k`` of one face (stable across machines)."""
    d = hashlib.sha1(f"{TRAIN_SALT}|{os.path.basename(name)}|{k}".encode()).digest()
    return int.from_bytes(d[:8], "big")


def cache_rule(meta: dict):
    """The crop rule a cache's faces are cut by (a :class:`training.wild.CropRule`):
    BlazeFace boxes and keypoints by the cache's ``meta["rule"]``
    (:class:`common.crops.CropRule` fields), else SSD boxes widened to ``crop_aspect``."""
    if meta.get("rule"):
        from common.crops import CropRule

        return blazeface_crop_rule(CropRule.from_meta({"crop_rule": meta["rule"]}))
    return ssd_crop_rule(meta.get("crop_aspect", 0.883))


def source_points(image_shape, box, points, size: int = SOURCE_SIZE,
                  margin: float = SOURCE_MARGIN) -> np.ndarray:
    """Image pixels ``points`` ``(K, 2)`` mapped into the source that :func:`source_of`
    cuts for ``box`` from an image of ``image_shape`` (``(K, 2)`` float32)."""
    b = int(round(FRAME_PAD * max(image_shape[:2])))
    x1, y1, x2, y2 = (float(v) + b for v in box)
    s = size / (margin * max(x2 - x1, y2 - y1))
    c = np.array([(x1 + x2) / 2.0, (y1 + y2) / 2.0])
    return ((np.asarray(points, np.float64) + b - c) * s + size / 2.0).astype(np.float32)


def source_of(image: np.ndarray, box, size: int = SOURCE_SIZE,
              margin: float = SOURCE_MARGIN) -> tuple[np.ndarray, np.ndarray]:
    """The cached neighbourhood of a face: a square of ``margin`` x the box's longer side
    around its centre, cut from the replicate-padded frame (:func:`training.wild.pad_frame`)
    and resized to ``size`` x ``size`` (area interpolation).

    Beyond the chip, the padded frame repeats its edge pixels; the augmentation pads the
    source the same way, so a jittered box that leaves the source sees what it would have
    seen in the frame. (BlazeFace's box on a UTKFace chip is about the chip, so the
    source holds the whole chip and its replicated edge.) Keypoints:
    :func:`source_points`.

    Returns:
        ``(source (size, size, 3) uint8, box (4,) float32 in source pixels)``.
    """
    frame, b = pad_frame(image)
    x1, y1, x2, y2 = (float(v) + b for v in box)
    side = margin * max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    s = size / side
    if s < 1:  # shrink with area interpolation first (warpAffine has no true INTER_AREA)
        frame = cv2.resize(frame, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        m = np.array([[1, 0, size / 2.0 - s * cx], [0, 1, size / 2.0 - s * cy]], np.float64)
    else:
        m = np.array([[s, 0, size / 2.0 - s * cx], [0, s, size / 2.0 - s * cy]], np.float64)
    src = cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
    sbox = np.array([(x1 - cx) * s + size / 2.0, (y1 - cy) * s + size / 2.0,
                     (x2 - cx) * s + size / 2.0, (y2 - cy) * s + size / 2.0], np.float32)
    return src, sbox


def clean_input(image: np.ndarray, box, crop_aspect: float = 0.883,
                size: int = CLEAN_SIZE, keypoints=None, rule=None) -> np.ndarray:
    """The clean network input of a full-resolution dataset image: the serving crop rule
    on its box (through :func:`training.wild.apply_params`, so the frame and rounding are
    the wild path's) and :func:`common.models.resize_crop`.

    Args:
        rule: a :class:`training.wild.CropRule` (default: the box widened to
            ``crop_aspect``); keypoints: ``(6, 2)`` image pixels for it, or ``None``.
    """
    from common.models import InputSpec, resize_crop

    p = sample_params(np.random.default_rng(0), CLEAN_PARAMS)
    crop = apply_params(image, tuple(float(v) for v in box), p,
                        rule or ssd_crop_rule(crop_aspect), keypoints)
    return resize_crop(crop, InputSpec(size, size, 3))


def augment(source: np.ndarray, sbox, name: str, k: int, crop_aspect: float = 0.883,
            params: WildParams = TRAIN_PARAMS, keypoints=None, rule=None) -> np.ndarray:
    """Augmentation ``k`` of a cached face: ``k == 0`` the clean crop, else a wild version
    (:func:`training.wild.apply_params` with :func:`aug_seed`); ``(h, w, 3)`` uint8 BGR.

    Args:
        rule: a :class:`training.wild.CropRule` (:func:`cache_rule`; default: the box
            widened to ``crop_aspect``); keypoints: ``(6, 2)`` source pixels or ``None``.
    """
    p = sample_params(np.random.default_rng(aug_seed(name, k)),
                      CLEAN_PARAMS if k == 0 else params)
    return apply_params(source, tuple(float(v) for v in sbox), p,
                        rule or ssd_crop_rule(crop_aspect), keypoints)


def train_params(meta: dict) -> WildParams:
    """The wild augmentation recipe a cache was built with (``meta["train_params"]``;
    fields it lacks keep :class:`training.wild.WildParams`' defaults, e.g. no haze in
    caches written before it existed)."""
    fields = {f.name for f in dataclasses.fields(WildParams)}
    given = {k: tuple(v) if isinstance(v, list) else v
             for k, v in (meta.get("train_params") or {}).items() if k in fields}
    return WildParams(**given) if given else TRAIN_PARAMS


def _aug(cache: "Cache", i: int, k: int) -> np.ndarray:
    """Augmentation ``k`` of cached face ``i`` by the cache's own rule and recipe."""
    return augment(cache.sources[i], cache.boxes[i], cache.names[i], k,
                   cache.meta.get("crop_aspect", 0.883), train_params(cache.meta),
                   keypoints=None if cache.keypoints is None else cache.keypoints[i],
                   rule=cache_rule(cache.meta))


# ------------------------------------------------------------------------ cache

#: Faces whose network inputs are stored in the cache (``probe``) to check that another
#: machine (other OpenCV/libwebp/libjpeg builds) regenerates the same augmentations.
PROBE_FACES = 2


def _probe(sources: np.ndarray, boxes: np.ndarray, names: list[str], k_aug: int,
           crop_aspect: float, clean: np.ndarray | None = None, keypoints=None,
           rule=None, params: WildParams = TRAIN_PARAMS) -> np.ndarray:
    from common.models import InputSpec, resize_crop

    return np.array([[clean[i] if k == 0 and clean is not None else
                      resize_crop(augment(sources[i], boxes[i], names[i], k, crop_aspect,
                                          params, keypoints=None if keypoints is None
                                          else keypoints[i], rule=rule),
                                  InputSpec(64, 64, 3)) for k in range(k_aug)]
                     for i in range(len(names))], np.uint8).reshape(-1, k_aug, 64, 64, 3)


def probe_difference(cache: "Cache") -> dict | None:
    """Mean and largest absolute pixel difference between the cache's stored ``probe``
    inputs and the same augmentations regenerated here (``None`` without a probe)."""
    if cache.probe is None or not len(cache.probe):
        return None
    n, k = cache.probe.shape[:2]
    now = _probe(cache.sources[:n], cache.boxes[:n], cache.names[:n], k,
                 cache.meta["crop_aspect"], None if cache.clean is None else cache.clean[:n],
                 cache.keypoints, cache_rule(cache.meta), train_params(cache.meta))
    d = np.abs(now.astype(np.int16) - cache.probe.astype(np.int16))
    return {"mean": round(float(d.mean()), 3), "max": int(d.max()),
            "per_k_mean": d.reshape(n, k, -1).mean(axis=(0, 2)).round(3).tolist()}


@dataclasses.dataclass
class Cache:
    """A loaded distillation cache (see :func:`build_cache`).

    Attributes:
        sources: ``(N, S, S, 3)`` uint8 BGR, decoded. boxes: ``(N, 4)`` float32.
        names, split (``(N,)`` 0 train / 1 val), age, gender, race.
        teacher_female: ``(N, K)`` float32 teacher probability of female (NaN: none).
        teacher_age: ``(N, K)`` float32 teacher expected age. teacher_age_std: ``(N, K)``.
        teacher_ok: ``(N, K)`` bool (plausible landmarks).
        meta: dict (version, k_aug, size, margin, crop_aspect, teacher, params; BlazeFace
            caches: ``detector`` and ``rule``, the :class:`common.crops.CropRule` fields).
        keypoints: ``(N, 6, 2)`` float32 BlazeFace keypoints in source pixels, or ``None``
            (SSD boxes).
    """

    sources: np.ndarray
    boxes: np.ndarray
    names: list[str]
    split: np.ndarray
    age: np.ndarray
    gender: np.ndarray
    race: np.ndarray
    teacher_female: np.ndarray
    teacher_age: np.ndarray
    teacher_age_std: np.ndarray
    teacher_ok: np.ndarray
    meta: dict
    probe: np.ndarray | None = None
    clean: np.ndarray | None = None
    keypoints: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.names)


def _fork_safe_opencv() -> None:
    """No OpenCV worker threads in this process: a process forked while OpenCV's thread
    pool holds a lock can hang in its first OpenCV call (seen here: a pilot's workers
    sleeping forever in ``pool.map``); the worker processes are the parallelism."""
    cv2.setNumThreads(0)


def _decode_all(data: np.ndarray, offsets: np.ndarray, workers: int = 1) -> np.ndarray:
    blobs = [data[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
    if workers > 1 and len(blobs) > 1000:
        _fork_safe_opencv()
        from multiprocessing import get_context

        with get_context("fork").Pool(workers) as pool:
            images = pool.map(_decode_one, blobs, chunksize=256)
    else:
        images = [_decode_one(b) for b in blobs]
    return np.stack(images)


def _decode_one(blob: np.ndarray) -> np.ndarray:
    return cv2.imdecode(blob, cv2.IMREAD_COLOR)


def load_cache(path: str | os.PathLike, workers: int = 1) -> Cache:
    """Read a cache written by :func:`build_cache` (sources decoded).

    Raises:
        ValueError: another cache version.
    """
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        if meta.get("version") != CACHE_VERSION:
            raise ValueError(f"{path}: cache version {meta.get('version')}, "
                             f"expected {CACHE_VERSION}")
        return Cache(_decode_all(z["images"], z["offsets"], workers), z["boxes"],
                     [str(n) for n in z["names"]], z["split"], z["age"], z["gender"],
                     z["race"], z["teacher_female"].astype(np.float32),
                     z["teacher_age"].astype(np.float32),
                     z["teacher_age_std"].astype(np.float32), z["teacher_ok"], meta,
                     z["probe"] if "probe" in z.files else None,
                     _decode_all(z["clean_images"], z["clean_offsets"], workers)
                     if "clean_images" in z.files else None,
                     z["keypoints"].astype(np.float32) if "keypoints" in z.files else None)


def build_cache(folder: str, out: str | os.PathLike, k_aug: int = 4,
                size: int = SOURCE_SIZE, quality: int = 85, limit: int | None = None,
                val_limit: int | None = None, crop_aspect: float = 0.883,
                teacher: str | None = "cydral", batch: int = 256,
                detector: str = "blazeface", rule=None,
                params: WildParams = TRAIN_PARAMS) -> dict:
    """Write the distillation cache of UTKFace's train and val splits.

    Args:
        folder: UTKFace folder.
        detector: ``"blazeface"`` (the serving detector: boxes and keypoints detected on
            each chip in a black border, :func:`training.wild.blazeface_boxes`; crops by
            ``rule``) or ``"ssd"`` (boxes from :func:`training.cache.detect_boxes`,
            widened to ``crop_aspect``).
        rule: :class:`common.crops.CropRule` of BlazeFace crops (default
            :data:`common.crops.CHIP_RULE`); written into the cache's meta and, by
            :func:`train`, into the model's ``meta.json`` ``crop_rule``.
        params: the wild augmentation recipe (stored in the cache's meta; training
            regenerates the augmentations with it, :func:`train_params`).
        out: ``.npz`` path (outside the repository: the arrays derive from UTKFace).
        k_aug: augmentations per face with teacher outputs (0 = clean).
        size: source side in pixels; quality: its WebP quality. The clean inputs
            (augmentation 0, :data:`CLEAN_SIZE`) are cut from the full-resolution image
            and stored as WebP at quality :data:`CLEAN_QUALITY`.
        limit, val_limit: even subsets of the train / val faces (pilots).
        teacher: ``"cydral"`` (:class:`training.teachers.CydralTeacher`) or ``None``.

    Returns:
        summary dict (faces, bytes, seconds, teacher agreement with labels).
    """
    t0 = time.monotonic()
    parts = [(0, load_faces(folder, "train", limit, detector=detector)),
             (1, load_faces(folder, "val", val_limit, detector=detector))]
    rule_fields = None
    if detector == "blazeface":
        from common.crops import CHIP_RULE

        rule_fields = dataclasses.asdict(rule or CHIP_RULE)
    crop = cache_rule({"rule": rule_fields, "crop_aspect": crop_aspect})
    kps_all = []
    tch = None
    if teacher == "cydral":
        from training.teachers import CydralTeacher

        tch = CydralTeacher()
    blobs, boxes, names, split, age, gender, race = [], [], [], [], [], [], []
    clean_blobs = []
    tf_, ta, ts, tok = [], [], [], []
    for sid, faces in parts:
        for i0 in range(0, len(faces), batch):
            crops = []
            for j in range(i0, min(i0 + batch, len(faces))):
                image = cv2.imread(faces.paths[j], cv2.IMREAD_COLOR)
                src, sbox = source_of(image, faces.boxes[j], size)
                kp = None if faces.keypoints is None else faces.keypoints[j]
                skp = None if kp is None else source_points(image.shape, faces.boxes[j], kp,
                                                            size)
                kps_all.append(skp)
                ok, cbuf = cv2.imencode(".webp", clean_input(image, faces.boxes[j], crop_aspect,
                                                             keypoints=kp, rule=crop),
                                        [cv2.IMWRITE_WEBP_QUALITY, CLEAN_QUALITY])
                clean_blobs.append(cbuf.ravel())
                ok, buf = cv2.imencode(".webp", src, [cv2.IMWRITE_WEBP_QUALITY, quality])
                blobs.append(buf.ravel())
                src = cv2.imdecode(buf, cv2.IMREAD_COLOR)   # augment what training will see
                boxes.append(sbox)
                names.append(faces.names[j])
                if tch is not None:
                    crops.extend(augment(src, sbox, faces.names[j], k, crop_aspect, params,
                                         keypoints=skp, rule=crop)
                                 for k in range(k_aug))
            n = min(i0 + batch, len(faces)) - i0
            if tch is not None:
                pa, pg, okk = tch.probabilities(crops)
                from training.teachers import CYDRAL_AGE_WEIGHTS, CYDRAL_FEMALE

                mean = pa.astype(np.float64) @ CYDRAL_AGE_WEIGHTS
                std = np.sqrt(np.maximum(pa.astype(np.float64) @ CYDRAL_AGE_WEIGHTS ** 2
                                         - mean ** 2, 0.0))
                tf_.append(pg[:, CYDRAL_FEMALE].reshape(n, k_aug))
                ta.append(mean.reshape(n, k_aug))
                ts.append(std.reshape(n, k_aug))
                tok.append(okk.reshape(n, k_aug))
            else:
                tf_.append(np.full((n, k_aug), np.nan))
                ta.append(np.full((n, k_aug), np.nan))
                ts.append(np.full((n, k_aug), np.nan))
                tok.append(np.zeros((n, k_aug), bool))
            log.info("cache: split %d, %d / %d faces (%.0f s)", sid, min(i0 + batch, len(faces)),
                     len(faces), time.monotonic() - t0)
        split.extend([sid] * len(faces))
        age.extend(faces.age)
        gender.extend(faces.gender)
        race.extend(faces.race)
    offsets = np.zeros(len(blobs) + 1, np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    clean_offsets = np.zeros(len(clean_blobs) + 1, np.int64)
    clean_offsets[1:] = np.cumsum([len(b) for b in clean_blobs])
    keypoints = np.array(kps_all, np.float32) if rule_fields else None
    probe = _probe(_decode_all(np.concatenate(blobs[:PROBE_FACES]), offsets[:PROBE_FACES + 1]),
                   np.array(boxes[:PROBE_FACES]), names[:PROBE_FACES], k_aug, crop_aspect,
                   _decode_all(np.concatenate(clean_blobs[:PROBE_FACES]),
                               clean_offsets[:PROBE_FACES + 1]),
                   None if keypoints is None else keypoints[:PROBE_FACES], crop, params)
    meta = {"version": CACHE_VERSION, "k_aug": k_aug, "size": size, "margin": SOURCE_MARGIN,
            "quality": quality, "codec": "webp", "clean_size": CLEAN_SIZE,
            "clean_quality": CLEAN_QUALITY, "crop_aspect": crop_aspect, "teacher": teacher,
            "train_params": dataclasses.asdict(params), "salt": TRAIN_SALT,
            "dataset": os.path.abspath(folder), "detector": detector, "rule": rule_fields,
            "no_face": {"train": parts[0][1].no_face, "val": parts[1][1].no_face},
            "crop_rule": "blazeface CropRule (rule)" if rule_fields else "ssd widen_box"}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez_compressed(
        tmp, images=np.concatenate(blobs), offsets=offsets, boxes=np.array(boxes, np.float32),
        names=np.array(names), split=np.array(split, np.uint8),
        age=np.array(age, np.int16), gender=np.array(gender, np.uint8),
        race=np.array(race, np.uint8),
        teacher_female=np.concatenate(tf_).astype(np.float16),
        teacher_age=np.concatenate(ta).astype(np.float16),
        teacher_age_std=np.concatenate(ts).astype(np.float16),
        teacher_ok=np.concatenate(tok), probe=probe,
        clean_images=np.concatenate(clean_blobs), clean_offsets=clean_offsets,
        meta=np.array(json.dumps(meta)),
        **({} if keypoints is None else {"keypoints": keypoints}))
    os.replace(tmp, out)
    tfa, okk = np.concatenate(tf_), np.concatenate(tok)
    g = np.array(gender)[:, None]
    agree = [float(np.mean(((tfa[:, k] > 0.5) == (g[:, 0] == 1))[okk[:, k]]))
             if tch is not None else None for k in range(k_aug)]
    mae = [float(np.mean(np.abs(np.concatenate(ta)[:, k] - np.array(age))[okk[:, k]]))
           if tch is not None else None for k in range(k_aug)]
    summary = {"faces": len(names), "train": int(np.sum(np.array(split) == 0)),
               "val": int(np.sum(np.array(split) == 1)), "bytes": out.stat().st_size,
               "image_bytes": int(offsets[-1]), "clean_bytes": int(clean_offsets[-1]), "seconds": round(time.monotonic() - t0, 1),
               "teacher_gender_agreement_per_k": agree, "teacher_age_mae_per_k": mae,
               "teacher_ok_per_k": okk.mean(axis=0).round(4).tolist()}
    log.info("cache %s: %s", out, summary)
    return summary


def _embed_chunk(chunk) -> tuple[np.ndarray, np.ndarray]:
    from common.models.dlib_descriptor import DlibEmbedder

    cv2.setNumThreads(0)
    c = _POOL_CACHE
    crops = [_aug(c, i, k) for i, k in chunk]
    return DlibEmbedder()(crops)


def add_dlib_teacher(cache_path: str | os.PathLike, out: str | os.PathLike,
                     ks: tuple[int, ...] = (0, 1), fit_limit: int = 3000,
                     limit: int | None = None, workers: int = 2) -> dict:
    """A copy of a cache whose gender teacher is dlib's face descriptor with a logistic
    head (:class:`training.teachers.EmbeddingHeads`, fitted on the clean crops of
    ``fit_limit`` training faces), on augmentations ``ks`` only; the other augmentations
    and the age teacher are marked unusable (labels only).

    The descriptor costs about 55-110 ms per face on one core here (load-dependent), so
    only a few augmentations per face are affordable: 17,079 faces x 2 take about 30 min
    on 2 cores.

    Args:
        limit: only this even subset of the training faces gets teacher outputs (pilots;
            the same subset as ``train(limit=...)``).

    Returns:
        ``{"faces_with_teacher", "agreement_per_k" (teacher vs label), "seconds"}``.
    """
    global _POOL_CACHE
    from training.teachers import EmbeddingHeads

    t0 = time.monotonic()
    cache = load_cache(cache_path)
    _POOL_CACHE = cache
    tr = np.flatnonzero(cache.split == 0)
    sub = tr[::len(tr) // limit][:limit] if limit and len(tr) > limit else tr
    fit = tr[::max(1, len(tr) // fit_limit)][:fit_limit]
    jobs = [(int(i), 0) for i in fit] + [(int(i), int(k)) for i in sub for k in ks]
    chunks = [jobs[j:j + 100] for j in range(0, len(jobs), 100)]
    _fork_safe_opencv()
    if workers > 1:
        from multiprocessing import get_context

        with get_context("fork").Pool(workers) as pool:
            parts = pool.map(_embed_chunk, chunks, chunksize=1)
    else:
        parts = [_embed_chunk(c) for c in chunks]
    emb = np.concatenate([p[0] for p in parts])
    ok = np.concatenate([p[1] for p in parts])
    heads = EmbeddingHeads().fit(emb[:len(fit)], cache.age[fit], cache.gender[fit])
    p_female = heads.predict(emb[len(fit):])["p_female"].reshape(len(sub), len(ks))
    ok = ok[len(fit):].reshape(len(sub), len(ks))
    with np.load(cache_path, allow_pickle=False) as z:
        d = {k: z[k] for k in z.files}
    female = np.full(d["teacher_female"].shape, np.nan, np.float16)
    usable = np.zeros(d["teacher_ok"].shape, bool)
    for j, k in enumerate(ks):
        female[sub, k] = p_female[:, j]
        usable[sub, k] = ok[:, j]
    d["teacher_female"], d["teacher_ok"] = female, usable
    d["teacher_age"] = np.full(d["teacher_age"].shape, np.nan, np.float16)
    meta = json.loads(str(d["meta"]))
    meta["teacher"] = (f"dlib face descriptor + logistic head ({len(fit)} clean train faces), "
                       f"augmentations {list(ks)} of {len(sub)} train faces")
    d["meta"] = np.array(json.dumps(meta))
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez_compressed(tmp, **d)
    os.replace(tmp, out)
    g = cache.gender[sub] == 1
    return {"faces_with_teacher": len(sub), "fit_faces": len(fit),
            "agreement_per_k": {int(k): round(float(np.mean((p_female[:, j] > 0.5) == g)), 4)
                                for j, k in enumerate(ks)},
            "seconds": round(time.monotonic() - t0, 1)}


# ------------------------------------------------------------------------ materialise

_POOL_CACHE: Cache | None = None


def _materialise_one(args) -> np.ndarray:
    from common.models import InputSpec, resize_crop

    cv2.setNumThreads(0)

    i, k, h, w = args
    c = _POOL_CACHE
    if k == 0 and c.clean is not None and c.clean.shape[1:3] == (h, w):
        return c.clean[i]
    return resize_crop(_aug(c, i, k), InputSpec(h, w, 3))


def materialise(cache: Cache, index: np.ndarray, ks: list[int], shape=(64, 64),
                workers: int = 1) -> np.ndarray:
    """Network inputs of faces ``index`` for each augmentation in ``ks``:
    ``(len(index), len(ks), H, W, 3)`` uint8 (:func:`augment` then
    :func:`common.models.resize_crop`; augmentation 0 is the stored
    full-resolution clean input when the cache has one of that size). ``workers > 1``
    uses forked processes."""
    global _POOL_CACHE
    _POOL_CACHE = cache
    jobs = [(int(i), int(k), shape[0], shape[1]) for i in index for k in ks]
    if workers > 1:
        from multiprocessing import get_context

        _fork_safe_opencv()
        with get_context("fork").Pool(workers) as pool:
            out = pool.map(_materialise_one, jobs, chunksize=512)
    else:
        out = [_materialise_one(j) for j in jobs]
    return np.stack(out).reshape(len(index), len(ks), shape[0], shape[1], 3)


def eval_inputs(cache: Cache, index: np.ndarray, shape=(64, 64), view: int = 0) -> np.ndarray:
    """Wild-proxy *evaluation* inputs (``training.wild`` recipe and seeds, version
    ``view`` of each face) of cached faces, cut from their sources:
    ``(len(index), H, W, 3)`` uint8."""
    from common.models import InputSpec, resize_crop
    from training.wild import DEFAULT_PARAMS, image_seed

    rule = cache_rule(cache.meta)
    out = np.empty((len(index), shape[0], shape[1], 3), np.uint8)
    for j, i in enumerate(index):
        p = sample_params(np.random.default_rng(image_seed(cache.names[i], view)),
                          DEFAULT_PARAMS)
        crop = apply_params(cache.sources[i], tuple(float(v) for v in cache.boxes[i]), p, rule,
                            None if cache.keypoints is None else cache.keypoints[i])
        out[j] = resize_crop(crop, InputSpec(shape[0], shape[1], 3))
    return out


# ------------------------------------------------------------------------ targets

def gender_targets(gender: np.ndarray, teacher_female: np.ndarray, ok: np.ndarray,
                   alpha: float, temperature: float = 1.0) -> np.ndarray:
    """``(N, 2)`` soft gender targets (male, female): the label's one-hot mixed with the
    tempered teacher probability, weight ``alpha`` where the teacher is usable."""
    g = np.asarray(gender, np.int64)
    onehot = np.eye(2, dtype=np.float32)[g]
    p = np.clip(np.nan_to_num(np.asarray(teacher_female, np.float64), nan=0.5), 1e-6, 1 - 1e-6)
    t = float(temperature)
    pf = p ** (1 / t) / (p ** (1 / t) + (1 - p) ** (1 / t))
    soft = np.stack([1 - pf, pf], axis=1).astype(np.float32)
    a = (alpha * (np.asarray(ok) & np.isfinite(teacher_female))).astype(np.float32)[:, None]
    return (1 - a) * onehot + a * soft


def age_targets(age: np.ndarray, teacher_age: np.ndarray, teacher_std: np.ndarray,
                ok: np.ndarray, beta: float, sigma: float = DLDL_SIGMA) -> np.ndarray:
    """``(N, 102)``: a distribution over :data:`AGE_BINS` (Gaussian of ``sigma`` around
    the label mixed with weight ``beta`` with a Gaussian at the teacher's mean and
    standard deviation, at least ``sigma``), then the true age (for the L1 term)."""
    a = np.minimum(np.asarray(age, np.float64), AGE_BINS[-1])[:, None]
    lab = np.exp(-(AGE_BINS[None] - a) ** 2 / (2 * sigma ** 2))
    lab /= lab.sum(axis=1, keepdims=True)
    tm = np.nan_to_num(np.asarray(teacher_age, np.float64), nan=0.0)[:, None]
    tsd = np.maximum(np.nan_to_num(np.asarray(teacher_std, np.float64), nan=sigma), sigma)[:, None]
    tea = np.exp(-(AGE_BINS[None] - tm) ** 2 / (2 * tsd ** 2))
    tea /= np.maximum(tea.sum(axis=1, keepdims=True), 1e-12)
    b = (beta * (np.asarray(ok) & np.isfinite(teacher_age))).astype(np.float64)[:, None]
    dist = (1 - b) * lab + b * tea
    return np.hstack([dist, np.asarray(age, np.float64)[:, None]]).astype(np.float32)


# ------------------------------------------------------------------------ training

def _losses():
    from keras import ops

    bins = np.arange(0, 101, dtype=np.float32)

    def age_loss(y_true, y_pred):
        """Cross-entropy to the target distribution + 0.1 x L1 of the expected age."""
        dist, age = y_true[:, :101], y_true[:, 101]
        p = ops.clip(y_pred, 1e-7, 1.0)
        ce = -ops.sum(dist * ops.log(p), axis=-1)
        l1 = ops.abs(ops.sum(y_pred * ops.convert_to_tensor(bins), axis=-1) - age)
        return ce + DLDL_L1_WEIGHT * l1

    def gender_loss(y_true, y_pred):
        """Cross-entropy to soft gender targets."""
        return -ops.sum(y_true * ops.log(ops.clip(y_pred, 1e-7, 1.0)), axis=-1)

    return age_loss, gender_loss


def _predict(net, x: np.ndarray, batch: int = 512, flip: bool = True):
    a, g = net.predict(x, batch_size=batch, verbose=0)
    if flip:
        a2, g2 = net.predict(np.ascontiguousarray(x[:, :, ::-1]), batch_size=batch, verbose=0)
        a, g = (a + a2) / 2, (g + g2) / 2
    return np.asarray(a), np.asarray(g)


def val_metrics(net, x: np.ndarray, age: np.ndarray, gender: np.ndarray) -> dict:
    """Age MAE (expected value), gender accuracy and within-one-band rate, flip TTA."""
    from training.wild import band_index

    a, g = _predict(net, x)
    pa = a @ AGE_BINS
    return {"mae": round(float(np.mean(np.abs(pa - age))), 3),
            "gender": round(float(np.mean(np.argmax(g, 1) == gender)), 4),
            "band1": round(float(np.mean(np.abs(band_index(pa) - band_index(age)) <= 1)), 4)}


def _recalibrate_bn(net, x: np.ndarray, batches: int = 100, batch: int = 256,
                    momentum: float = 0.9, seed: int = 0) -> None:
    import keras

    bns = [l for l in net.layers if isinstance(l, keras.layers.BatchNormalization)]
    old = [l.momentum for l in bns]
    for l in bns:
        l.momentum = momentum
    rng = np.random.default_rng(seed)
    batch = min(batch, len(x))
    for _ in range(min(batches, max(10, 2 * len(x) // batch))):  # tiny sets: a few passes
        idx = np.sort(rng.choice(len(x), batch, replace=False))
        net(x[idx].astype(np.float32), training=True)
    for l, m in zip(bns, old):
        l.momentum = m


def calibrate_scale(probs: np.ndarray, age: np.ndarray, coverage: float = 0.8) -> tuple[float, float]:
    """Smallest width factor of :func:`common.models.age_interval` whose
    coverage of ``age`` reaches ``coverage`` (bisection). Returns ``(scale, coverage)``."""
    from common.models import age_interval

    def cov(s):
        """Coverage (fraction of true ages inside) of the interval at scale ``s``."""
        lo, hi = age_interval(probs, AGE_BINS, coverage, s)
        return float(np.mean((age >= lo) & (age <= hi)))

    lo_s, hi_s = 0.05, 5.0
    for _ in range(30):
        mid = (lo_s + hi_s) / 2
        lo_s, hi_s = (lo_s, mid) if cov(mid) >= coverage else (mid, hi_s)
    return round(hi_s, 4), round(cov(hi_s), 4)


def calibrate_interval(net, x_clean: np.ndarray, x_wild: np.ndarray, age: np.ndarray,
                       coverage: float = 0.8) -> dict:
    """``meta.json`` ``interval`` fitted on validation faces, clean and wild-proxy
    versions together (one of each per face), so that ``coverage`` of the mixture's true
    ages fall inside; the coverage of each half is reported beside it.

    Args:
        net: a Keras compact network. x_clean, x_wild: ``(N, H, W, 3)`` inputs of the
            same ``N`` faces. age: ``(N,)`` years.
    """
    from common.models import age_interval

    pc, _ = _predict(net, x_clean)
    pw, _ = _predict(net, x_wild)
    probs = np.concatenate([pc, pw]).astype(np.float64)
    scale, cov = calibrate_scale(probs, np.concatenate([age, age]), coverage)

    def part(p):
        """Coverage and mean width (years) of the interval on the probabilities ``p``."""
        lo, hi = age_interval(p.astype(np.float64), AGE_BINS, coverage, scale)
        return {"coverage": round(float(np.mean((age >= lo) & (age <= hi))), 4),
                "width": round(float(np.mean(hi - lo)), 2)}

    return {"coverage": coverage, "scale": scale, "val_coverage": cov,
            "val_clean": part(pc), "val_wild": part(pw), "val_faces": int(len(age)),
            "method": "scaled central interval of the predicted age distribution, scale "
                      "fit on val: clean and wild-proxy version of each face together"}


def hardware() -> str:
    """Where Keras runs: machine, CPUs and the GPU its backend sees (for ``meta.json``)."""
    import platform

    import keras

    gpu = "none"
    try:
        if keras.backend.backend() == "torch":
            import torch

            if torch.cuda.is_available():
                gpu = f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
        elif keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            gpu = ", ".join(d.name for d in tf.config.list_physical_devices("GPU")) or "none"
    except Exception as exc:  # informative only: never fail a finished run over it
        gpu = f"unknown ({exc})"
    return f"{platform.machine()}, {os.cpu_count()} CPUs, GPU: {gpu}"


def _write_history(path: Path, history: list[dict]) -> None:
    keys = list(history[0]) if history else []
    with path.open("w") as f:
        f.write(",".join(keys) + "\n")
        for r in history:
            f.write(",".join(str(r.get(k, "")) for k in keys) + "\n")


def train(cache_path: str, out_dir: str, epochs: int = 40, batch_size: int = 128,
          lr: float = 1e-3, alpha: float = 0.5, temperature: float = 1.0, beta: float = 0.0,
          p_clean: float = 0.25, init: str | None = None, limit: int | None = None,
          workers: int = 1, swa_fraction: float = 0.4, max_minutes: float | None = None,
          balance: bool = True, seed: int = 1234, width: float = 1.0,
          input_size: int = 64, checkpoint_every: int = 5) -> dict:
    """Train (or fine-tune, ``init`` = a ``.keras`` file of the same architecture) the
    compact network on a distillation cache; see the module docstring.

    Args:
        cache_path: :func:`build_cache` output. out_dir: where ``net.keras``,
            ``meta.json``, ``history.csv``, ``summary.json`` go.
        alpha, temperature: gender teacher weight and temperature (0: labels only).
        beta: age teacher weight (0: labels only).
        p_clean: probability of the clean crop (augmentation 0) per face and epoch; the
            wild ones share the rest equally.
        limit: even subset of the training faces (pilots).
        workers: processes that materialise the augmentations.
        swa_fraction: average the weights of this last fraction of the run (epochs, or wall
            time under ``max_minutes`` when that ends the run first).
        max_minutes: stop after the epoch that passes this wall time (the cosine
            schedule follows the larger of epoch and time progress).
        checkpoint_every: write ``checkpoint.weights.h5`` every this many epochs
            (``history.csv`` is rewritten after every epoch).

    Returns:
        summary dict (also ``summary.json``).
    """
    t_start = time.monotonic()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # data first, in forked workers, before the Keras backend (PyTorch/CUDA) starts
    cache = load_cache(cache_path, workers)
    K = int(cache.meta["k_aug"])
    tr = np.flatnonzero(cache.split == 0)
    va = np.flatnonzero(cache.split == 1)
    if limit and len(tr) > limit:
        tr = tr[::len(tr) // limit][:limit]
    if len(va) == 0:  # tiny smoke caches: validate on training faces
        va = tr[:64]
    shape = (input_size, input_size)
    probe = probe_difference(cache)
    log.info("augmentations regenerated here vs the cache's probe: %s", probe)
    t0 = time.monotonic()
    x_tr = materialise(cache, tr, list(range(K)), shape, workers)          # (N, K, H, W, 3)
    x_va_clean = materialise(cache, va, [0], shape, workers)[:, 0]
    x_va_wild = eval_inputs(cache, va, shape)
    t_data = time.monotonic() - t0
    log.info("materialised %d x %d training inputs, %d val in %.0f s", len(tr), K, len(va),
             t_data)

    import keras

    from common.models import InputSpec, models_dir
    from training.architectures import build_compact
    from training.batches import balance_weights

    keras.utils.set_random_seed(seed)
    age_tr, gen_tr = cache.age[tr].astype(np.float64), cache.gender[tr].astype(np.int64)
    w_tr = balance_weights(cache.age[tr].astype(np.int64)) if balance \
        else np.ones(len(tr), np.float32)
    spec = InputSpec(input_size, input_size, 3)
    net = build_compact(spec, width=width)
    if init:
        net.set_weights(keras.models.load_model(init, compile=False).get_weights())
    age_loss, gender_loss = _losses()
    net.compile(optimizer=keras.optimizers.Adam(lr), loss=[age_loss, gender_loss])
    rng = np.random.default_rng(seed)
    probs_k = np.array([p_clean] + [(1 - p_clean) / (K - 1)] * (K - 1)) if K > 1 else np.ones(1)
    history, swa, swa_n = [], None, 0

    def progress(done_epochs: int) -> float:
        """Fraction of the run done: epochs, or wall time under ``max_minutes``."""
        p_ = done_epochs / epochs
        if max_minutes:
            p_ = max(p_, (time.monotonic() - t_start) / (60 * max_minutes))
        return p_
    va_age, va_gen = cache.age[va].astype(np.float64), cache.gender[va].astype(np.int64)
    for epoch in range(epochs):
        te = time.monotonic()
        p = progress(epoch)
        rate = lr * 0.3 if epoch == 0 and not init else \
            lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(p, 1.0))))
        net.optimizer.learning_rate.assign(rate)
        k = rng.choice(K, size=len(tr), p=probs_k)
        x = x_tr[np.arange(len(tr)), k]
        flip = rng.random(len(tr)) < 0.5
        x[flip] = x[flip][:, :, ::-1]
        ok = cache.teacher_ok[tr, k]
        yg = gender_targets(gen_tr, cache.teacher_female[tr, k], ok, alpha, temperature)
        ya = age_targets(age_tr, cache.teacher_age[tr, k], cache.teacher_age_std[tr, k], ok,
                         beta)
        h = net.fit(x.astype(np.float32), [ya, yg], sample_weight=w_tr, batch_size=batch_size,
                    epochs=1, shuffle=True, verbose=0)
        row = {"epoch": epoch + 1, "lr": round(rate, 6),
               "loss": round(float(h.history["loss"][-1]), 4),
               "seconds": round(time.monotonic() - te, 1)}
        # weights averaged over the last swa_fraction of the run (epochs or wall time)
        if progress(epoch + 1) > 1 - swa_fraction + 1e-9:
            wts = net.get_weights()
            swa_n += 1
            swa = [w.astype(np.float64) for w in wts] if swa is None else \
                [s + (w - s) / swa_n for s, w in zip(swa, wts)]
        row.update({f"val_clean_{k_}": v for k_, v in
                    val_metrics(net, x_va_clean, va_age, va_gen).items()})
        row.update({f"val_wild_{k_}": v for k_, v in
                    val_metrics(net, x_va_wild, va_age, va_gen).items()})
        history.append(row)
        log.info("epoch %s", row)
        _write_history(out / "history.csv", history)
        if (epoch + 1) % checkpoint_every == 0:   # survives a run killed at its time limit
            net.save_weights(out / "checkpoint.weights.h5")
        if max_minutes and time.monotonic() - t_start > 60 * max_minutes:
            log.info("time budget reached after epoch %d", epoch + 1)
            break
    last = net.get_weights()
    # BatchNorm statistics re-estimated on clean crops, or on the training mixture of
    # clean and wild crops; each candidate is scored on clean + wild validation faces
    x_mix = x_tr[np.arange(len(tr)), rng.choice(K, size=len(tr), p=probs_k)]
    bn_sets = {"clean": x_tr[:, 0], "mix": x_mix}

    def score(m):
        """Validation score: mean of clean and wild (MAE/10 - gender accuracy)."""
        c, w = m
        return (c["mae"] + w["mae"]) / 20.0 - (c["gender"] + w["gender"]) / 2.0

    weights = {"last": last}
    if swa is not None and swa_n >= 2:
        weights["swa"] = [s_.astype(w.dtype) for s_, w in zip(swa, last)]
    cand, states = {}, {}
    for wname, wts in weights.items():
        for bname, xb in bn_sets.items():
            net.set_weights(wts)
            _recalibrate_bn(net, xb)
            key = f"{wname}+bn-{bname}"
            cand[key] = (val_metrics(net, x_va_clean, va_age, va_gen),
                         val_metrics(net, x_va_wild, va_age, va_gen))
            states[key] = net.get_weights()
    chosen = min(cand, key=lambda k_: score(cand[k_]))
    net.set_weights(states[chosen])
    fresh = build_compact(spec, width=width)      # uncompiled copy: no optimizer state
    fresh.set_weights(net.get_weights())
    fresh.save(out / "net.keras")
    interval = calibrate_interval(net, x_va_clean, x_va_wild, va_age)
    meta = json.loads((models_dir() / "compact" / "meta.json").read_text())
    meta.pop("onnx", None)
    meta.pop("fusion", None)
    meta.update({"name": out.name, "input": {"height": input_size, "width": input_size,
                                             "channels": 3, "color": "bgr"},
                 "interval": interval, "crop_aspect": cache.meta["crop_aspect"]})
    if cache.meta.get("rule"):
        meta["crop_rule"] = dict(cache.meta["rule"])
    else:
        meta.pop("crop_rule", None)
    summary = {"cache": str(cache_path), "cache_meta": cache.meta, "train_faces": len(tr),
               "val_faces": len(va), "epochs_run": len(history), "batch_size": batch_size,
               "lr": lr, "alpha": alpha, "temperature": temperature, "beta": beta,
               "p_clean": p_clean, "init": init, "width": width, "input_size": input_size,
               "weights": chosen, "swa_epochs": swa_n,
               "val": {k_: {"clean": v[0], "wild": v[1]} for k_, v in cand.items()},
               "seconds_total": round(time.monotonic() - t_start, 1),
               "seconds_data": round(t_data, 1), "probe_difference": probe,
               "backend": keras.backend.backend(),
               "keras": keras.__version__, "hardware": hardware()}
    meta["training"] = summary
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _write_history(out / "history.csv", history)
    log.info("saved %s (%s): %s", out / "net.keras", chosen, summary["val"])
    return summary


def parse_rule(text: str):
    """A :class:`common.crops.CropRule` from ``chip``, ``ssd-video`` or
    ``WIDTH,HEIGHT,SHIFT_DOWN`` (box sides).

    Raises:
        ValueError: anything else, or values out of the rule's range.
    """
    from common.crops import CHIP_RULE, SSD_VIDEO_RULE, CropRule

    named = {"chip": CHIP_RULE, "ssd-video": SSD_VIDEO_RULE}
    if text in named:
        return named[text]
    try:
        w, h, d = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"rule must be chip, ssd-video or W,H,SHIFT_DOWN, got {text!r}") \
            from None
    return CropRule(w, h, d)


def main(argv=None) -> None:
    """CLI: ``cache`` and ``train`` sub-commands."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cache", help="build the distillation cache (CPU, teachers)")
    c.add_argument("--dataset", default=UTKFACE_FOLDER)
    c.add_argument("--out", required=True)
    c.add_argument("--k-aug", type=int, default=4)
    c.add_argument("--size", type=int, default=SOURCE_SIZE)
    c.add_argument("--quality", type=int, default=85)
    c.add_argument("--limit", type=int, default=None)
    c.add_argument("--val-limit", type=int, default=None)
    c.add_argument("--no-teacher", action="store_true")
    c.add_argument("--detector", default="blazeface", choices=("blazeface", "ssd"))
    c.add_argument("--p-haze", type=float, default=TRAIN_PARAMS.p_haze,
                   help="probability of the low-contrast augmentation (training.degrade.haze)")
    c.add_argument("--rule", default="chip", help="BlazeFace crop rule: chip, ssd-video "
                   "(common.crops) or WIDTH,HEIGHT,SHIFT_DOWN in box sides")
    dl = sub.add_parser("dlib-teacher", help="copy of a cache with dlib's descriptor as the "
                                             "gender teacher on a few augmentations")
    dl.add_argument("--cache", required=True)
    dl.add_argument("--out", required=True)
    dl.add_argument("--ks", default="0,1", help="augmentations with teacher outputs")
    dl.add_argument("--fit-limit", type=int, default=3000)
    dl.add_argument("--limit", type=int, default=None)
    dl.add_argument("--workers", type=int, default=2)
    t = sub.add_parser("train", help="train from a cache (any Keras backend)")
    t.add_argument("--cache", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--epochs", type=int, default=40)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--alpha", type=float, default=0.5)
    t.add_argument("--temperature", type=float, default=1.0)
    t.add_argument("--beta", type=float, default=0.0)
    t.add_argument("--p-clean", type=float, default=0.25)
    t.add_argument("--init", default=None)
    t.add_argument("--limit", type=int, default=None)
    t.add_argument("--workers", type=int, default=1)
    t.add_argument("--max-minutes", type=float, default=None)
    t.add_argument("--width", type=float, default=1.0)
    t.add_argument("--input-size", type=int, default=64)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.cmd == "cache":
        print(json.dumps(build_cache(args.dataset, args.out, args.k_aug, args.size, args.quality,
                                     args.limit, args.val_limit,
                                     teacher=None if args.no_teacher else "cydral",
                                     detector=args.detector, rule=parse_rule(args.rule),
                                     params=dataclasses.replace(TRAIN_PARAMS,
                                                                p_haze=args.p_haze)),
                         indent=1))
    elif args.cmd == "dlib-teacher":
        print(json.dumps(add_dlib_teacher(args.cache, args.out,
                                          tuple(int(k) for k in args.ks.split(",")),
                                          args.fit_limit, args.limit, args.workers), indent=1))
    else:
        print(json.dumps(train(args.cache, args.out, args.epochs, args.batch_size, args.lr,
                               args.alpha, args.temperature, args.beta, args.p_clean,
                               args.init, args.limit, args.workers,
                               max_minutes=args.max_minutes, width=args.width,
                               input_size=args.input_size), indent=1, default=str))


if __name__ == "__main__":
    main()
