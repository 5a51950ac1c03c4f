"""Dataset loaders: UTKFace file names, IMDB-WIKI ``.mat`` metadata, the seed's selection
and the deterministic train/validation/test split.

Canonical labels used everywhere in this project:

* ``age``: integer years.
* ``gender``: ``0`` = male, ``1`` = female (UTKFace's coding; IMDB-WIKI codes male = 1, so
  its rows are mapped with ``1 - gender``). :data:`GENDERS` gives the names by index.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: Canonical gender names by label index (0 = male, 1 = female, as UTKFace codes them).
GENDERS = ("male", "female")
#: Canonical label for a gender name.
GENDER_INDEX = {name: i for i, name in enumerate(GENDERS)}

#: Split fractions (train, validation, test) of the deterministic hash split.
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class Sample:
    """One labelled face image.

    Attributes:
        path: image file path.
        age: age in years (int).
        gender: canonical gender label (0 = male, 1 = female).
    """

    path: str
    age: int
    gender: int

    @property
    def name(self) -> str:
        """The file name (the split key)."""
        return os.path.basename(self.path)


def parse_utkface_name(name: str) -> tuple[int, int, int] | None:
    """Parse ``[age]_[gender]_[race]_[date&time].jpg.chip.jpg`` into ``(age, gender, race)``.

    UTKFace codes gender 0 = male, 1 = female (the canonical coding here). Returns ``None``
    for names with a missing, empty or non-numeric field or values out of range
    (age 0..130, gender 0/1, race 0..4); the published set has a few such names.
    """
    base = os.path.basename(name)
    parts = base.split("_")
    if len(parts) != 4:
        return None
    try:
        age, gender, race = int(parts[0]), int(parts[1]), int(parts[2])
    except ValueError:
        return None
    if not (0 <= age <= 130 and gender in (0, 1) and 0 <= race <= 4):
        return None
    return age, gender, race


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def load_utkface(folder: str | os.PathLike) -> tuple[list[Sample], int]:
    """List the labelled images of a UTKFace-named folder (not recursive).

    Files whose name does not parse (see :func:`parse_utkface_name`) are skipped, counted and
    logged once with a few examples; they never raise.

    Returns:
        ``(samples sorted by file name, number of skipped image files)``.

    Raises:
        FileNotFoundError: ``folder`` is not a directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"UTKFace folder not found: {folder}")
    samples, skipped = [], []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not entry.is_file() or not entry.name.lower().endswith(IMAGE_EXTENSIONS):
            continue
        parsed = parse_utkface_name(entry.name)
        if parsed is None:
            skipped.append(entry.name)
            continue
        samples.append(Sample(entry.path, parsed[0], parsed[1]))
    if skipped:
        log.warning("UTKFace %s: skipped %d image(s) with a malformed name, e.g. %s",
                    folder, len(skipped), skipped[:3])
    return samples, len(skipped)


# ---------------------------------------------------------------------------- IMDB-WIKI

def datenum_to_date(datenum: np.ndarray) -> np.ndarray:
    """Calendar ``(year, month, day)`` of MATLAB serial date numbers (float array, days).

    MATLAB's ``datenum`` counts days from the proleptic year 0: datenum 1 = 0000-01-01,
    367 = 0001-01-01 (year 0 is a leap year in the proleptic Gregorian calendar). Python's
    ``date.fromordinal`` starts at 0001-01-01 = 1, so ``ordinal = datenum - 366``. Datenums
    below 367 (year 0, which IMDB-WIKI uses for unknown births) give ``(0, 1, 1)`` instead
    of being clamped to year 1, so callers can drop them. Non-finite input gives
    ``(-1, 1, 1)``.

    Returns:
        int64 array of shape ``datenum.shape + (3,)``.
    """
    import datetime

    dn = np.asarray(datenum, dtype=np.float64)
    out = np.tile(np.array([-1, 1, 1], dtype=np.int64), dn.shape + (1,))
    flat, rows = dn.ravel(), out.reshape(-1, 3)
    for i, v in enumerate(flat):
        if not math.isfinite(v):
            continue
        day = int(math.floor(v))
        if day < 367:
            rows[i] = (0, 1, 1)
        else:
            d = datetime.date.fromordinal(day - 366)
            rows[i] = (d.year, d.month, d.day)
    return out


