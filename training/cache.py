"""Face-crop cache: detect faces once per image with the pipeline's detector, then keep
preprocessed crop arrays on disk so later runs never decode or detect again.

Two levels, both under :func:`cache_dir` (``$AGEGENDER_CACHE``, default
``~/.cache/agegender``; never inside the repository, the arrays derive from licensed
images):

1. ``boxes-<key>.npz``: for every image file of a folder, the highest-confidence box of
   :class:`common.detectors.ssd.SSDDetector` (the same detector and settings as the
   pipeline) or "no face". ``<key>`` hashes the folder's absolute path and the detector
   settings. Saved every few thousand images, so an interrupted run resumes.
2. ``crops-<key>-<spec>.npz``: the crops of the images with a face, preprocessed by
   :func:`common.models.resize_crop` for one model input spec (e.g.
   ``64x64x3``), uint8, with their file names. The classifier applies the very same
   function to the detector's crops at run time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import cv2
import numpy as np

from common.models import InputSpec, resize_crop

log = logging.getLogger(__name__)

#: Detector settings used to crop training and evaluation faces: the pipeline's defaults.
DETECTOR_SETTINGS = {"confidence": 0.5, "input_size": 300, "min_face_px": 12}
#: ``SSDDetector(pad=...)`` for dataset images: they are close-ups (UTKFace chips: the face
#: fills the 200x200 image), where the res10 SSD misfires without a border (it returns the
#: lower-right quadrant of the face with confidence 1.0); with a border of half the side it
#: finds the whole face (median box w/h 0.88, cut off at the chip's top and bottom), as it
#: does on faces in video frames.
DETECT_PAD = 0.5


def cache_dir() -> Path:
    """The cache folder: ``$AGEGENDER_CACHE`` or ``~/.cache/agegender`` (created)."""
    path = Path(os.environ.get("AGEGENDER_CACHE", Path.home() / ".cache" / "agegender"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _key(folder: str | os.PathLike) -> str:
    text = f"{Path(folder).resolve()}|{sorted(DETECTOR_SETTINGS.items())}|pad={DETECT_PAD}"
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _boxes_path(folder) -> Path:
    return cache_dir() / f"boxes-{_key(folder)}.npz"


def _load_boxes(path: Path) -> dict[str, tuple[int, int, int, int, float]]:
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as z:
        return {str(n): (int(b[0]), int(b[1]), int(b[2]), int(b[3]), float(c))
                for n, b, c in zip(z["names"], z["boxes"], z["confidence"])}


def _save_boxes(path: Path, boxes: dict) -> None:
    names = np.array(sorted(boxes), dtype=str)
    arr = np.array([boxes[n][:4] for n in names], dtype=np.int32).reshape(-1, 4)
    conf = np.array([boxes[n][4] for n in names], dtype=np.float32)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, names=names, boxes=arr, confidence=conf)
    os.replace(tmp, path)


def median_aspect(names: list[str], folder: str | os.PathLike) -> float | None:
    """Median width/height of the cached detector boxes of ``names`` (file names in
    ``folder``, as :func:`detect_boxes` stored them), rounded to 3 decimals; ``None`` when
    none has a face. Stored as ``crop_aspect`` in a model's ``meta.json``."""
    boxes = _load_boxes(_boxes_path(folder))
    ratios = [(b[2] - b[0]) / (b[3] - b[1]) for b in (boxes.get(n) for n in names)
              if b is not None and b[4] > 0 and b[3] > b[1]]
    return round(float(np.median(ratios)), 3) if ratios else None


