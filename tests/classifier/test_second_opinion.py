"""The dlib gender second opinion in the classifier: real dlib model files, the shipped
head, the real compact model and BlazeFace on scikit-image's astronaut (the built-in
demo's face)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from common import wire
from common.crops import cut_crop
from common.models import dlib_descriptor as dd
from services.classifier.batching import process_batch
from services.classifier.config import ClassifierConfig
from services.classifier.main import OpinionMetrics
from tests.classifier.helpers import tracked
from tests.conftest import ROOT

needs_dlib = pytest.mark.skipif(
    importlib.util.find_spec("dlib") is None
    or importlib.util.find_spec("face_recognition_models") is None,
    reason="dlib-bin / face-recognition-models not installed (pip install '.[test]')")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    """scikit-image's astronaut photo (Eileen Collins, public domain) as BGR."""
    import skimage.data

    return np.ascontiguousarray(skimage.data.astronaut()[:, :, ::-1])


@pytest.fixture(scope="module")
def opinion():
    """The shipped dlib second opinion."""
    if importlib.util.find_spec("dlib") is None \
            or importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("dlib-bin / face-recognition-models not installed (pip install '.[test]')")
    return dd.DlibGenderOpinion()


@pytest.fixture(scope="module")
def compact():
    """The shipped ``compact`` model (no opinion weight in its meta.json: 0.5)."""
    from common.models import load_model

    return load_model("compact", threads=1)


def faces_msg(image: np.ndarray, faces: list[dict]) -> wire.Message:
    """A decoded ``faces`` message (frame form) with these face maps."""
    h, w = image.shape[:2]
    header = wire.frame_header("cam", 1, 1, w, h, t_detector_ns=2)
    header.update(kind="faces", faces=faces)
    return wire.decode(wire.encode(header, [image]))


def test_shipped_head_is_128_weights_and_a_bias_with_its_provenance():
    # given the shipped head file
    path = ROOT / "models" / dd.HEAD_FOLDER / dd.HEAD_FILE
    data = json.loads(path.read_text())
    # when it is loaded
    head = dd.GenderHead.load()
    # then it is the file's 128 finite weights and bias, and says what it was fitted on,
    # by which command, and how accurate it is on the test split, clean and wild
    assert head.weights.shape == (128,) and np.all(np.isfinite(head.weights))
    assert head.bias == data["bias"] and head.weights.tolist() == data["weights"]
    assert "UTKFace train" in data["fitted_on"]["dataset"]
    assert data["fitted_on"]["faces"] > 1000
    assert data["command"].startswith("python -m training.dlib_head")
    for kind in ("clean", "wild"):
        assert 0.8 < data["test_split"][kind]["gender"] <= 1.0


def test_head_refuses_malformed_weights(tmp_path):
    with pytest.raises(ValueError, match="128 finite weights"):
        dd.GenderHead([0.1] * 127, 0.0)
    with pytest.raises(ValueError, match="128 finite weights"):
        dd.GenderHead([float("nan")] * 128, 0.0)
    bad = tmp_path / "head.json"
    bad.write_text(json.dumps({"bias": 0.0}))
    with pytest.raises(ValueError, match="weights"):
        dd.GenderHead.load(bad)


