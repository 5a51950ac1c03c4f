"""Face detection backends and their registry.

Every backend is a class in a module of this package with a ``name``, a ``backend``
attribute (``"cpu"`` or ``"cuda"``, where it runs) and ``detect(frame) ->
list[Detection]``: boxes in absolute pixels ``x1, y1, x2, y2`` (``x2``/``y2`` exclusive),
clipped to the frame, at least ``min_face_px`` on each side, so a crop
``frame[y1:y2, x1:x2]`` is never empty, and six keypoints per face where the model gives
them (BlazeFace; :class:`common.geometry.Detection`). A backend that knows the smallest
face it finds has ``smallest_face_px(width, height) -> float`` (pixels).

Backends: ``blazeface`` (MediaPipe BlazeFace full-range, the default: boxes and keypoints,
tiled), ``ssd`` (OpenCV DNN res10 SSD, the seed's), ``haar`` (OpenCV Haar cascade),
``dlib-hog`` and ``dlib-mmod`` (dlib; optional extra ``detectors``). ``agegender detectors
compare`` measures them side by side (``docs/detectors.md``).

Adding a backend: write ``common/detectors/<name>.py`` with its class and add one line
``"<name>": "common.detectors.<name>:<Class>"`` to :data:`BACKENDS`. The detector
service's ``backend`` setting and ``agegender predict --detector-backend`` accept every
name listed there. Backends import their model's runtime only when built.
"""

from __future__ import annotations

import importlib
import inspect

#: Backend name -> ``"module:Class"``; the first is the default.
BACKENDS = {
    "blazeface": "common.detectors.blazeface:BlazeFaceDetector",  # MediaPipe (default)
    "ssd": "common.detectors.ssd:SSDDetector",    # OpenCV DNN res10 SSD (the seed's)
    "haar": "common.detectors.haar:HaarDetector",  # OpenCV Haar cascade
    "dlib-hog": "common.detectors.dlib_backends:DlibHogDetector",    # extra 'detectors'
    "dlib-mmod": "common.detectors.dlib_backends:DlibMmodDetector",  # extra 'detectors'
}
#: The default backend.
DEFAULT_BACKEND = next(iter(BACKENDS))
#: Settings every backend may be given; a backend whose constructor lacks one ignores it.
SHARED_SETTINGS = ("confidence", "input_size", "min_face_px", "threads", "pad", "tiles",
                   "max_tile_side", "refine_roll_degrees")
#: ``pad`` for photos (``agegender predict``'s default, an image folder's still frames in
#: the detector service): photos are often close-ups, a face filling the image, which
#: detectors trained on scenes only find inside a border (fraction of the longer side).
PHOTO_PAD = 0.5


def backend_class(name: str) -> type:
    """The class of backend ``name``.

    Raises:
        ValueError: unknown backend name (the message lists the known ones).
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown detector backend {name!r}; use one of {list(BACKENDS)}")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_detector(backend: str = DEFAULT_BACKEND, **settings):
    """Build a detector by name (a key of :data:`BACKENDS`).

    Args:
        backend: backend name.
        settings: constructor arguments; those of :data:`SHARED_SETTINGS` that the
            backend does not take, and any that is ``None`` (the backend's own default,
            e.g. ``confidence``: 0.4 BlazeFace, 0.5 SSD), are dropped; anything else it
            does not take is an error.

    Raises:
        ValueError: unknown backend name, or a setting out of range.
        TypeError: a setting the backend does not know (not a shared one).
        FileNotFoundError: the backend's model files are missing.
        ImportError: an optional backend whose package is not installed (the message
            names the extra).
    """
    cls = backend_class(backend)
    accepted = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in settings.items()
                  if v is not None and (k in accepted or k not in SHARED_SETTINGS)})
