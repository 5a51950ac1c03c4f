"""Crop cache, tiny training runs and evaluation on a small generated folder (CI-safe)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from common.models import InputSpec, load_model
from training import cache
from training.data import load_dataset
from training.evaluate import band_of


def test_crop_cache_counts_and_second_run_does_not_decode(face_folder, cache_env, monkeypatch):
    spec = InputSpec(64, 64, 3)
    # given a folder with 32 faces, 1 faceless image and 1 malformed name
    # when loaded the first time
    first = load_dataset(f"utkface={face_folder}", spec, progress=False)
    # then 32 crops, the faceless image dropped and counted, the bad name skipped
    assert first.arrays.x.shape == (32, 64, 64, 3) and first.arrays.x.dtype == np.uint8
    assert first.no_face == 1 and first.skipped_names == 1
    assert list(cache_env.glob("boxes-*.npz")) and list(cache_env.glob("crops-*-64x64x3.npz"))

    # when loaded again with image decoding disabled
    def no_decode(path):
        raise AssertionError(f"decoded {path} again")
    monkeypatch.setattr(cache, "read_image", no_decode)
    second = load_dataset(f"utkface={face_folder}", spec, progress=False)
    # then the same arrays come from the cache
    assert second.arrays.names == first.arrays.names
    np.testing.assert_array_equal(second.arrays.x, first.arrays.x)
    assert second.no_face == 1


@pytest.mark.parametrize("family", ["compact", "seed"])
def test_train_one_epoch_then_evaluate(family, face_folder, cache_env, tmp_path):
    from training.train import TrainOptions, train

    out = tmp_path / "model"
    # given a tiny folder / when trained for one epoch
    info = train(family, f"utkface={face_folder}", out, tmp_path / "run",
                 TrainOptions(epochs=1, threads=1, progress=False))
    # then a loadable model with meta.json, a calibrated interval and a training curve
    assert info["epochs_run"] == 1
    meta = json.loads((out / "meta.json").read_text())
    assert meta["kind"] == family and meta["genders"] == ["male", "female"]
    assert 0 < meta["interval"]["coverage"] < 1
    assert (tmp_path / "run" / "curve.png").stat().st_size > 1000
    model = load_model(str(out), threads=1)
    preds = model.predict([np.zeros((50, 40, 3), np.uint8)])
    assert preds[0]["gender"] in ("male", "female")
    lo, hi = preds[0]["age_range"]                      # the calibrated interval
    assert lo <= preds[0]["age"] <= hi
    # and compact comes with a checked ONNX export that the default runtime picks
    assert model.runtime == ("onnx" if family == "compact" else "keras")
    if family == "compact":
        assert meta["onnx"]["files"] == {"net": "net.onnx"}
        assert meta["onnx"]["max_abs_diff"] < 1e-4
        keras_preds = load_model(str(out), threads=1, runtime="keras").predict(
            [np.zeros((50, 40, 3), np.uint8)])
        assert abs(keras_preds[0]["age"] - preds[0]["age"]) < 0.01

    # when the seed is exported through the CLI as well
    if family == "seed":
        from training.cli import export_command
        result = CliRunner().invoke(export_command, ["--model", str(out)])
        assert result.exit_code == 0, result.output
        assert load_model(str(out), threads=1).runtime == "onnx"
        result = CliRunner().invoke(export_command, ["--model", str(out), "--format",
                                                     "saved_model", "--out", str(tmp_path / "sm")])
        assert result.exit_code == 0, result.output
        assert (tmp_path / "sm" / "age" / "saved_model.pb").is_file()

    # when evaluated through the CLI on the folder
    from training.cli import evaluate_command
    result = CliRunner().invoke(evaluate_command, [
        "--model", str(out), "--dataset", f"utkface={face_folder}", "--json", "--threads", "1"])
    # then a JSON report with counts, per-band and per-gender groups and latency
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert report["no_face_dropped"] == 1 and report["skipped_names"] == 1
    assert report["evaluated"] == report["overall"]["n"] == 32
    assert sum(g["n"] for g in report["per_band"].values()) == 32
    assert sum(g["n"] for g in report["per_gender"].values()) == 32
    # the overall MAE is the face-weighted mean of the per-band ones
    bands = [g for g in report["per_band"].values() if g["n"]]
    assert report["overall"]["age_mae"] == pytest.approx(
        sum(g["n"] * g["age_mae"] for g in bands) / 32, abs=2e-3)
    assert 0 <= report["overall"]["gender_accuracy"] <= 1
    assert report["latency"]["batch32_ms_per_crop"] > 0


def test_evaluate_missing_folder_is_a_clear_error(tmp_path, cache_env):
    from training.cli import evaluate_command
    result = CliRunner().invoke(evaluate_command, [
        "--model", "compact", "--dataset", f"utkface={tmp_path / 'absent'}", "--no-latency"])
    assert result.exit_code != 0
    assert "not found" in result.output


def test_band_of():
    assert [band_of(a) for a in (0, 9.9, 10, 69, 70, 116)] == \
        ["0-9", "0-9", "10-19", "60-69", "70+", "70+"]
