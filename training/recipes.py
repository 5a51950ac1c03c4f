"""Training recipes: everything that differs between the model families, in one place.

A :class:`Recipe` says how a family is built, fed, scheduled, finished and exported;
:func:`training.train.train` follows it and never asks for a family's name. Adding a
family is writing its network (:mod:`training.architectures`) and one more recipe in
:data:`RECIPES`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from common.models import InputSpec
from training.architectures import (COMPACT_AGE_BINS, COMPACT_SPEC, SEED_SPEC, build_compact,
                                    build_seed)
from training.callbacks import CosineSchedule, plateau_schedule


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to train and export one model family.

    Attributes:
        kind: the family (``meta["kind"]``).
        spec: network input size.
        networks: builds fresh, uncompiled networks ``{head: keras.Model}``; their
            weights are what gets exported (``<head>.keras`` each).
        compile: ``(networks, lr) -> keras model`` compiled for training (one pass over
            the data trains every head).
        schedule: ``(lr, epochs, max_minutes) -> keras callback`` setting the learning rate.
        batch_size: default batch size.
        patience: default early-stopping patience (epochs).
        balance: default for age re-weighting (:func:`training.batches.balance_weights`).
        seed_prep: the seed thesis' data selection (ages 20-50, at most 1,500 per age).
        head_roll: augmentation adds large head rolls (:func:`training.augment.make_augmenter`).
        age_bins: ``(K,)`` bin ages of an age-distribution head (targets are label
            distributions); ``None``: age regression in years.
        average_weights: recalibrate BatchNorm and choose between the best checkpoint
            and the weight average (:func:`training.weights.pick_average`).
        tta_flip: test-time horizontal flip (``meta["tta_flip"]``).
        half_weights: store exported weights as float16 (the seed's 2.4 M parameters each).
        onnx: export to ONNX right after training.
    """

    kind: str
    spec: InputSpec
    networks: Callable[[], dict]
    compile: Callable[[dict, float], object]
    schedule: Callable[[float, int, float | None], object]
    batch_size: int
    patience: int
    balance: bool
    seed_prep: bool = False
    head_roll: bool = False
    age_bins: np.ndarray | None = None
    average_weights: bool = False
    tta_flip: bool = False
    half_weights: bool = False
    onnx: bool = False


def _compile_seed(nets: dict, lr: float):
    """A wrapper holding the thesis' two independent networks (no shared weights): MAE
    for the age, categorical cross-entropy for the gender, Adam."""
    import keras

    inp = keras.Input(SEED_SPEC.shape, name="pixels")
    wrapper = keras.Model(inp, [nets["age"](inp), nets["gender"](inp)], name="seed_pair")
    wrapper.compile(optimizer=keras.optimizers.Adam(lr),
                    loss=["mae", "categorical_crossentropy"],
                    metrics=[["mae"], ["accuracy"]])
    return wrapper


def _compile_compact(nets: dict, lr: float):
    """The two-head network with the DLDL age loss (:mod:`training.losses`), Adam."""
    import keras

    from training.losses import dldl_losses

    net = nets["net"]
    age_loss, age_mae = dldl_losses(COMPACT_AGE_BINS)
    net.compile(optimizer=keras.optimizers.Adam(lr),
                loss=[age_loss, "categorical_crossentropy"],
                metrics=[[age_mae], ["accuracy"]])
    return net


#: The seed thesis' two CNNs (60x80 gray), trained as the thesis did.
SEED = Recipe(kind="seed", spec=SEED_SPEC,
              networks=lambda: {"age": build_seed("age"), "gender": build_seed("gender")},
              compile=_compile_seed, schedule=plateau_schedule, batch_size=128, patience=50,
              balance=False, seed_prep=True, half_weights=True)
#: The compact two-head network (64x64 BGR) with DLDL, cosine decay and SWA.
COMPACT = Recipe(kind="compact", spec=COMPACT_SPEC, networks=lambda: {"net": build_compact()},
                 compile=_compile_compact, schedule=CosineSchedule.make, batch_size=64,
                 patience=10, balance=True, head_roll=True, age_bins=COMPACT_AGE_BINS,
                 average_weights=True, tta_flip=True, onnx=True)
#: Recipes by family name.
RECIPES = {r.kind: r for r in (SEED, COMPACT)}


def recipe_for(model: str | Recipe) -> Recipe:
    """The recipe of a family name (a :class:`Recipe` is returned as is).

    Raises:
        ValueError: unknown family.
    """
    if isinstance(model, Recipe):
        return model
    if model not in RECIPES:
        raise ValueError(f"unknown model family {model!r}; use one of {list(RECIPES)}")
    return RECIPES[model]


def spec_for(model: str) -> InputSpec:
    """Input size of a model family (``"seed"`` or ``"compact"``)."""
    return recipe_for(model).spec
