"""The age/gender model interface (common.models) on the shipped models."""

from __future__ import annotations

import json

import numpy as np
import pytest

from common.models import (InputSpec, age_interval, choose_runtime, load_model, models_dir,
                           read_meta, resize_crop, shipped_models)
from tests.conftest import ROOT

#: Shipped age/gender models (models/blazeface is the detector, tested in test_blazeface.py).
SHIPPED = shipped_models()
#: (model, runtime) pairs: every shipped model on Keras, and on ONNX Runtime when exported.
RUNS = [(name, "keras") for name in SHIPPED] + [
    (name, "onnx") for name in SHIPPED if read_meta(models_dir() / name).get("onnx")]


@pytest.fixture(scope="module", params=RUNS or [("compact", "auto")],
                ids=lambda r: "-".join(r))
def model(request):
    name, runtime = request.param
    m = load_model(name, threads=1, runtime=runtime)
    assert m.runtime == runtime or runtime == "auto"
    return m


def crops(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (int(rng.integers(20, 150)), int(rng.integers(20, 150)), 3),
                         dtype=np.uint8) for _ in range(n)]


def test_predict_contract(model):
    # given crops of varied sizes / when predicted
    out = model.predict(crops(5))
    # then one dict per crop with the documented fields and ranges
    assert len(out) == 5
    for r in out:
        assert set(r) == {"age", "age_range", "gender", "gender_confidence"}
        assert 0.0 <= r["age"] <= 120.0
        assert r["gender"] in ("female", "male")
        assert 0.5 <= r["gender_confidence"] <= 1.0
        if r["age_range"] is not None:
            lo, hi = r["age_range"]
            assert isinstance(lo, int) and isinstance(hi, int)
            assert 0 <= lo <= hi and lo <= r["age"] + 1 and r["age"] - 1 <= hi
    assert model.predict([]) == []


def test_no_retrace_across_batch_sizes(model):
    if model.runtime != "keras":
        pytest.skip("tracing is a TensorFlow concept; ONNX Runtime has no graph to retrace")
    # given a warmed-up model
    model.warmup(32)
    traces = model.trace_count
    # when batch sizes vary
    for n in (1, 3, 17, 32, 2):
        assert len(model.predict(crops(n, seed=n))) == n
    # then the graph was not traced again
    assert model.trace_count == traces


def test_same_crop_same_answer_regardless_of_batch(model):
    c = crops(4, seed=7)
    alone = model.predict(c[:1])[0]
    batched = model.predict(c)[0]
    assert alone["gender"] == batched["gender"]
    assert abs(alone["age"] - batched["age"]) < 0.05


@pytest.mark.parametrize("bad", [np.zeros((0, 10, 3), np.uint8), np.zeros((10, 10), np.uint8),
                                 np.zeros((10, 10, 3), np.float32), "crop"])
def test_bad_crop_is_a_clear_error(model, bad):
    with pytest.raises(ValueError, match="crop 1"):
        model.predict([np.zeros((20, 20, 3), np.uint8), bad])


def test_resize_crop_gray_and_colour():
    crop = np.zeros((90, 70, 3), np.uint8)
    crop[..., 2] = 255  # pure red in BGR
    colour = resize_crop(crop, InputSpec(64, 64, 3))
    gray = resize_crop(crop, InputSpec(80, 60, 1))
    assert colour.shape == (64, 64, 3) and colour.dtype == np.uint8
    assert colour[..., 2].min() == 255 and colour[..., 0].max() == 0  # BGR order kept
    assert gray.shape == (80, 60, 1) and int(gray[40, 30, 0]) == 76   # 0.299 * 255


def test_age_interval_widens_with_scale_and_holds_the_mean():
    bins = np.arange(0, 101, dtype=float)
    probs = np.exp(-0.5 * ((bins - 30.0) / 4.0) ** 2)[None]
    probs /= probs.sum()
    lo1, hi1 = age_interval(probs, bins, 0.8, 1.0)
    lo2, hi2 = age_interval(probs, bins, 0.8, 2.0)
    assert lo1[0] <= 30 <= hi1[0]
    assert 23 <= lo1[0] <= 26 and 34 <= hi1[0] <= 37  # ~ +-1.28 sigma
    assert lo2[0] < lo1[0] and hi2[0] > hi1[0]


