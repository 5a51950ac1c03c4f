"""Classifier service configuration (environment prefix ``AGEGENDER_CLASSIFIER_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from common.config import ServiceConfig
from common.models.registry import DEFAULT_MODEL


class ClassifierConfig(ServiceConfig, service="classifier", http_port=9103):
    """Age/gender model and batching settings."""

    input: str = Field("bind:tcp://*:5556", description="Faces input endpoint (PULL).")
    output: str = Field("connect:tcp://localhost:5557", description="Result output "
                        "endpoint (PUSH).")
    model: str = Field(DEFAULT_MODEL, description="Model name in the models folder "
                       "('compact-wild', 'compact', 'seed') or a path to a model directory.")
    models_dir: Path | None = Field(None, description="Folder of the named models; default: "
                                    "$AGEGENDER_MODELS_DIR, else the checkout's models/ or "
                                    "the installed package's.")
    runtime: Literal["auto", "onnx", "keras"] = Field(
        "auto", description="Inference runtime: 'onnx' (ONNX Runtime, CPU, no TensorFlow "
        "import), 'keras' (TensorFlow, CPU or GPU); 'auto' takes ONNX when the model folder "
        "has an ONNX export.")
    max_batch: int = Field(32, ge=1, le=1024, description="Largest batch of crops per "
                           "inference call.")
    second_opinion: Literal["none", "dlib"] = Field(
        "dlib", description="Gender second opinion on the faces the classifier classifies: "
        "'dlib' (dlib's face descriptor + the logistic head in models/dlib-gender, a "
        "weighted mean of its and the model's gender logits, the weight from the model's "
        "meta.json; 60-80 ms a face on one core, within "
        "second_opinion_cpu_share), 'none': the model alone.")
    second_opinion_cpu_share: float = Field(
        0.25, gt=0.0, le=64.0, description="Largest average share of one CPU core the "
        "second opinion may use (a token bucket of CPU seconds, 0.1 s deep); faces beyond "
        "it keep the model's answer (counted). 64: no limit.")
    max_wait_ms: float = Field(10.0, ge=0.0, le=1000.0, description="Longest wait for more "
                               "crops once one is queued (ms).")
