"""From a dataset spec (``utkface=PATH``, ``imdb=PATH.mat``, ``wiki=PATH.mat``) to cached,
split, preprocessed arrays."""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np

from common.models import InputSpec
from training import cache
from training.datasets import (Sample, load_imdb_wiki, load_utkface, seed_selection,
                               split_of)

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Arrays:
    """Preprocessed crops with labels.

    Attributes:
        x: ``(N, H, W, C)`` uint8 crops (:func:`common.models.resize_crop`).
        age: ``(N,)`` int years.
        gender: ``(N,)`` int canonical labels (0 = male, 1 = female).
        names: file names.
    """

    x: np.ndarray
    age: np.ndarray
    gender: np.ndarray
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, idx) -> "Arrays":
        """Rows ``idx`` (index array or boolean mask)."""
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return Arrays(self.x[idx], self.age[idx], self.gender[idx],
                      [self.names[i] for i in idx])


@dataclasses.dataclass
class Loaded:
    """A dataset's crops plus bookkeeping counts (skipped names, images with no face)."""

    arrays: Arrays
    skipped_names: int
    no_face: int
    folder: str


def parse_dataset(spec: str) -> tuple[str, str]:
    """Split ``"utkface=PATH"`` (also ``imdb=``, ``wiki=``) into ``(kind, path)``.

    Raises:
        ValueError: no ``=`` or an unknown kind.
    """
    if "=" not in spec:
        raise ValueError(f"dataset must look like utkface=PATH, got {spec!r}")
    kind, path = spec.split("=", 1)
    kind = kind.strip().lower()
    if kind not in ("utkface", "imdb", "wiki"):
        raise ValueError(f"unknown dataset kind {kind!r}: use utkface=, imdb= or wiki=")
    return kind, os.path.expanduser(path)


def list_samples(spec: str) -> tuple[list[Sample], int, str]:
    """Samples of a dataset spec, the number skipped while listing, and the cache folder."""
    kind, path = parse_dataset(spec)
    if kind == "utkface":
        samples, skipped = load_utkface(path)
        return samples, skipped, path
    samples, counts = load_imdb_wiki(path)
    return samples, counts["rows"] - counts["kept"], os.path.dirname(os.path.abspath(path))


def load_dataset(spec: str, input_spec: InputSpec, seed_prep: bool = False,
                 limit: int | None = None, progress: bool = True) -> Loaded:
    """Detect, crop, preprocess (cached) and label a dataset.

    Args:
        spec: ``utkface=PATH`` (a folder of UTKFace-named images), ``imdb=PATH.mat`` or
            ``wiki=PATH.mat``.
        input_spec: the model input size.
        seed_prep: apply the seed's selection (ages 20-50, at most 1,500 per age, largest
            files first; :func:`training.datasets.seed_selection`).
        limit: keep only the first ``limit`` samples by file name (tests, smoke runs).

    Returns:
        :class:`Loaded` with the crops of the images where the detector found a face.
    """
    samples, skipped, folder = list_samples(spec)
    if seed_prep:
        samples = seed_selection(samples)
    if limit:
        samples = samples[:limit]
    by_name = {s.name: s for s in samples}
    x, names, dropped = cache.load_crops([s.path for s in samples], input_spec, folder,
                                         progress=progress)
    if dropped:
        log.info("%s: %d of %d image(s) dropped (no face detected or unreadable)", spec,
                 dropped, len(samples))
    age = np.array([by_name[n].age for n in names], np.int64)
    gender = np.array([by_name[n].gender for n in names], np.int64)
    return Loaded(Arrays(x, age, gender, names), skipped, dropped, folder)


def split_arrays(arrays: Arrays) -> dict[str, Arrays]:
    """``{"train", "val", "test"}`` parts by :func:`training.datasets.split_of`."""
    labels = np.array([split_of(n) for n in arrays.names])
    return {s: arrays.subset(labels == s) for s in ("train", "val", "test")}
