"""The model registry: where model folders are found, and clear errors when not."""

from __future__ import annotations

import shutil

import pytest

from common.models import MODELS_ENV, load_model, models_dir, resolve_model_dir, shipped_models
from tests.conftest import ROOT


def _copy_model(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.keras", "*.png", "*.md"))
    return dst


def test_checkout_models_are_found_by_default(monkeypatch):
    monkeypatch.delenv(MODELS_ENV, raising=False)
    assert models_dir() == ROOT / "models"
    assert {"compact", "seed"} <= set(shipped_models())
    assert "blazeface" not in shipped_models()            # the detector's model is no model
    assert resolve_model_dir("compact") == ROOT / "models" / "compact"


def test_a_configured_folder_wins_over_the_environment_and_the_checkout(tmp_path,
                                                                        monkeypatch):
    # given a folder with a copy of the compact model (ONNX only) named "mine"
    folder = tmp_path / "models"
    _copy_model(ROOT / "models" / "compact", folder / "mine")
    # when named through the environment / then it is found there, not in the checkout
    monkeypatch.setenv(MODELS_ENV, str(folder))
    assert models_dir() == folder and shipped_models() == ["mine"]
    model = load_model("mine", threads=1)
    assert model.directory == folder / "mine" and model.runtime == "onnx"
    # and an explicit folder wins over the environment
    other = tmp_path / "other"
    _copy_model(ROOT / "models" / "compact", other / "theirs")
    assert resolve_model_dir("theirs", other) == other / "theirs"
    with pytest.raises(FileNotFoundError, match=r"no model 'theirs'.*\['mine'\]"):
        resolve_model_dir("theirs")
    # and a path to a model folder is taken as it is
    assert resolve_model_dir(str(other / "theirs")) == other / "theirs"


def test_the_detector_model_comes_from_the_same_folder(tmp_path, monkeypatch):
    from common.detectors import make_detector
    folder = tmp_path / "models"
    _copy_model(ROOT / "models" / "compact", folder / "compact")
    monkeypatch.setenv(MODELS_ENV, str(folder))
    # given a models folder without BlazeFace / then the default detector is a clear error
    with pytest.raises(FileNotFoundError, match="BlazeFace model file missing"):
        make_detector("blazeface", threads=1)
    # and with it the detector loads from there
    shutil.copytree(ROOT / "models" / "blazeface", folder / "blazeface")
    assert make_detector("blazeface", threads=1).model_path.parent == folder / "blazeface"
