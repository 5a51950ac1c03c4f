"""The shipped compact-wild model's folder and card (training/model_card.py)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ROOT

WILD = ROOT / "models" / "compact-wild"

pytestmark = pytest.mark.skipif(not (WILD / "meta.json").is_file(),
                                reason="models/compact-wild is not shipped")


def test_compact_wild_is_served_by_the_rule_it_was_trained_on():
    from common.crops import CHIP_RULE, CropRule
    from common.models import load_model

    # given the model as the classifier loads it
    model = load_model("compact-wild", threads=1)
    meta = model.meta
    # then its crop rule is the one its training cache was cut by (CHIP_RULE)
    assert model.crop_rule == CHIP_RULE
    assert CropRule.from_meta({"crop_rule": meta["training"]["cache_meta"]["rule"]}) == CHIP_RULE
    assert meta["training"]["cache_meta"]["detector"] == "blazeface"
    # and its interval was fitted on clean and wild validation faces, its fusion on tracks
    iv = meta["interval"]
    assert abs(iv["val_clean"]["coverage"] - 0.8) < 0.03
    assert abs(iv["val_wild"]["coverage"] - 0.8) < 0.03
    fusion = meta["fusion"]
    assert 0.3 <= fusion["rho"] <= 1.0
    assert all(abs(c["coverage"] - 0.8) < 0.03 for c in fusion["coverage_by_n"].values())
    # and the ONNX export was checked against Keras
    assert meta["onnx"]["max_abs_diff"] < 1e-4


def test_card_renders_before_after_fusion_and_cost_from_the_saved_reports():
    from training.model_card import render

    def read(name):
        return json.loads((WILD / name).read_text())

    # given the saved reports of compact-wild (alone and as served) and of compact
    text = render(WILD, read("eval_test.json"), read("video_check.json"), read("eval_wild.json"),
                  read("demo_check.json"), ROOT / "models" / "compact", read("eval_served.json"))
    # then the card shows the wild tables, the fused interval, the cost, before/after and
    # gender as served with the second opinion at the model's weight, beside the model's
    from training.card_sections import pct

    adults = [pct(read(f)["wild"]["adults_20_69"]["gender_accuracy"])
              for f in ("eval_wild.json", "eval_served.json")]
    for part in ("## Evaluation on this project's test split", "| adults 20-69 |",
                 "## Evidence per person: the fused interval", "## Before and after",
                 "| gender 20-69, wild |", "s of lent GPU time", "## Known weaknesses",
                 "## As served: with the dlib gender second opinion", "weight **0.7**",
                 f"| wild, ages 20-69 | {adults[0]} | **{adults[1]}** |", "The default model"):
        assert part in text, part
    assert text == (WILD / "MODEL_CARD.md").read_text()   # the committed card is current
