"""Wild-proxy transforms and evaluation (training/wild.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from training import degrade, wild


@pytest.fixture(scope="module")
def face() -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """scikit-image's public-domain astronaut, face region as a 200x200 chip, and a box."""
    import skimage.data

    image = np.ascontiguousarray(skimage.data.astronaut()[:, :, ::-1])
    chip = cv2.resize(image[20:260, 110:330], (200, 200))
    return chip, (20, 0, 180, 200)


def test_same_seed_same_pixels_other_seed_other_pixels(face):
    # given one face and its box
    image, box = face
    # when the wild version is made twice with one seed and once with another
    a = wild.wild_version(image, box, seed=7)
    b = wild.wild_version(image, box, seed=7)
    c = wild.wild_version(image, box, seed=8)
    # then the same seed gives the same crop, another seed another one
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3
    np.testing.assert_array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_image_seed_is_stable_and_depends_on_name_and_index():
    assert wild.image_seed("1_0_0_x.jpg") == wild.image_seed("/other/dir/1_0_0_x.jpg")
    assert wild.image_seed("1_0_0_x.jpg", 0) != wild.image_seed("1_0_0_x.jpg", 1)
    assert wild.image_seed("1_0_0_x.jpg") != wild.image_seed("1_0_0_y.jpg")


def test_clean_params_give_the_crop_rule_crop(face):
    # given the clean parameters (every step off, no box jitter)
    image, box = face
    p = wild.sample_params(np.random.default_rng(0), wild.CLEAN_PARAMS)
    # when applied with the SSD crop rule
    crop = wild.apply_params(image, box, p, wild.ssd_crop_rule(0.883))
    # then the crop is the box widened to 0.883 and cut from the image (border inside)
    expect = wild.ssd_crop_rule(0.883)(wild.pad_frame(image)[0],
                                       tuple(v + wild.pad_frame(image)[1] for v in box))
    np.testing.assert_array_equal(crop, expect)
    assert abs(crop.shape[1] / crop.shape[0] - 0.883) < 0.02


def test_small_face_is_blockier_than_the_native_one(face):
    # given a face downscaled so its box is 16 px wide, and one kept at native size
    image, box = face
    p = wild.sample_params(np.random.default_rng(0), wild.CLEAN_PARAMS)
    native = wild.apply_params(image, box, p, wild.ssd_crop_rule())
    small = wild.apply_params(image, box, {**p, "face_px": 16.0}, wild.ssd_crop_rule())
    # then both come back at about the same size, the small one with less fine detail
    assert abs(small.shape[0] - native.shape[0]) <= 12

    def detail(x):
        return float(np.abs(cv2.Laplacian(cv2.cvtColor(x, cv2.COLOR_BGR2GRAY),
                                          cv2.CV_32F)).mean())
    assert detail(small) < 0.5 * detail(native)


def test_each_transform_keeps_shape_and_changes_pixels(face):
    image, _ = face
    outs = {
        "occlude": degrade.occlude(image, (10, 10, 60, 60), (0, 255, 0)),
        "cast": degrade.colour_cast(image, (0.8, 1.0, 1.2), 1.3),
        "gray": degrade.grayscale(image),
        "motion": degrade.motion_blur(image, 9.0, 30.0),
        "defocus": degrade.defocus_blur(image, 2.0),
        "jpeg": degrade.jpeg(image, 20),
    }
    for name, out in outs.items():
        assert out.shape == image.shape and out.dtype == np.uint8, name
        assert not np.array_equal(out, image), name
    assert np.all(outs["occlude"][20, 20] == (0, 255, 0))
    g = outs["gray"]
    assert np.array_equal(g[:, :, 0], g[:, :, 1]) and np.array_equal(g[:, :, 1], g[:, :, 2])
    # identity parameters leave the image alone
    np.testing.assert_array_equal(degrade.colour_cast(image, (1, 1, 1), 1.0), image)
    np.testing.assert_array_equal(degrade.motion_blur(image, 0.5, 0.0), image)
    assert degrade.downscale(image, 0.1).shape == (20, 20, 3)


