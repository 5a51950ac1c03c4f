"""Compatibility names: the face detection backends moved to :mod:`common.detectors` (and
the box geometry to :mod:`common.geometry`) so that training and ``agegender predict``
share them without importing a service. Import from there; this module goes once
nothing imports it."""

from common.detectors import BACKENDS, make_detector  # noqa: F401
from common.detectors.haar import HaarDetector  # noqa: F401
from common.detectors.ssd import SSDDetector  # noqa: F401
from common.geometry import Detection, clip_box, widen_box  # noqa: F401
