"""Where model folders are found: the model registry.

A model is a folder with ``meta.json`` (and its network files) named after the model
(``compact-wild``, ``compact``, ``seed``). The folder of shipped models is, first match wins:

1. the ``models_dir`` argument (the services' ``models_dir`` setting, ``agegender predict
   --models-dir``);
2. the environment variable ``AGEGENDER_MODELS_DIR``;
3. ``models/`` of the source checkout this code runs from (a folder with
   ``pyproject.toml`` above ``common/``);
4. the package data of an installed wheel: the top-level package ``agegender_models``,
   which is the checkout's ``models/`` folder (``pyproject.toml`` maps it).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

#: The model the services and ``predict`` load when none is named: ``compact``'s network
#: fine-tuned on BlazeFace crops with in-the-wild augmentation, served with the dlib
#: gender second opinion (docs/models.md; docs/accuracy-in-the-wild.md, phase 4).
DEFAULT_MODEL = "compact-wild"
#: Environment variable naming the models folder.
MODELS_ENV = "AGEGENDER_MODELS_DIR"
#: Installed package that holds the shipped models (the checkout's ``models/``).
MODELS_PACKAGE = "agegender_models"
#: The source checkout this module belongs to, when it runs from one.
_CHECKOUT = Path(__file__).resolve().parents[2]


def models_dir(override: str | os.PathLike | None = None) -> Path:
    """The folder holding the shipped models (see the module docstring for the order).

    Raises:
        FileNotFoundError: none of the places exists.
    """
    if override:
        return Path(override)
    if os.environ.get(MODELS_ENV):
        return Path(os.environ[MODELS_ENV])
    if (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "models").is_dir():
        return _CHECKOUT / "models"
    spec = importlib.util.find_spec(MODELS_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    raise FileNotFoundError(f"no models folder: set {MODELS_ENV} (or --models-dir), or "
                            f"install the agegender package, which ships them")


def read_meta(directory: str | os.PathLike) -> dict:
    """The parsed ``meta.json`` of a model folder.

    Raises:
        FileNotFoundError: the folder has no ``meta.json``.
    """
    return json.loads((Path(directory) / "meta.json").read_text())


def shipped_models(models: str | os.PathLike | None = None) -> list[str]:
    """Names of the age/gender models in the models folder (folders with ``meta.json``;
    the detector's ``blazeface/`` has none)."""
    try:
        root = models_dir(models)
    except FileNotFoundError:
        return []
    return sorted(p.parent.name for p in root.glob("*/meta.json"))


def resolve_model_dir(name_or_path: str | os.PathLike,
                      models: str | os.PathLike | None = None) -> Path:
    """The folder of a model: ``name_or_path`` itself when it is a folder with
    ``meta.json``, else ``<models folder>/<name_or_path>``.

    Args:
        name_or_path: a model name (``"compact"``) or a folder.
        models: the models folder (``None``: :func:`models_dir`'s search).

    Raises:
        FileNotFoundError: no such folder or no ``meta.json`` in it; the message lists the
            models that are there.
    """
    path = Path(name_or_path)
    if path.is_dir() and (path / "meta.json").is_file():
        return path
    try:
        root = models_dir(models)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"no model {str(name_or_path)!r}: {exc}") from None
    path = root / str(name_or_path)
    if not (path / "meta.json").is_file():
        raise FileNotFoundError(f"no model {str(name_or_path)!r}: expected a folder with "
                                f"meta.json (<models folder>/<name>/ or a path); models in "
                                f"{root}: {shipped_models(root)}")
    return path
