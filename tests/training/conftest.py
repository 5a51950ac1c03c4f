"""Fixtures for training tests: a temporary cache and a small UTKFace-named folder made
from scikit-image's public-domain astronaut photo (no shared data needed)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest


@pytest.fixture
def cache_env(tmp_path, monkeypatch) -> Path:
    """``AGEGENDER_CACHE`` pointed at a fresh temporary folder."""
    path = tmp_path / "cache"
    monkeypatch.setenv("AGEGENDER_CACHE", str(path))
    return path


def make_face_folder(folder: Path, n: int = 32, seed: int = 0) -> list[tuple[str, int, int]]:
    """Write ``n`` UTKFace-named jittered crops of the astronaut's face, one image with no
    face (flat gray) and one malformed name.

    Returns:
        ``[(file name, age, gender)]`` of the ``n`` face images.
    """
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    image = np.ascontiguousarray(skimage.data.astronaut()[:, :, ::-1])  # RGB -> BGR
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        dx, dy = rng.integers(-15, 16, 2)
        crop = image[20 + dy:260 + dy, 110 + dx:330 + dx]
        crop = cv2.resize(crop, (200, 200))
        crop = np.clip(crop.astype(np.int16) + rng.integers(-20, 21), 0, 255).astype(np.uint8)
        if i % 2:
            crop = crop[:, ::-1]
        age, gender = int(rng.integers(1, 90)), int(i % 2)
        name = f"{age}_{gender}_{i % 5}_2017011217{i:04d}000.jpg.chip.jpg"
        cv2.imwrite(str(folder / name), np.ascontiguousarray(crop))
        rows.append((name, age, gender))
    cv2.imwrite(str(folder / "30_1_0_20170112999999999.jpg.chip.jpg"),
                np.full((200, 200, 3), 128, np.uint8))
    cv2.imwrite(str(folder / "39_1_20170116174525125.jpg.chip.jpg"),  # missing race field
                np.full((200, 200, 3), 128, np.uint8))
    return rows


@pytest.fixture
def face_folder(tmp_path) -> Path:
    """A folder of 32 UTKFace-named face images + 1 faceless image + 1 malformed name."""
    folder = tmp_path / "faces"
    make_face_folder(folder)
    return folder