def imdb_wiki_age(dob: np.ndarray, photo_taken: np.ndarray) -> np.ndarray:
    """Age in whole years as IMDB-WIKI defines it: the photo is assumed taken on July 1st
    of ``photo_taken`` (the dataset page: ``[age,~]=datevec(datenum(photo_taken,7,1)-dob)``),
    so a 1980-07-15 birth with ``photo_taken`` 2010 is 29, a 1980-07-01 birth is 30.

    Args:
        dob: MATLAB datenums of the birth dates (days).
        photo_taken: years.

    Returns:
        int64 ages; year-0 (unknown) births give ``photo_taken`` itself (drop them with
        :func:`datenum_to_date`), non-finite input gives a large negative number.
    """
    ymd = datenum_to_date(dob)
    taken = np.asarray(photo_taken, dtype=np.float64)
    taken_i = np.where(np.isfinite(taken), taken, -10 ** 6).astype(np.int64)
    after_july_1 = (ymd[..., 1] > 7) | ((ymd[..., 1] == 7) & (ymd[..., 2] > 1))
    return taken_i - ymd[..., 0] - after_july_1.astype(np.int64)


def _mat_field(struct, name: str) -> np.ndarray:
    value = struct[name]
    # scipy gives (1, 1) object arrays around a (1, N) array for MATLAB structs
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.item()
    return np.asarray(value)


def load_imdb_wiki(mat_path: str | os.PathLike, image_root: str | os.PathLike | None = None,
                   key: str | None = None, min_face_score: float = 3.0,
                   age_range: tuple[int, int] = (1, 100)) -> tuple[list[Sample], dict]:
    """Load ``imdb.mat`` / ``wiki.mat`` metadata with the seed's filters.

    The file holds a struct (``imdb`` or ``wiki``) with fields ``dob`` (MATLAB datenum of
    the birth date), ``photo_taken`` (year), ``full_path`` (cell of relative paths),
    ``gender`` (1 = male, 0 = female, NaN unknown), ``face_score`` (``-inf`` = no face) and
    ``second_face_score`` (NaN = no second face). Age follows the dataset's own
    convention (:func:`imdb_wiki_age`: ``photo_taken`` minus the birth year, one less when
    the birthday falls after July 1st, the assumed photo date; Rothe et al., "DEX",
    ICCVW 2015, dataset page).

    Rows are dropped (and counted by reason) for: NaN gender, no face (``face_score`` =
    -inf), a second face (``second_face_score`` not NaN), ``face_score < min_face_score``,
    year-0 births (unknown dob), births after the photo, age outside ``age_range``
    (inclusive).

    Args:
        mat_path: path of the ``.mat`` file.
        image_root: folder the ``full_path`` entries are relative to (default: the
            ``.mat`` file's folder).
        key: struct name; default: the one non-``__`` key of the file.

    Returns:
        ``(samples with canonical gender 0 = male / 1 = female, counts)`` where ``counts``
        maps ``"rows"``, ``"kept"`` and each drop reason to a number of rows.

    Raises:
        FileNotFoundError: no such file. KeyError: the struct or a field is missing.
    """
    import scipy.io

    mat_path = Path(mat_path)
    if not mat_path.is_file():
        raise FileNotFoundError(f"IMDB-WIKI metadata not found: {mat_path}")
    mat = scipy.io.loadmat(str(mat_path))
    if key is None:
        keys = [k for k in mat if not k.startswith("__")]
        if len(keys) != 1:
            raise KeyError(f"{mat_path}: expected one struct, found {keys}")
        key = keys[0]
    struct = mat[key][0, 0]
    dob = _mat_field(struct, "dob").astype(np.float64).ravel()
    taken = _mat_field(struct, "photo_taken").astype(np.float64).ravel()
    paths = [str(np.asarray(p).ravel()[0]) if np.asarray(p).size else ""
             for p in _mat_field(struct, "full_path").ravel()]
    gender = _mat_field(struct, "gender").astype(np.float64).ravel()
    face_score = _mat_field(struct, "face_score").astype(np.float64).ravel()
    second = _mat_field(struct, "second_face_score").astype(np.float64).ravel()
    n = len(dob)
    if not all(len(a) == n for a in (taken, paths, gender, face_score, second)):
        raise ValueError(f"{mat_path}: fields have different lengths")
    birth_year = datenum_to_date(dob)[:, 0]
    age = imdb_wiki_age(dob, taken)
    root = Path(image_root) if image_root is not None else mat_path.parent
    counts = {"rows": n, "nan_gender": 0, "no_face": 0, "second_face": 0,
              "low_face_score": 0, "unknown_birth": 0, "born_after_photo": 0,
              "age_out_of_range": 0}
    samples = []
    for i in range(n):
        if not math.isfinite(gender[i]):
            counts["nan_gender"] += 1
        elif not math.isfinite(face_score[i]):
            counts["no_face"] += 1
        elif not math.isnan(second[i]):
            counts["second_face"] += 1
        elif face_score[i] < min_face_score:
            counts["low_face_score"] += 1
        elif birth_year[i] <= 0 or not math.isfinite(taken[i]):
            counts["unknown_birth"] += 1
        elif age[i] < 0:
            counts["born_after_photo"] += 1
        elif not age_range[0] <= age[i] <= age_range[1]:
            counts["age_out_of_range"] += 1
        else:
            samples.append(Sample(str(root / paths[i]), int(age[i]), 1 - int(gender[i])))
    counts["kept"] = len(samples)
    log.info("IMDB-WIKI %s: %s", mat_path.name, counts)
    return samples, counts


