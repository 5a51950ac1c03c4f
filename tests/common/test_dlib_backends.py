"""dlib HoG and MMOD backends (optional extra ``detectors``): real models on a real face."""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest
from skimage import data

pytestmark = pytest.mark.skipif(importlib.util.find_spec("dlib") is None,
                                reason="dlib is not installed (extra 'detectors')")


@pytest.fixture(scope="module")
def astronaut():
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def test_hog_finds_the_face_and_keeps_the_contract(astronaut):
    from common.detectors.dlib_backends import DlibHogDetector

    # given the astronaut (one frontal face near (227, 122)), when detected
    dets = DlibHogDetector(upsample=0).detect(astronaut)
    # then the best detection is on the face, clipped, with a 0..1 confidence
    x1, y1, x2, y2 = dets[0].box
    assert x1 < 227 < x2 and y1 < 122 < y2
    assert 0 <= x1 < x2 <= 512 and 0 <= y1 < y2 <= 512
    assert 0.0 <= dets[0].confidence <= 1.0
    assert [d.confidence for d in dets] == sorted((d.confidence for d in dets), reverse=True)
    # and a face-free grey frame gives nothing; bad input raises ValueError
    assert DlibHogDetector(upsample=0).detect(np.full((200, 300, 3), 128, np.uint8)) == []
    with pytest.raises(ValueError):
        DlibHogDetector().detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError):
        DlibHogDetector(upsample=3)


def test_mmod_finds_the_face_from_the_packaged_model(astronaut):
    from common.detectors.dlib_backends import DlibMmodDetector, mmod_model_file

    # given the model file located inside face_recognition_models (never downloaded)
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("face_recognition_models is not installed (extra 'detectors')")
    assert mmod_model_file().endswith("mmod_human_face_detector.dat")
    # when the CNN runs on the astronaut without upsampling (its 100 px face is above the
    # ~80 px window), then one box on the face
    dets = DlibMmodDetector(upsample=0).detect(astronaut)
    assert len(dets) == 1
    x1, y1, x2, y2 = dets[0].box
    assert x1 < 227 < x2 and y1 < 122 < y2


def test_a_missing_mmod_model_file_is_a_clear_error(tmp_path):
    from common.detectors.dlib_backends import DlibMmodDetector

    with pytest.raises(FileNotFoundError, match="missing.dat"):
        DlibMmodDetector(model=str(tmp_path / "missing.dat"))
