"""Training recipes: what differs between model families lives in the recipe."""

from __future__ import annotations

import pytest

from training.architectures import COMPACT_SPEC, SEED_SPEC
from training.recipes import COMPACT, RECIPES, SEED, recipe_for, spec_for


def test_each_family_has_a_recipe_with_its_input_size():
    # given the shipped families / then each has a recipe named after it
    assert set(RECIPES) == {"seed", "compact"}
    assert all(r.kind == name for name, r in RECIPES.items())
    assert spec_for("seed") == SEED_SPEC and spec_for("compact") == COMPACT_SPEC
    # and the recipe carries the differences the training loop follows
    assert SEED.seed_prep and SEED.half_weights and SEED.age_bins is None
    assert COMPACT.average_weights and COMPACT.onnx and COMPACT.age_bins is not None
    assert recipe_for(COMPACT) is COMPACT


def test_recipe_networks_and_compiled_model():
    # when a recipe builds its networks and the training model
    for recipe in RECIPES.values():
        nets = recipe.networks()
        model = recipe.compile(nets, 1e-3)
        # then every exported head is part of the compiled model, with the input size
        assert set(nets) == ({"net"} if recipe is COMPACT else {"age", "gender"})
        assert tuple(model.input_shape[1:]) == recipe.spec.shape
        assert len(model.outputs) == 2


def test_unknown_family_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model family 'vit'.*'seed', 'compact'"):
        recipe_for("vit")
