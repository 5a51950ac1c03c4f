"""Default places of the training side: the checkout and the shared data beside it."""

from __future__ import annotations

import os
from pathlib import Path

#: The source checkout (the folder holding ``training/``).
ROOT = Path(__file__).resolve().parents[1]
#: Shared data next to the checkout (``../shared``): datasets and clips, never committed.
SHARED = ROOT.parent / "shared"
#: Default dataset: the shared UTKFace folder (``$AGEGENDER_UTKFACE`` overrides it).
DEFAULT_DATASET = "utkface=" + os.environ.get(
    "AGEGENDER_UTKFACE", str(SHARED / "datasets" / "utkface" / "UTKFace"))