def test_jitter_box_scales_and_shifts_about_the_centre():
    box = degrade.jitter_box((0, 0, 100, 200), scale=1.5, shift=(0.1, -0.1), aspect=1.0)
    assert box == pytest.approx((-15, -70, 135, 230))
    assert degrade.round_box((-5.5, 3.2, 50.1, 400), 100, 300) == (0, 3, 51, 300)


def test_crop_rule_is_pluggable_and_gets_keypoints_in_frame_pixels(face):
    # given a crop rule that records what it was called with
    image, box = face
    seen = {}

    def rule(frame, b, keypoints=None):
        seen.update(frame=frame.shape, box=b, kps=keypoints)
        return frame[b[1]:b[3], b[0]:b[2]]

    kps = np.array([[70.0, 80.0], [130.0, 80.0]])
    p = wild.sample_params(np.random.default_rng(0), wild.CLEAN_PARAMS)
    crop = wild.apply_params(image, box, {**p, "face_px": 40.0}, rule, keypoints=kps)
    # then box and keypoints are in the (padded, downscaled) frame's pixels
    _, b = wild.pad_frame(image)
    f = 40.0 / (box[2] - box[0])
    np.testing.assert_allclose(seen["kps"], (kps + b) * f)
    assert abs((seen["box"][2] - seen["box"][0]) - 40) <= 2
    assert crop.shape[0] > 150   # enlarged back to about the native size


def test_only_switches_every_other_step_off():
    p = wild.DEFAULT_PARAMS.only("jpeg")
    d = wild.sample_params(np.random.default_rng(3), p)
    assert d["jpeg"] is not None and d["face_px"] is None and d["blur"] is None
    assert d["box"]["scale"] == 1.0 and d["box"]["shift"] == (0.0, 0.0)
    with pytest.raises(ValueError):
        wild.DEFAULT_PARAMS.only("rain")


def test_group_metrics_and_report():
    age = np.array([5, 25, 35, 75])
    gender = np.array([0, 1, 1, 0])
    race = np.array([0, 1, 1, 2])
    pred = {"age": np.array([15.0, 25.0, 60.0, 70.0]), "gender": np.array([0, 1, 0, 0]),
            "age_lo": np.array([0, 20, 50, 60]), "age_hi": np.array([10, 30, 70, 80])}
    g = wild.group_metrics(age, gender, pred)
    assert g["n"] == 4 and g["age_mae"] == pytest.approx((10 + 0 + 25 + 5) / 4)
    assert g["gender_accuracy"] == 0.75
    assert g["within_one_band"] == 0.75          # 35 read as 60: two bands off
    assert g["interval_coverage"] == 0.75 and g["interval_width"] == 15.0
    r = wild.report(age, gender, race, pred, face_px=np.array([20, np.nan, 30, 39]))
    assert r["per_race_gender"]["black female"]["n"] == 2
    assert r["per_race_gender"]["black female"]["gender_accuracy"] == 0.5
    assert r["adults_20_69"]["n"] == 2 and r["per_band"]["70+"]["n"] == 1
    assert r["per_face_size"]["native"]["n"] == 1
    assert r["per_face_size"]["16-24 px"]["n"] == 1
    md = wild.markdown({"m": {"clean": r, "wild": r}})
    assert "| black female | 2 |" in md


from tests.conftest import SHARED  # noqa: E402

UTKFACE = SHARED / "datasets" / "utkface" / "UTKFace"


