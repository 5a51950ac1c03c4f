"""Dataset loaders: UTKFace name quirks, IMDB-WIKI .mat metadata, split, seed selection."""

from __future__ import annotations

import datetime

import numpy as np
import pytest
import scipy.io

from training.datasets import (GENDERS, Sample, datenum_to_date, imdb_wiki_age,
                               load_imdb_wiki, load_utkface, parse_utkface_name,
                               seed_selection, split_of, split_samples)


def datenum(y: int, m: int, d: int) -> float:
    """MATLAB datenum of a date (datenum(0001-01-01) = 367)."""
    return float(datetime.date(y, m, d).toordinal() + 366)


@pytest.mark.parametrize("name, expected", [
    ("26_1_0_20170116174525125.jpg.chip.jpg", (26, 1, 0)),
    ("1_0_4_20161221193019962.jpg.chip.jpg", (1, 0, 4)),
    ("39_1_20170116174525125.jpg.chip.jpg", None),        # missing race field
    ("61_1__20170109142408075.jpg.chip.jpg", None),       # empty field
    ("x_1_0_20170109142408075.jpg.chip.jpg", None),
    ("26_2_0_20170116174525125.jpg.chip.jpg", None),      # gender out of range
    ("readme.jpg", None),
])
def test_parse_utkface_name(name, expected):
    # given a UTKFace file name / when parsed / then labels or None, never an exception
    assert parse_utkface_name(name) == expected


def test_load_utkface_skips_malformed_names_with_count(tmp_path, caplog):
    # given a folder with two good names, two malformed ones and a non-image file
    for n in ("20_0_0_1.jpg.chip.jpg", "30_1_2_2.jpg.chip.jpg", "39_1_3.jpg.chip.jpg",
              "_1_0_4.jpg.chip.jpg", "notes.txt"):
        (tmp_path / n).write_bytes(b"x")
    # when loaded
    samples, skipped = load_utkface(tmp_path)
    # then the good ones are listed with canonical labels and the bad ones counted + logged
    assert [(s.age, s.gender) for s in samples] == [(20, 0), (30, 1)]
    assert skipped == 2
    assert "skipped 2 image(s) with a malformed name" in caplog.text
    assert GENDERS[samples[1].gender] == "female"


def test_load_utkface_missing_folder_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_utkface(tmp_path / "absent")


def test_datenum_conversion():
    # given MATLAB datenums: 1980-07-15, year-0 dates (unknown births), NaN
    dn = np.array([datenum(1980, 7, 15), 1.0, 366.0, np.nan])
    # when converted / then the real date, year 0 (not clamped to year 1), -1 for NaN
    assert datenum_to_date(dn).tolist() == [[1980, 7, 15], [0, 1, 1], [0, 1, 1], [-1, 1, 1]]
    # MATLAB reference values: datenum(2000,1,1) = 730486
    assert datenum_to_date(np.array([730486.0])).tolist() == [[2000, 1, 1]]


def test_imdb_wiki_age_convention():
    # given births before/after July 1st and a photo taken in 2010 (assumed 2010-07-01)
    dob = np.array([datenum(1980, 7, 15), datenum(1980, 7, 1), datenum(1980, 1, 2)])
    # then ages 29, 30, 30
    assert imdb_wiki_age(dob, np.array([2010, 2010, 2010])).tolist() == [29, 30, 30]


def write_mat(path, rows, key="wiki"):
    """Write a .mat file with IMDB-WIKI's structure: a 1x1 struct of 1xN fields."""
    n = len(rows)
    full_path = np.empty((1, n), dtype=object)
    for i, r in enumerate(rows):
        full_path[0, i] = np.array([r["path"]])
    struct = {
        "dob": np.array([[r["dob"] for r in rows]], dtype=np.float64),
        "photo_taken": np.array([[r["taken"] for r in rows]], dtype=np.uint16),
        "full_path": full_path,
        "gender": np.array([[r["gender"] for r in rows]], dtype=np.float64),
        "name": full_path.copy(),
        "face_location": np.empty((1, n), dtype=object),
        "face_score": np.array([[r["face"] for r in rows]], dtype=np.float64),
        "second_face_score": np.array([[r["second"] for r in rows]], dtype=np.float64),
    }
    for i in range(n):
        struct["face_location"][0, i] = np.array([[1.0, 2.0, 3.0, 4.0]])
    scipy.io.savemat(str(path), {key: struct})