@pytest.mark.parametrize("name", [n for n, r in RUNS if r == "onnx"])
def test_onnx_runtime_matches_keras_and_loads_no_tensorflow(name, tmp_path):
    # given the shipped model's ONNX export, loaded in a fresh interpreter
    import subprocess
    import sys
    code = ("import sys, numpy as np; from common.models import load_model; "
            f"m = load_model({name!r}, threads=1, runtime='onnx'); "
            "x = np.random.default_rng(3).integers(0, 256, (9, *m.spec.shape)); "
            "a, g = m.raw(x); np.save(sys.argv[1], np.concatenate([a, g], 1)); "
            "print('tensorflow' in sys.modules)")
    out_path = tmp_path / "onnx.npy"
    proc = subprocess.run([sys.executable, "-c", code, str(out_path)], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # then TensorFlow was never imported on that path
    assert proc.stdout.strip() == "False"
    # and the outputs equal the Keras model's on the same pixels
    onnx_out = np.load(out_path)
    keras_model = load_model(name, threads=1, runtime="keras")
    x = np.random.default_rng(3).integers(0, 256, (9, *keras_model.spec.shape))
    a, g = keras_model.raw(x)
    np.testing.assert_allclose(onnx_out, np.concatenate([a, g], 1), atol=1e-4)


def test_runtime_choice_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="runtime must be one of"):
        load_model(SHIPPED[0] if SHIPPED else "compact", runtime="tensorrt")
    # a folder without an ONNX export: auto falls back to Keras, onnx is refused
    meta = {"kind": "compact", "files": {"net": "net.keras"}}
    assert choose_runtime(tmp_path, meta, "auto") == "keras"
    with pytest.raises(ValueError, match="no ONNX export"):
        choose_runtime(tmp_path, meta, "onnx")
    # listed but missing on disk counts as no export; a GPU request keeps Keras
    meta["onnx"] = {"files": {"net": "net.onnx"}}
    assert choose_runtime(tmp_path, meta, "auto") == "keras"
    (tmp_path / "net.onnx").write_bytes(b"x")
    assert choose_runtime(tmp_path, meta, "auto", device="gpu") == "keras"
    assert choose_runtime(tmp_path, meta, "auto") == "onnx"


def test_unknown_model_is_a_clear_error():
    # the message names the model and lists those that are there
    with pytest.raises(FileNotFoundError, match=r"no model 'no-such-model'.*'compact'"):
        load_model("no-such-model")


@pytest.mark.slow
def test_shipped_compact_reads_genders_left_to_right_on_the_demo_clip(clip, ground_truth):
    # given the demo clip with three people (female, male, female, left to right)
    from training.video_check import check_clip
    name = "face-demographics-walking-and-pause.mp4"
    expect = [p["gender"] for p in ground_truth[name]["people_left_to_right"]]
    model = load_model("compact", threads=1)
    if "provisional" in json.dumps(model.meta).lower():
        pytest.skip("models/compact is still the provisional placeholder")
    # when every frame's SSD crops are classified, sorted by box x
    result = check_clip(model, str(clip(name)), expect)
    # then most frames with three faces read the expected genders
    assert result["frames_with_n_faces"] >= 0.7 * result["frames"]
    assert result["fraction_correct"] > 0.5, result


def test_common_models_loads_no_runtime_or_opencv_until_a_name_is_used():
    # given a fresh interpreter that imports the package and its registry only
    import subprocess
    import sys

    code = ("import sys, common.models as m; from common.models.registry import DEFAULT_MODEL; "
            "print('cv2' in sys.modules, 'onnxruntime' in sys.modules, "
            "'load_model' in dir(m)); m.load_model; print('cv2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120, check=True).stdout.split()
    # then OpenCV and ONNX Runtime were not imported, the lazy names are listed, and the
    # first use of one imports its module
    assert out == ["False", "False", "True", "True"]