# ---------------------------------------------------------------------------- selection

def split_of(name: str) -> str:
    """Deterministic split (``"train"``, ``"val"`` or ``"test"``) of a file name.

    The first 8 bytes of the SHA-1 of the base name, as a fraction of 2**64, fall into
    80/10/10 buckets; the split does not depend on the machine, the order or the other
    files, so a subset keeps its files' splits.
    """
    digest = hashlib.sha1(os.path.basename(name).encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0 ** 64
    if u < SPLIT_FRACTIONS[0]:
        return "train"
    if u < SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1]:
        return "val"
    return "test"


def split_samples(samples: list[Sample]) -> dict[str, list[Sample]]:
    """Group samples by :func:`split_of` their file name (order kept)."""
    out: dict[str, list[Sample]] = {s: [] for s in SPLITS}
    for s in samples:
        out[split_of(s.name)].append(s)
    return out


def seed_selection(samples: list[Sample], ages: tuple[int, int] = (20, 50),
                   per_age: int = 1500) -> list[Sample]:
    """The seed's training set: ages in ``ages`` (inclusive), at most ``per_age`` images per
    age, keeping the largest files first (the seed's proxy for image quality); ties are
    broken by file name so the choice is deterministic.

    Returns:
        the selected samples, sorted by file name.
    """
    by_age: dict[int, list[tuple[int, str, Sample]]] = {}
    for s in samples:
        if ages[0] <= s.age <= ages[1]:
            try:
                size = os.path.getsize(s.path)
            except OSError:
                size = -1
            by_age.setdefault(s.age, []).append((size, s.name, s))
    chosen = []
    for rows in by_age.values():
        rows.sort(key=lambda r: (-r[0], r[1]))
        chosen.extend(r[2] for r in rows[:per_age])
    chosen.sort(key=lambda s: s.name)
    return chosen