def test_load_imdb_wiki_filters_and_labels(tmp_path):
    # given one good row per gender and one row for each of the seed's filters
    good = dict(dob=datenum(1980, 7, 15), taken=2010, face=4.5, second=np.nan)
    rows = [
        dict(good, path="17/a.jpg", gender=1.0),                 # male -> canonical 0
        dict(good, path="17/b.jpg", gender=0.0),                 # female -> canonical 1
        dict(good, path="17/c.jpg", gender=np.nan),              # NaN gender
        dict(good, path="17/d.jpg", gender=1.0, face=-np.inf),   # no face
        dict(good, path="17/e.jpg", gender=1.0, second=2.0),     # second face
        dict(good, path="17/f.jpg", gender=1.0, face=2.5),       # low face score
        dict(good, path="17/g.jpg", gender=1.0, dob=200.0),      # year-0 birth
        dict(good, path="17/h.jpg", gender=1.0, dob=datenum(2012, 1, 1)),  # born after
        dict(good, path="17/i.jpg", gender=1.0, dob=datenum(1890, 1, 1)),  # age 120
    ]
    mat = tmp_path / "wiki.mat"
    write_mat(mat, rows)
    # when loaded
    samples, counts = load_imdb_wiki(mat)
    # then only the good rows remain, with age 29 and canonical genders
    assert [(s.name, s.age, GENDERS[s.gender]) for s in samples] == [
        ("a.jpg", 29, "male"), ("b.jpg", 29, "female")]
    assert samples[0].path == str(tmp_path / "17" / "a.jpg")
    assert counts == {"rows": 9, "nan_gender": 1, "no_face": 1, "second_face": 1,
                      "low_face_score": 1, "unknown_birth": 1, "born_after_photo": 1,
                      "age_out_of_range": 1, "kept": 2}


def test_split_is_deterministic_and_80_10_10():
    names = [f"{i % 90}_{i % 2}_0_2017{i:010d}.jpg.chip.jpg" for i in range(5000)]
    # when split twice, in different orders
    first = {n: split_of(n) for n in names}
    second = {n: split_of(n) for n in reversed(names)}
    # then identical, and close to 80/10/10
    assert first == second
    fractions = {s: sum(v == s for v in first.values()) / len(names)
                 for s in ("train", "val", "test")}
    assert abs(fractions["train"] - 0.8) < 0.03
    assert abs(fractions["val"] - 0.1) < 0.02 and abs(fractions["test"] - 0.1) < 0.02
    # a path's split depends on its base name only
    assert split_of("/a/b/" + names[0]) == first[names[0]]
    parts = split_samples([Sample(n, 30, 0) for n in names[:100]])
    assert sum(len(v) for v in parts.values()) == 100


def test_seed_selection_trims_per_age_largest_first(tmp_path):
    # given ages 19..21 with 3 files each of sizes 10, 30, 20 bytes
    samples = []
    for age in (19, 20, 21):
        for j, size in enumerate((10, 30, 20)):
            p = tmp_path / f"{age}_0_0_{j}.jpg.chip.jpg"
            p.write_bytes(b"x" * size)
            samples.append(Sample(str(p), age, 0))
    # when the seed selection keeps 2 per age within 20..50
    chosen = seed_selection(samples, ages=(20, 50), per_age=2)
    # then age 19 is gone and the two largest files of each age remain
    assert sorted(s.name for s in chosen) == ["20_0_0_1.jpg.chip.jpg", "20_0_0_2.jpg.chip.jpg",
                                              "21_0_0_1.jpg.chip.jpg", "21_0_0_2.jpg.chip.jpg"]