def test_folded_head_gives_the_fitted_heads_probabilities():
    # given a logistic head fitted on standardised descriptors (random, separable data)
    from training.dlib_head import fold
    from training.teachers import EmbeddingHeads

    rng = np.random.default_rng(0)
    x = rng.normal(0.1, 0.05, (400, 128))
    g = (x[:, :5].sum(axis=1) > 0.5).astype(int)
    heads = EmbeddingHeads().fit(x, rng.uniform(20, 60, 400), g)
    # when its standardisation is folded into 128 weights and a bias
    head = dd.GenderHead(*fold(heads))
    # then the raw-descriptor logits give the fitted head's P(female)
    p = 1 / (1 + np.exp(-head.logits(x[:50])))
    np.testing.assert_allclose(p, heads.predict(x[:50])["p_female"], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("gender,conf,z,expect,expect_conf", [
    ("male", 0.8, math.log(0.9 / 0.1), "female", 0.6),      # logits -1.386 and 2.197
    ("female", 0.7, 0.0, "female", 0.6046),                # half the model's log-odds
    ("male", 0.9, -math.log(0.9 / 0.1), "male", 0.9),      # agreeing opinions
])
def test_combined_gender_is_the_mean_of_the_two_logits(gender, conf, z, expect, expect_conf):
    out = dd.combine_gender({"age": 30.0, "gender": gender, "gender_confidence": conf}, z)
    assert out["gender"] == expect and out["age"] == 30.0
    assert out["gender_confidence"] == pytest.approx(expect_conf, abs=1e-3)


def test_opinion_weight_comes_from_the_models_meta_and_is_checked():
    # a model without an entry gets the mean of the two logits
    assert dd.opinion_weight({}) == dd.OPINION_WEIGHT == 0.5
    assert dd.opinion_weight({"second_opinion": {"other": {"weight": 0.9}}}) == 0.5
    # a model with one gets its own
    assert dd.opinion_weight({"second_opinion": {"dlib": {"weight": 0.7}}}) == 0.7
    # and a weight outside [0, 1] or not a number is refused, naming the field
    for bad in (1.5, -0.1, "0.7", True, None, float("nan")):
        with pytest.raises(ValueError, match="second_opinion.dlib.weight"):
            dd.opinion_weight({"second_opinion": {"dlib": {"weight": bad}}})
    # as is an entry without a weight, or a block that is not a map of entries
    for block in ({"dlib": 0.7}, {"dlib": "x"}, {"dlib": {}}, {"other": {"w": 1}}):
        with pytest.raises(ValueError, match=r"second_opinion\.\w+\.weight"):
            dd.opinion_weight({"second_opinion": block})
    for block in ("x", [], 0.7):
        with pytest.raises(ValueError, match="second_opinion must be a map"):
            dd.opinion_weight({"second_opinion": block})


@pytest.fixture
def bad_weight_model(tmp_path) -> Path:
    """A copy of the default model whose meta.json gives the opinion a weight of 2."""
    import shutil

    from common.models import DEFAULT_MODEL

    folder = tmp_path / "bad"
    shutil.copytree(ROOT / "models" / DEFAULT_MODEL, folder)
    meta = json.loads((folder / "meta.json").read_text())
    meta["second_opinion"] = {"dlib": {"weight": 2}}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def test_model_with_a_malformed_opinion_weight_does_not_load(bad_weight_model):
    # given a copy of the default model whose meta.json gives the opinion a weight of 2
    from common.models import load_model

    folder = bad_weight_model
    # when it is loaded, then it is refused at once, naming the folder and the field
    with pytest.raises(ValueError, match=r"bad: meta.json second_opinion.dlib.weight .* 2"):
        load_model(str(folder), threads=1)


@pytest.mark.parametrize("weight", [0.0, 0.7, 1.0])
def test_combined_gender_weights_the_opinion(weight):
    # given a model reading male (P(female) 0.2, log-odds -1.386) and an opinion of +2
    pred = {"age": 30.0, "gender": "male", "gender_confidence": 0.8}
    out = dd.combine_gender(pred, 2.0, weight)
    # then the answer is the weighted mean of the two log-odds
    z = (1 - weight) * math.log(0.2 / 0.8) + weight * 2.0
    pf = 1 / (1 + math.exp(-z))
    assert out["gender"] == ("female" if pf > 0.5 else "male")
    assert out["gender_confidence"] == pytest.approx(max(pf, 1 - pf), abs=1e-4)


def test_no_opinion_keeps_the_models_answer():
    pred = {"age": 30.0, "gender": "male", "gender_confidence": 0.8}
    assert dd.combine_gender(pred, float("nan")) == pred


def test_missing_package_is_a_clear_error_naming_what_to_install():
    with pytest.raises(dd.DlibUnavailable, match="pip install no-such-package"):
        dd.package_file("no_such_package", "x.dat")
    with pytest.raises(ValueError, match="none, dlib"):
        dd.load_opinion("cydral")
    assert dd.load_opinion("none") is None


@needs_dlib
def test_classifier_with_the_second_opinion_reads_the_astronaut_female(astronaut, opinion,
                                                                       compact):
    # given the astronaut as BlazeFace finds her (box and keypoints), marked to classify
    from common.detectors import make_detector

    (det,) = make_detector("blazeface", threads=1).detect(astronaut)
    face = tracked([int(v) for v in det.box], keypoints=np.asarray(det.keypoints).tolist())
    msg = faces_msg(astronaut, [face])
    calls = []
    # when the classifier classifies her with and without the dlib opinion
    alone = wire.decode(process_batch([msg], compact, 8)[0][1]).header["faces"][0]
    both = wire.decode(process_batch([msg], compact, 8, opinion=opinion,
                                     on_opinion=lambda *a: calls.append(a))[0][1])
    face = both.header["faces"][0]
    # then the combined answer is female, the opinion was used once, and the combined
    # confidence differs from the model's (the head's opinion was merged); age unchanged
    assert face["gender"] == "female" and face["gender_confidence"] > 0.5
    assert face["gender_confidence"] != alone["gender_confidence"]
    assert face["age"] == alone["age"]
    assert [c[:2] for c in calls] == [(1, 0)]
    # and the opinion alone reads her female
    logits, ok = opinion([cut_crop(astronaut, det.box, det.keypoints, opinion.rule)])
    assert ok[0] and logits[0] > 0


@needs_dlib
def test_default_model_merges_the_opinion_with_its_own_weight(astronaut, opinion):
    # given the default model, whose meta.json gives the dlib opinion its own weight
    from common.detectors import make_detector
    from common.models import DEFAULT_MODEL, load_model

    model = load_model(DEFAULT_MODEL, threads=1)
    weight = dd.opinion_weight(model.meta, opinion.name)
    assert weight != dd.OPINION_WEIGHT
    (det,) = make_detector("blazeface", threads=1).detect(astronaut)
    msg = faces_msg(astronaut, [tracked([int(v) for v in det.box],
                                        keypoints=np.asarray(det.keypoints).tolist())])
    # when the classifier classifies the astronaut with the opinion
    alone = wire.decode(process_batch([msg], model, 8)[0][1]).header["faces"][0]
    both = wire.decode(process_batch([msg], model, 8, opinion=opinion)[0][1]).header["faces"][0]
    # then the answer is the model's merged with the opinion's logit at that weight (the
    # opinion reading its own crop rule's cut), and she is read female
    (z,), _ = opinion([cut_crop(astronaut, det.box, det.keypoints, opinion.rule)])
    expected = dd.combine_gender({k: alone[k] for k in ("gender", "gender_confidence")},
                                 float(z), weight)
    assert both["gender"] == expected["gender"] == "female"
    assert both["gender_confidence"] == pytest.approx(expected["gender_confidence"], abs=2e-4)


@needs_dlib
def test_face_with_implausible_landmarks_falls_back_to_the_model_and_is_counted(
        astronaut, opinion, compact):
    # given two faces to classify without keypoints (SSD-style boxes): the astronaut's
    # face, and a false detection on the flag in the photo's top-left corner, where
    # dlib's 5-point landmarks cannot be a face
    real = tracked([180, 40, 300, 190], track=1)
    flag = tracked([0, 0, 80, 80], track=2)
    msg = faces_msg(astronaut, [real, flag])
    reg = CollectorRegistry()
    metrics = OpinionMetrics(reg, opinion.name)
    # when they are classified with the second opinion
    with_op = wire.decode(process_batch([msg], compact, 8, opinion=opinion,
                                        on_opinion=metrics.on_opinion)[0][1]).header["faces"]
    alone = wire.decode(process_batch([msg], compact, 8)[0][1]).header["faces"]
    # then the flag keeps the model's answer exactly, the real face gets the combined one
    assert {k: with_op[1][k] for k in ("gender", "gender_confidence", "age")} == \
        {k: alone[1][k] for k in ("gender", "gender_confidence", "age")}
    assert with_op[0]["gender_confidence"] != alone[0]["gender_confidence"]
    # and the fallback is counted beside the use
    value = reg.get_sample_value
    assert value("agegender_second_opinions_total", {"model": "dlib"}) == 1
    assert value("agegender_second_opinion_fallbacks_total",
                 {"model": "dlib", "reason": "no_answer"}) == 1
    assert value("agegender_second_opinion_fallbacks_total",
                 {"model": "dlib", "reason": "budget"}) == 0
    assert value("agegender_second_opinion_seconds_count", {"model": "dlib"}) == 1


@needs_dlib
def test_faces_over_the_cpu_budget_keep_the_models_answer_and_are_counted(
        astronaut, opinion, compact):
    # given two frames with the astronaut's face to classify and a budget of a thousandth
    # of a core that refills far slower than one opinion costs
    from services.classifier.batching import OpinionBudget

    msgs = [faces_msg(astronaut, [tracked([180, 40, 300, 190], track=t)]) for t in (1, 2)]
    budget = OpinionBudget(0.001, burst_s=0.001)
    reg = CollectorRegistry()
    metrics = OpinionMetrics(reg, opinion.name)
    # when both are classified in one batch with the opinion
    out = [wire.decode(f).header["faces"][0] for _, f in process_batch(
        msgs, compact, 8, opinion=opinion, on_opinion=metrics.on_opinion, budget=budget)]
    alone = [wire.decode(f).header["faces"][0] for _, f in process_batch(msgs, compact, 8)]
    # then the first face got the opinion, the second the model's answer alone
    assert out[0]["gender_confidence"] != alone[0]["gender_confidence"]
    assert out[1]["gender_confidence"] == alone[1]["gender_confidence"]
    value = reg.get_sample_value
    assert value("agegender_second_opinions_total", {"model": "dlib"}) == 1
    assert value("agegender_second_opinion_fallbacks_total",
                 {"model": "dlib", "reason": "budget"}) == 1


@needs_dlib
def test_faces_narrower_than_min_face_px_keep_the_models_answer_at_no_cost(
        astronaut, opinion, compact):
    # given the astronaut's face to classify twice: at its size, and as a frame shrunk so
    # the face box is narrower than the opinion's min_face_px
    from services.classifier.batching import OpinionBudget

    big = faces_msg(astronaut, [tracked([180, 40, 300, 190], track=1)])
    scale = 0.15                                                 # box 18 px wide
    small_img = cv2.resize(astronaut, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    small = faces_msg(small_img, [tracked([27, 6, 45, 28], track=2)])
    assert 18 < opinion.min_face_px
    budget = OpinionBudget(1.0)
    reg = CollectorRegistry()
    metrics = OpinionMetrics(reg, opinion.name)
    # when both are classified with the opinion
    out = [wire.decode(f).header["faces"][0] for _, f in process_batch(
        [big, small], compact, 8, opinion=opinion, on_opinion=metrics.on_opinion,
        budget=budget)]
    alone = [wire.decode(f).header["faces"][0] for _, f in process_batch([big, small],
                                                                         compact, 8)]
    # then the small face keeps the model's answer exactly and the large one is merged
    assert out[1]["gender_confidence"] == alone[1]["gender_confidence"]
    assert out[0]["gender_confidence"] != alone[0]["gender_confidence"]
    # and the small one is counted as such, not as a failure of the opinion or the budget
    value = reg.get_sample_value
    assert value("agegender_second_opinions_total", {"model": "dlib"}) == 1
    for reason, n in (("small", 1), ("no_answer", 0), ("budget", 0)):
        assert value("agegender_second_opinion_fallbacks_total",
                     {"model": "dlib", "reason": reason}) == n
    assert value("agegender_second_opinion_seconds_count", {"model": "dlib"}) == 1
    # and a batch with only the small face is counted but not timed (no opinion work)
    process_batch([small], compact, 8, opinion=opinion, on_opinion=metrics.on_opinion,
                  budget=budget)
    assert value("agegender_second_opinion_fallbacks_total",
                 {"model": "dlib", "reason": "small"}) == 2
    assert value("agegender_second_opinion_seconds_count", {"model": "dlib"}) == 1


def test_budget_refills_at_its_share_of_wall_time_up_to_its_depth():
    from services.classifier.batching import OpinionBudget

    now = [0.0]
    budget = OpinionBudget(0.5, burst_s=1.0, clock=lambda: now[0])
    assert budget.allow()
    budget.spend(1.2)                     # one expensive opinion: 0.2 s in debt
    assert not budget.allow()
    now[0] = 0.3                          # 0.15 s refilled: still in debt
    assert not budget.allow()
    now[0] = 0.5                          # 0.25 s refilled: 0.05 s to spend
    assert budget.allow() and budget.balance == pytest.approx(0.05)
    now[0] = 100.0                        # never more than the bucket's depth
    assert budget.allow() and budget.balance == pytest.approx(1.0)


@needs_dlib
def test_tiny_crop_gets_no_opinion_and_no_error(opinion):
    logits, ok = opinion([np.zeros((4, 4, 3), np.uint8), np.zeros((0, 5, 3), np.uint8)])
    assert not ok.any() and np.isnan(logits).all()


def test_config_env_and_cli_select_the_second_opinion(monkeypatch, tmp_path):
    # the setting: default, keyword, environment, and a bad value refused
    # (the default: dlib, within a quarter of a core)
    assert ClassifierConfig().second_opinion == "dlib"
    assert ClassifierConfig().second_opinion_cpu_share == 0.25
    assert ClassifierConfig(second_opinion="dlib").second_opinion == "dlib"
    assert ClassifierConfig(second_opinion_cpu_share=2).second_opinion_cpu_share == 2
    with pytest.raises(Exception, match="second_opinion_cpu_share"):
        ClassifierConfig(second_opinion_cpu_share=0)
    monkeypatch.setenv("AGEGENDER_CLASSIFIER_SECOND_OPINION", "none")
    assert ClassifierConfig().second_opinion == "none"
    monkeypatch.setenv("AGEGENDER_CLASSIFIER_SECOND_OPINION", "cydral")
    with pytest.raises(Exception, match="second_opinion"):
        ClassifierConfig()
    monkeypatch.delenv("AGEGENDER_CLASSIFIER_SECOND_OPINION")
    # the classifier's and the run's command lines
    from services.cli import main

    assert "--second-opinion" in CliRunner().invoke(main, ["classifier", "--help"]).output
    assert "--second-opinion" in CliRunner().invoke(main, ["run", "--help"]).output
    bad = CliRunner().invoke(main, ["run", "--second-opinion", "cydral"])
    assert bad.exit_code == 2 and "cydral" in bad.output
    # and `agegender run --second-opinion dlib` hands it to the classifier only
    from services.orchestrator.options import StackOptions
    from services.orchestrator.wiring import service_arguments

    ports = {s: 0 for s in ("capture", "detector", "classifier", "sink")}
    args = service_arguments(StackOptions(second_opinion="dlib"), tmp_path, ports, 1, 0)
    assert "--second-opinion dlib" in " ".join(args["classifier"])
    assert not any("second-opinion" in " ".join(args[s])
                   for s in ("capture", "detector", "sink"))
    default = service_arguments(StackOptions(), tmp_path, ports, 1, 0)
    assert "--second-opinion" not in " ".join(default["classifier"])


@needs_dlib
@pytest.mark.slow
def test_classifier_process_refuses_when_the_head_is_missing(tmp_path):
    # given a models folder with the default model but no dlib-gender head
    import shutil

    from common.models import DEFAULT_MODEL

    models = tmp_path / "models"
    shutil.copytree(ROOT / "models" / DEFAULT_MODEL, models / DEFAULT_MODEL)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AGEGENDER_MODELS_DIR": str(models)}
    # when the classifier starts with the dlib opinion
    proc = subprocess.run([sys.executable, "-m", "services.cli", "classifier",
                           "--second-opinion", "dlib", "--http-port", "0",
                           "--input", f"bind:ipc://{tmp_path}/f",
                           "--output", f"connect:ipc://{tmp_path}/r"],
                          capture_output=True, text=True, timeout=300, env=env)
    # then it refuses with exit code 2, naming the missing file and the way out
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "head.json" in proc.stderr and "second_opinion none" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_classifier_process_refuses_a_model_with_a_malformed_opinion_weight(
        tmp_path, bad_weight_model):
    # given the default model copied with a second-opinion weight of 2 in its meta.json
    folder = bad_weight_model
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # when the classifier starts with it
    proc = subprocess.run([sys.executable, "-m", "services.cli", "classifier",
                           "--model", str(folder), "--http-port", "0",
                           "--input", f"bind:ipc://{tmp_path}/f",
                           "--output", f"connect:ipc://{tmp_path}/r"],
                          capture_output=True, text=True, timeout=300, env=env)
    # then it refuses at start-up (not on its first batch) with exit 2, naming the field
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "second_opinion.dlib.weight" in proc.stderr and "Traceback" not in proc.stderr


@needs_dlib
@pytest.mark.skipif(not (ROOT.parent / "shared" / "videos").is_dir(),
                    reason="../shared/videos not found")
def test_default_landmarker_does_not_drift_on_the_demo_clips_right_woman(opinion):
    # given frame 8 of the demo clip and the right woman's face as the detector sends it
    # (keypoints rounded to 0.01 px), cut as the classifier cuts it for the opinion
    from common.detectors import make_detector
    from services.detector.frames import detect_faces

    cap = cv2.VideoCapture(str(ROOT.parent / "shared" / "videos"
                               / "face-demographics-walking-and-pause.mp4"))
    frames = [cap.read()[1] for _ in range(9)]
    cap.release()
    face = sorted(detect_faces(frames[8], make_detector("blazeface", threads=1)),
                  key=lambda f: f["box"][0])[2]
    crop = cut_crop(frames[8], face["box"], face["keypoints"], opinion.rule)
    # when the opinion reads her with the default landmark refinement (one pass)
    (z,), _ = opinion([crop])
    # then she is read female; two passes drift sideways on this face and read her male
    assert z > 2.0, z
    landmarker = opinion.embedder.landmarker
    try:
        landmarker.refine = 2
        assert opinion([crop])[0][0] < 0
    finally:
        landmarker.refine = 1