@pytest.mark.skipif(not UTKFACE.is_dir(), reason=f"UTKFace not found at {UTKFACE}")
def test_shipped_model_is_worse_on_the_wild_proxy_than_on_clean_crops(cache_env):
    # given 60 test-split faces of UTKFace with SSD boxes and the shipped compact model
    from common.models import load_model

    faces = wild.load_faces(UTKFACE, "test", limit=60, detector="ssd")
    model = load_model("compact", threads=1)
    # when both versions of each face are evaluated
    r = wild.evaluate_wild(wild.student_predictor(model), faces,
                           wild.model_crop_rule(model, "ssd"), steps=("jpeg",))
    # then every group is reported and the wild version costs age accuracy
    assert r["n"] == len(faces) >= 55
    assert r["clean"]["overall"]["n"] == r["wild"]["overall"]["n"] == len(faces)
    assert sum(g["n"] for g in r["clean"]["per_race_gender"].values()) == len(faces)
    assert r["wild"]["overall"]["age_mae"] > r["clean"]["overall"]["age_mae"]
    assert r["clean"]["overall"]["gender_accuracy"] > 0.8
    assert set(r["only"]) == {"jpeg"}
    assert "| overall | " in wild.markdown({"compact": r})


@pytest.mark.skipif(not UTKFACE.is_dir(), reason=f"UTKFace not found at {UTKFACE}")
def test_evaluate_wild_command_on_a_test_subset(cache_env):
    # given the CLI and 60 faces of the test split (BlazeFace boxes, the model's crop rule)
    import json

    from click.testing import CliRunner

    from training.cli import evaluate_command

    # when `agegender evaluate --wild` runs on them
    res = CliRunner().invoke(evaluate_command, [
        "--wild", "--split", "test", "--limit", "60", "--threads", "1", "--json",
        "--dataset", f"utkface={UTKFACE}"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.output[res.output.index("{"):])
    # then it reports clean and wild versions of the same faces, every group, and the
    # degraded versions cost age accuracy while clean gender stays high
    assert r["detector"] == "blazeface" and r["n"] == 60 and r["no_face"] == 0
    c, w = r["clean"], r["wild"]
    assert c["overall"]["n"] == w["overall"]["n"] == 60
    assert sum(g["n"] for g in c["per_band"].values()) == 60
    assert sum(g["n"] for g in w["per_face_size"].values()) == 60
    assert w["overall"]["age_mae"] > c["overall"]["age_mae"]
    assert c["overall"]["gender_accuracy"] >= 0.85
    assert 0 < c["overall"]["interval_coverage"] <= 1


def test_evaluate_wild_needs_a_utkface_folder():
    from click.testing import CliRunner

    from training.cli import evaluate_command

    res = CliRunner().invoke(evaluate_command, ["--wild", "--dataset", "imdb=x.mat"])
    assert res.exit_code != 0 and "--wild needs utkface=FOLDER" in res.output


def test_model_crop_rule_follows_the_model_meta(face):
    # given a model whose meta.json names a crop rule
    from common.crops import CropRule

    class Model:
        crop_rule = CropRule(1.0, 1.0, 0.0)
        crop_aspect = 0.883

    image, box = face
    kps = np.array([[70.0, 80.0], [130.0, 80.0], [100, 110], [100, 140], [40, 90], [160, 90]])
    # when its BlazeFace rule cuts a face
    crop = wild.model_crop_rule(Model())(image, box, kps)
    # then the crop is the model's rule's size (1 x 1 box sides)
    side = max(box[2] - box[0], box[3] - box[1])
    assert crop.shape[:2] == (side, side)
    # and its SSD rule widens the box to crop_aspect
    ssd = wild.model_crop_rule(Model(), "ssd")(image, (50, 0, 150, 200))
    assert ssd.shape[1] / ssd.shape[0] == pytest.approx(0.883, abs=0.02)


def test_blazeface_rule_cuts_an_upright_crop_from_rolled_keypoints(face):
    from common.crops import CHIP_RULE
    # given a face rolled by 20 degrees with keypoints on its tilted eye line
    image, box = face
    kps = np.array([[70.0, 90.0], [130.0, 68.0], [100, 110], [100, 140], [40, 100], [160, 80]])
    rule = wild.blazeface_crop_rule()
    # when its wild version is cut by the BlazeFace rule
    crop = wild.wild_version(image, box, seed=1, crop_rule=rule, keypoints=kps,
                             params=wild.CLEAN_PARAMS)
    # then the crop has the rule's shape (0.85 x 0.96 of the box side)
    side = max(box[2] - box[0], box[3] - box[1])
    assert crop.shape[0] == pytest.approx(CHIP_RULE.height * side, abs=2)
    assert crop.shape[1] == pytest.approx(CHIP_RULE.width * side, abs=2)


def test_haze_lowers_contrast_and_is_off_in_the_evaluation_recipe(face):
    image, box = face
    # when the face is blended halfway towards gray 200
    out = degrade.haze(image, 0.5, 200)
    # then its contrast halves and its values move towards 200
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert out.std() == pytest.approx(image.std() / 2, rel=0.05)
    assert abs(out.mean() - 200) < abs(image.mean() - 200)
    # and the evaluation recipe never draws it (wild-v1 faces stay as they were)
    assert all(wild.sample_params(np.random.default_rng(s))["haze"] is None for s in range(50))
    p = wild.sample_params(np.random.default_rng(0), wild.DEFAULT_PARAMS.only("haze"))
    assert p["haze"] is not None and p["blur"] is None


@pytest.mark.skipif(not UTKFACE.is_dir(), reason=f"UTKFace not found at {UTKFACE}")
def test_served_evaluation_gives_the_opinion_its_own_crops_and_the_models_weight(cache_env):
    # given 6 test-split faces (BlazeFace boxes), the default model (its own crop rule) and
    # the dlib second opinion (SSD_VIDEO_RULE crops)
    from common.models import DEFAULT_MODEL, load_model
    from common.models.dlib_descriptor import DlibGenderOpinion, opinion_weight

    faces = wild.load_faces(UTKFACE, "test", limit=6, detector="blazeface")
    model = load_model(DEFAULT_MODEL, threads=1)
    opinion = DlibGenderOpinion()
    assert model.crop_rule != opinion.rule
    # when the faces are evaluated as served
    r = wild.evaluate_served(model, faces, "blazeface", opinion)
    # then each face's gender is the model's log-odds on its own crop merged, at the
    # model's weight, with the opinion's log-odds on the opinion's crop of the same face,
    # except for faces made smaller than the opinion's min_face_px (the model's alone)
    w = opinion_weight(model.meta, opinion.name)
    small = 0
    for kind, degraded in (("clean", False), ("wild", True)):
        own, face_px = wild.make_crops(faces, degraded, wild.model_crop_rule(model))
        theirs = wild.make_crops(faces, degraded, wild.blazeface_crop_rule(opinion.rule))[0]
        p = np.clip(wild.student_predictor(model)(own)["p_female"], 1e-4, 1 - 1e-4)
        z_opinion = opinion(theirs)[0]
        z_opinion[face_px < opinion.min_face_px] = np.nan
        z = (1 - w) * np.log(p / (1 - p)) + w * z_opinion
        z = np.where(np.isnan(z), np.log(p / (1 - p)), z)
        expected = (z > 0).astype(int) == faces.gender
        assert r[kind]["overall"]["gender_accuracy"] == pytest.approx(expected.mean(), abs=1e-4)
        assert r["failed"][kind] == int(np.isnan(z_opinion).sum())
        small += int(np.sum(face_px < opinion.min_face_px))
    # (the six faces include wild ones under the size, so the gate was exercised)
    assert small >= 1
    # and the SSD path is refused with the opinion (its crops need BlazeFace keypoints)
    with pytest.raises(ValueError, match="blazeface"):
        wild.evaluate_served(model, faces, "ssd", opinion)


def test_evaluate_refuses_the_second_opinion_without_wild():
    from click.testing import CliRunner

    from training.cli import evaluate_command

    res = CliRunner().invoke(evaluate_command, ["--second-opinion", "dlib", "--split", "test"])
    assert res.exit_code == 2 and "add --wild" in res.output
