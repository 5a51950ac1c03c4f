"""Head-roll alignment: the shipped roll estimator (models/roll) on real faces."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from common.models import load_model, load_roll_estimator, rotate_crop
from tests.conftest import clip_path


@pytest.fixture(scope="module")
def estimator():
    return load_roll_estimator(threads=1)


@pytest.fixture(scope="module")
def face():
    """The face of scikit-image's public-domain astronaut photo, upright, cut by the SSD
    with a generous frame around it (so turning it keeps real pixels in the corners)."""
    from skimage import data

    from common.detectors.ssd import SSDDetector

    image = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    (det,) = SSDDetector(threads=1).detect(image)
    return image, det.box


def cut(image, box, degrees):
    """The detector box of the face after turning the whole photo by ``degrees`` about
    the box centre (what a camera sees when the head rolls)."""
    x1, y1, x2, y2 = box
    m = cv2.getRotationMatrix2D(((x1 + x2) / 2.0, (y1 + y2) / 2.0), degrees, 1.0)
    turned = cv2.warpAffine(image, m, (image.shape[1], image.shape[0]))
    return turned[y1:y2, x1:x2]


def test_rotate_crop_turns_counter_clockwise_about_the_centre():
    # given an asymmetric square image / when turned by 90 degrees
    img = np.arange(7 * 7 * 3, dtype=np.uint8).reshape(7, 7, 3)
    # then it equals numpy's counter-clockwise quarter turn, shape and dtype kept
    np.testing.assert_array_equal(rotate_crop(img, 90), np.rot90(img))
    assert rotate_crop(img[:, :, 0], 0).shape == (7, 7)


@pytest.mark.parametrize("degrees", [-40, -25, 25, 40])
def test_estimator_reads_the_roll_of_a_real_face(estimator, face, degrees):
    image, box = face
    # given the photo turned by `degrees` (her head itself is tilted by a few degrees, so
    # the roll is compared with the estimate on the photo as taken)
    crop = cut(image, box, degrees)
    (_,), (as_taken,) = estimator.upright([cut(image, box, 0)])
    # when the rolled face is read
    (aligned,), angles = estimator.upright([crop])
    # then the estimated change of roll is within 8 degrees
    assert abs(angles[0] - as_taken - degrees) < 8, (angles, as_taken)
    # and the crop is turned back upright: read again, it would not be turned any more
    assert aligned is not crop and aligned.shape == crop.shape
    (again,), (after,) = estimator.upright([aligned])
    assert abs(after) < estimator.min_degrees and again is aligned, after


def test_upright_face_is_left_as_cut(estimator, face):
    image, box = face
    crop = cut(image, box, 0)
    (aligned,), angles = estimator.upright([crop])
    assert abs(angles[0]) < estimator.min_degrees
    assert aligned is crop
    none, no_angles = estimator.upright([])
    assert none == [] and no_angles.shape == (0,)


def test_estimator_runs_the_same_on_keras_and_onnx(face):
    image, box = face
    crops = [cut(image, box, d) for d in (-30, 0, 30)]
    keras_angles = load_roll_estimator(threads=1, runtime="keras").upright(crops)[1]
    onnx_angles = load_roll_estimator(threads=1, runtime="onnx").upright(crops)[1]
    np.testing.assert_allclose(keras_angles, onnx_angles, atol=0.01)


@pytest.mark.slow
def test_alignment_fixes_the_rolled_head_of_the_head_pose_clip():
    # given the head-pose clip, where the woman (left) rolls her head by about 40 degrees
    from training.video_check import check_clip

    clip = str(clip_path("head-pose-face-detection-female-and-male.mp4"))
    cut_as_is = check_clip(load_model("compact", threads=1, align=None), clip,
                           ["female", "male"])
    aligned = check_clip(load_model("compact", threads=1), clip, ["female", "male"])
    # then with alignment she is read female on most frames, far more often than without
    woman_as_is, woman_aligned = (r["per_position_accuracy"][0] for r in (cut_as_is, aligned))
    assert woman_aligned > 0.5 and woman_aligned > woman_as_is + 0.3, (cut_as_is, aligned)


def test_align_setting_of_load_model_and_classifier_config(monkeypatch):
    from services.classifier.config import ClassifierConfig

    assert load_model("compact", threads=1).aligner is not None
    assert load_model("compact", threads=1, align=None).aligner is None
    with pytest.raises(FileNotFoundError, match="no roll estimator 'no-such-estimator'"):
        load_model("compact", threads=1, align="no-such-estimator")
    monkeypatch.setenv("AGEGENDER_CLASSIFIER_ALIGN", "")
    assert ClassifierConfig().align == ""
