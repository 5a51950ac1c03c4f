"""Models shared by the services and training: the registry that finds model folders,
the runtimes that run them, crop preprocessing and the age/gender model.

Importing this package (or :mod:`common.models.registry`, e.g. for ``DEFAULT_MODEL``)
loads neither TensorFlow, ONNX Runtime nor OpenCV: the public names below are imported on
first use (PEP 562), so a command line can name the default model before it sets
OpenCV's decode limit. A model loads its runtime when it is loaded. Public names:

* :mod:`~common.models.registry`: ``DEFAULT_MODEL``, ``models_dir``,
  ``resolve_model_dir``, ``shipped_models``, ``read_meta``, ``MODELS_ENV``;
* :mod:`~common.models.runtimes`: ``RUNTIMES``, ``choose_runtime``, ``load_networks``,
  ``onnx_session``, ``run_session``, ``configure_tensorflow``;
* :mod:`~common.models.preprocess`: ``InputSpec``, ``resize_crop``;
* :mod:`~common.models.agegender`: ``AgeGenderModel``, ``load_model``, ``age_interval``.

Faces are turned upright before classification by the crop itself (BlazeFace's eye line,
:func:`common.crops.face_crop`), not by a network.
"""

from __future__ import annotations

import importlib

from common.models.registry import (DEFAULT_MODEL, MODELS_ENV, models_dir, read_meta,
                                    resolve_model_dir, shipped_models)

#: Public names imported on first use, by module.
_LAZY = {
    "common.models.agegender": ("AgeGenderModel", "age_interval", "load_model"),
    "common.models.preprocess": ("InputSpec", "resize_crop"),
    "common.models.runtimes": ("RUNTIMES", "choose_runtime", "configure_tensorflow",
                               "load_networks", "onnx_session", "run_session"),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}

__all__ = ["DEFAULT_MODEL", "MODELS_ENV", "models_dir", "read_meta", "resolve_model_dir",
           "shipped_models", *_WHERE]


def __dir__() -> list[str]:
    """The module's names, the lazy ones included."""
    return sorted({*globals(), *_WHERE})


def __getattr__(name: str):
    """Import a public name's module on first use (``from common.models import
    load_model`` works as before)."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'common.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
