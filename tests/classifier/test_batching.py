"""Dynamic batching logic (no sockets): chunking, ordering, the result message."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from common import wire
from services.classifier.batching import PendingFrames, face_crops, process_batch
from tests.classifier.helpers import faces_message, tracked


@pytest.mark.parametrize("crops", [False, True], ids=["frame-form", "crops-form"])
def test_process_batch_chunks_crops_and_keeps_frame_order(stand_in_model, crops):
    # given 4 frames with 3, 0, 5 and 2 faces (10 crops) and max_batch 4, in either form
    msgs = [wire.decode(faces_message("s", i, n, crops=crops))
            for i, n in enumerate([3, 0, 5, 2])]
    # when they are classified together
    out = process_batch(msgs, stand_in_model, max_batch=4, now_ns=lambda: 123)
    # then the model was called once per chunk of at most 4 crops
    assert stand_in_model.batches == [4, 4, 2]
    # and every frame gets its own result, in order, with its own faces
    results = [wire.decode(frames) for _, frames in out]
    assert [r.seq for r in results] == [0, 1, 2, 3]
    assert [len(r.header["faces"]) for r in results] == [3, 0, 5, 2]
    for r, m in zip(results, msgs):
        assert r.kind == "result"
        assert r.header["t_classifier_ns"] == 123
        assert r.header["t_detector_ns"] == m.header["t_detector_ns"]  # upstream kept
        assert "crops" not in r.header
        assert r.image.tobytes() == m.image.tobytes()  # payload = the frame only
        for i, face in enumerate(r.header["faces"]):
            # the stand-in's age says which crop it saw: value 100 + face index
            assert face["age"] == (100 + i) / 4.0
            assert face["box"] == m.header["faces"][i]["box"]
            assert face["gender"] in ("female", "male")
            assert face["age_range"][0] < face["age_range"][1]


@pytest.mark.parametrize("crops", [False, True], ids=["frame-form", "crops-form"])
def test_only_faces_marked_classify_are_classified(stand_in_model, crops):
    # given a frame with 4 faces of which the detector's schedule marks 0 and 2 to classify,
    # and a model whose meta.json has a fusion map
    stand_in_model.meta = {"fusion": {"rho": 0.5, "method": "simulated tracks",
                                      "coverage_by_n": {"2": 0.8}}}
    msg = wire.decode(faces_message("s", 0, 4, crops=crops, skip=(1, 3)))
    # when classified
    (_, frames), = process_batch([msg], stand_in_model, max_batch=32)
    r = wire.decode(frames)
    # then the model saw 2 crops, those of faces 0 and 2 (its age says which crop)
    assert stand_in_model.batches == [2]
    faces = r.header["faces"]
    assert [f["age"] for f in faces[0::2]] == [100 / 4.0, 102 / 4.0]
    # and the other faces pass with their track and quality and no answer
    assert all("age" not in f and "gender" not in f for f in faces[1::2])
    assert [f["track"] for f in faces] == [1, 2, 3, 4]
    # and the fusion map's numbers travel to the sink (its descriptions stay in meta.json)
    assert r.header["fusion"] == {"rho": 0.5}
    # and the queue counts only the faces to classify
    q = PendingFrames(4, 0.05)
    q.add(msg)
    assert q.faces == 2


def test_pending_frames_due_on_full_batch_or_wait():
    # given a queue with max_batch 4 and 50 ms wait on a fake clock
    now = [0.0]
    q = PendingFrames(4, 0.05, clock=lambda: now[0])
    assert not q.due()
    # when 3 faces are queued it is not yet due
    q.add(wire.decode(faces_message("s", 0, 3)))
    assert not q.due() and abs(q.wait_left() - 0.05) < 1e-9
    # then a 4th face makes it due at once
    q.add(wire.decode(faces_message("s", 1, 1)))
    assert q.due()
    taken = q.take()
    assert [m.seq for m in taken] == [0, 1] and len(q) == 0 and q.faces == 0
    # and a single face becomes due after the wait
    q.add(wire.decode(faces_message("s", 2, 1)))
    now[0] = 0.049
    assert not q.due()
    now[0] = 0.05
    assert q.due()


@pytest.mark.parametrize("sent_crops", [False, True], ids=["frame-form", "crops-form"])
def test_model_crop_aspect_recuts_wider_crops_from_the_frame(sent_crops):
    # given a frame with two faces whose boxes are 9 and 10 px wide, 12 px high
    msg = wire.decode(faces_message("s", 7, 2, width=64, height=48, crops=sent_crops))
    # when a model has no crop aspect, then the boxes are cut as detected
    plain = face_crops(msg, None)
    assert [c.shape for c in plain] == [(12, 9, 3), (12, 10, 3)]
    np.testing.assert_array_equal(plain[1], msg.image[0:12, 10:20])
    # when it was trained on crops 1.0 wide per unit of height
    crops = face_crops(msg, 1.0)
    # then each box is widened about its centre to 12 px (clipped at the frame's left
    # edge for the first) and cut again from the frame; the height is unchanged
    assert [c.shape for c in crops] == [(12, 11, 3), (12, 12, 3)]
    np.testing.assert_array_equal(crops[1], msg.image[0:12, 9:21])


def test_process_batch_uses_the_model_crop_aspect(stand_in_model):
    # given a frame (background value 7) with a face 10 px wide, 12 px high, filled with 101
    msg = wire.decode(faces_message("s", 7, 2, width=64, height=48))
    # when the model was trained on crops as wide as high
    stand_in_model.crop_aspect = 1.0
    (_, frames), = process_batch([msg], stand_in_model, max_batch=4)
    face = wire.decode(frames).header["faces"][1]
    # then it saw the box widened to 12 px: 10 face columns and 2 of background
    assert face["age"] == pytest.approx((10 * 101 + 2 * 7) / 12 / 4.0)


def test_face_crops_keep_the_detector_crop_when_the_frame_cannot_be_cut():
    image = np.full((48, 64, 3), 80, np.uint8)
    ok, jpg = cv2.imencode(".jpg", image)
    header = wire.frame_header("s", 1, time.time_ns(), 64, 48, encoding="jpeg",
                               t_detector_ns=time.time_ns())
    # given a JPEG frame (not decoded by the classifier) and a box with fractional pixels
    header.update(kind="faces", faces=[tracked([0, 0, 10, 12]),
                                       tracked([2.5, 0.2, 9.5, 0.9])],
                  crops=[[12, 10], [1, 7]])
    msg = wire.decode(wire.encode(header, [jpg.tobytes(), image[0:12, 0:10], image[0:1, 2:9]]))
    assert msg.image is None
    # then the detector's crops are used as sent
    assert [c.shape for c in face_crops(msg, 1.0)] == [(12, 10, 3), (1, 7, 3)]
    # and on a raw frame the boxes are cut again: the first widened to 12 px about its
    # centre but clipped at the left edge, the fractional one rounded outwards, not empty
    header.update(encoding="bgr8")
    msg = wire.decode(wire.encode(header, [image, image[0:12, 0:10], image[0:1, 2:9]]))
    assert [c.shape for c in face_crops(msg, 1.0)] == [(12, 11, 3), (1, 8, 3)]


def test_crops_form_with_a_jpeg_frame_is_classified_and_the_jpeg_passed_on(stand_in_model):
    # given a faces message in the crops form, as a detector with payload "crops" sends it
    image = np.full((48, 64, 3), 80, np.uint8)
    image[0:12, 0:12] = 120
    ok, jpg = cv2.imencode(".jpg", image)
    header = wire.frame_header("s", 2, time.time_ns(), 64, 48, encoding="jpeg",
                               t_detector_ns=time.time_ns())
    header.update(kind="faces", faces=[tracked([0, 0, 12, 12])],
                  crops=[[12, 12]])
    msg = wire.decode(wire.encode(header, [jpg.tobytes(), image[0:12, 0:12]]))
    # when classified with a model that has a crop aspect
    stand_in_model.crop_aspect = 1.0
    (_, frames), = process_batch([msg], stand_in_model, max_batch=4)
    result = wire.decode(frames)
    # then the model saw the detector's crop, and the result carries the JPEG unchanged
    assert result.header["faces"][0]["age"] == pytest.approx(120 / 4.0)
    assert result.header["encoding"] == "jpeg" and "crops" not in result.header
    assert bytes(result.image_bytes) == jpg.tobytes()


def test_faces_with_keypoints_are_cut_upright_by_the_model_rule():
    from common.crops import CHIP_RULE, SSD_VIDEO_RULE, cut_crop
    # given a frame with a 20 px face whose eye line is turned by 30 degrees (keypoints)
    # and a face without keypoints (an SSD face)
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    eyes = [[40 - 5 * c, 40 + 5 * s], [40 + 5 * c, 40 - 5 * s]]
    kps = eyes + [[40.0, 44.0], [40.0, 48.0], [31.0, 40.0], [49.0, 40.0]]
    header = wire.frame_header("s", 1, time.time_ns(), 100, 80, t_detector_ns=time.time_ns())
    header.update(kind="faces", faces=[
        tracked([30, 30, 50, 50], keypoints=kps),
        tracked([70, 10, 80, 22])])
    msg = wire.decode(wire.encode(header, [image]))
    # when cut for a model with crop aspect 1.0 and a rule
    for rule in (CHIP_RULE, SSD_VIDEO_RULE):
        crops = face_crops(msg, 1.0, rule)
        # then the first is the rule's upright crop (one warp from the frame) and the
        # second the box widened to 1.0
        np.testing.assert_array_equal(crops[0], cut_crop(image, (30, 30, 50, 50), kps, rule))
        assert crops[0].shape == (round(rule.height * 20), round(rule.width * 20), 3)
        np.testing.assert_array_equal(crops[1], image[10:22, 69:81])


def _crops_form_with_keypoints(jpeg: bytes, image: np.ndarray):
    """A crops-form message (JPEG frame) with one BlazeFace-like face, its crop cut by the
    default rule as the detector cuts it."""
    from common.crops import face_crop

    box = [40, 30, 80, 70]
    kps = [[52.0, 44.0], [68.0, 44.0], [60.0, 52.0], [60.0, 60.0], [44.0, 46.0], [76.0, 46.0]]
    crop = face_crop(image, box, kps)
    header = wire.frame_header("s", 1, time.time_ns(), 128, 96, encoding="jpeg",
                               t_detector_ns=time.time_ns())
    header.update(kind="faces", faces=[tracked(box, keypoints=kps)],
                  crops=[list(crop.shape[:2])])
    return wire.decode(wire.encode(header, [jpeg, crop])), box, kps, crop


def test_crops_form_is_cut_again_by_a_model_rule_that_is_not_the_detectors():
    from common.crops import CHIP_RULE, face_crop
    from common.images import decode_jpeg

    # given a crops-form message: a textured JPEG frame and the detector's crop of one
    # face with keypoints (cut by the default rule)
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 255, (96, 128, 3), np.uint8), (5, 5), 0)
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    msg, box, kps, sent = _crops_form_with_keypoints(jpeg, image)
    # when a model with the default rule asks for its crops, then it gets the sent crop
    np.testing.assert_array_equal(face_crops(msg, 0.883)[0], sent)
    # when a model with its own rule (compact-wild's CHIP_RULE) asks
    crop = face_crops(msg, 0.883, CHIP_RULE)[0]
    # then the face is cut by that rule from the decoded JPEG frame, not the sent crop
    expected = face_crop(decode_jpeg(jpeg), box, kps, 0.883, CHIP_RULE)
    np.testing.assert_array_equal(crop, expected)
    assert crop.shape != sent.shape


def test_crops_form_with_an_undecodable_jpeg_keeps_the_detectors_crop(caplog):
    from common.crops import CHIP_RULE

    image = np.full((96, 128, 3), 90, np.uint8)
    msg, _, _, sent = _crops_form_with_keypoints(b"\xff\xd8 not a jpeg", image)
    # when a model with its own rule needs the frame and it cannot be decoded
    crops = face_crops(msg, 0.883, CHIP_RULE)
    # then the detector's crop is used as sent, with a warning naming the frame
    np.testing.assert_array_equal(crops[0], sent)
    assert "detector's crops are used" in caplog.text and "seq 1" in caplog.text