def read_image(path: str) -> np.ndarray | None:
    """Decode an image file to ``(H, W, 3)`` uint8 BGR, or ``None`` if it cannot be read."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        return None
    return image


def detect_boxes(paths: list[str], folder: str | os.PathLike | None = None,
                 progress: bool = True, save_every: int = 2000,
                 threads: int | None = 1) -> dict[str, tuple[int, int, int, int, float]]:
    """Highest-confidence SSD face box of each image, cached per folder.

    Args:
        paths: image files (all in ``folder``; names are the cache keys).
        folder: the folder the cache is keyed on (default: the first path's folder).
        progress: show a tqdm progress bar (on stderr).
        save_every: write the partial cache every this many new images.
        threads: OpenCV thread budget for the detector.

    Returns:
        ``{file name: (x1, y1, x2, y2, confidence)}`` in pixels of the image; images with
        no face, or that cannot be decoded, have confidence ``0`` and a zero box.
    """
    from tqdm import tqdm

    if not paths:
        return {}
    folder = folder if folder is not None else os.path.dirname(paths[0])
    cpath = _boxes_path(folder)
    boxes = _load_boxes(cpath)
    todo = [p for p in paths if os.path.basename(p) not in boxes]
    if todo:
        from common.detectors.ssd import SSDDetector

        detector = SSDDetector(threads=threads, pad=DETECT_PAD, **DETECTOR_SETTINGS)
        log.info("detecting faces in %d image(s) of %s (cache %s)", len(todo), folder, cpath)
        t0, fresh = time.monotonic(), 0
        for p in tqdm(todo, desc="detect faces", unit="img", disable=not progress,
                      mininterval=5.0):
            image = read_image(p)
            entry = (0, 0, 0, 0, 0.0)
            if image is not None:
                dets = detector.detect(image)
                if dets:
                    entry = (*dets[0].box, float(dets[0].confidence))
            boxes[os.path.basename(p)] = entry
            fresh += 1
            if fresh % save_every == 0:
                _save_boxes(cpath, boxes)
        _save_boxes(cpath, boxes)
        log.info("detected %d image(s) in %.0f s", fresh, time.monotonic() - t0)
    return {os.path.basename(p): boxes[os.path.basename(p)] for p in paths}


def load_crops(paths: list[str], spec: InputSpec, folder: str | os.PathLike | None = None,
               progress: bool = True) -> tuple[np.ndarray, list[str], int]:
    """Preprocessed face crops of ``paths`` for one model input ``spec``, cached.

    Each image is decoded, cut at its cached SSD box (:func:`detect_boxes`), exactly like
    :meth:`common.geometry.Detection.crop`, and passed through
    :func:`common.models.resize_crop`.

    Returns:
        ``(crops (N, H, W, C) uint8, names of the N images with a face (order of paths),
        number of images dropped for having no detected face or being unreadable)``.
    """
    if not paths:
        return np.zeros((0, *spec.shape), np.uint8), [], 0
    folder = folder if folder is not None else os.path.dirname(paths[0])
    boxes = detect_boxes(paths, folder, progress=progress)
    cpath = cache_dir() / f"crops-{_key(folder)}-{spec.tag}.npz"
    cached: dict[str, int] = {}
    arrays = np.zeros((0, *spec.shape), np.uint8)
    if cpath.is_file():
        with np.load(cpath, allow_pickle=False) as z:
            arrays = z["crops"]
            cached = {str(n): i for i, n in enumerate(z["names"])}
    names = [os.path.basename(p) for p in paths]
    with_face = [(p, n) for p, n in zip(paths, names) if boxes[n][4] > 0]
    dropped = len(paths) - len(with_face)
    missing = [(p, n) for p, n in with_face if n not in cached]
    if missing:
        from tqdm import tqdm

        new = np.zeros((len(missing), *spec.shape), np.uint8)
        keep = np.ones(len(missing), bool)
        for i, (p, n) in enumerate(tqdm(missing, desc=f"crop {spec.tag}", unit="img",
                                        disable=not progress, mininterval=5.0)):
            image = read_image(p)
            if image is None:
                keep[i] = False
                continue
            x1, y1, x2, y2 = boxes[n][:4]
            new[i] = resize_crop(image[y1:y2, x1:x2], spec)
        base = len(arrays)
        ok = [m for m, k in zip(missing, keep) if k]
        arrays = np.concatenate([arrays, new[keep]])
        for j, (_, n) in enumerate(ok):
            cached[n] = base + j
        all_names = sorted(cached, key=cached.get)
        tmp = cpath.with_name(cpath.name + ".tmp.npz")
        np.savez(tmp, crops=arrays, names=np.array(all_names, dtype=str))
        os.replace(tmp, cpath)
    idx = [cached[n] for _, n in with_face if n in cached]
    kept = [n for _, n in with_face if n in cached]
    dropped += len(with_face) - len(kept)
    return arrays[idx], kept, dropped
