"""Models shared by the services and training: the registry that finds model folders,
the runtimes that run them, crop preprocessing and the age/gender model.

Importing this package loads neither TensorFlow nor ONNX Runtime; a model does when it is
loaded. Public names:

* :mod:`~common.models.registry`: ``DEFAULT_MODEL``, ``models_dir``, ``resolve_model_dir``,
  ``shipped_models``, ``read_meta``, ``MODELS_ENV``;
* :mod:`~common.models.runtimes`: ``RUNTIMES``, ``choose_runtime``, ``load_networks``,
  ``onnx_session``, ``run_session``, ``configure_tensorflow``;
* :mod:`~common.models.preprocess`: ``InputSpec``, ``resize_crop``;
* :mod:`~common.models.agegender`: ``AgeGenderModel``, ``load_model``, ``age_interval``.

Faces are turned upright before classification by the crop itself (BlazeFace's eye line,
:func:`common.crops.face_crop`), not by a network.
"""

from common.models.agegender import AgeGenderModel, age_interval, load_model
from common.models.preprocess import InputSpec, resize_crop
from common.models.registry import (DEFAULT_MODEL, MODELS_ENV, models_dir, read_meta, resolve_model_dir,
                                    shipped_models)
from common.models.runtimes import (RUNTIMES, choose_runtime, configure_tensorflow,
                                    load_networks, onnx_session, run_session)

__all__ = ["AgeGenderModel", "age_interval", "load_model", "InputSpec", "resize_crop",
           "DEFAULT_MODEL", "MODELS_ENV", "models_dir", "read_meta", "resolve_model_dir", "shipped_models",
           "RUNTIMES", "choose_runtime", "configure_tensorflow", "load_networks",
           "onnx_session", "run_session"]
