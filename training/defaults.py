"""Default places of the training side: the checkout and the shared data beside it."""

from __future__ import annotations

import os
from pathlib import Path

#: The source checkout (the folder holding ``training/``).
ROOT = Path(__file__).resolve().parents[1]
#: Shared data (``$AGEGENDER_SHARED``, default ``../shared`` next to the checkout): datasets
#: and clips, never committed.
SHARED = Path(os.environ.get("AGEGENDER_SHARED", ROOT.parent / "shared"))
#: Default dataset: the shared UTKFace folder (``$AGEGENDER_UTKFACE`` overrides it).
DEFAULT_DATASET = "utkface=" + os.environ.get(
    "AGEGENDER_UTKFACE", str(SHARED / "datasets" / "utkface" / "UTKFace"))
