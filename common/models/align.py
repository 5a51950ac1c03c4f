"""In-plane face alignment (roll) before age/gender classification.

The age/gender networks were trained on UTKFace chips, which are aligned upright; a head
rolled by 30-45 degrees in video is read much worse (the woman of the head-pose clip: 12 %
of frames female as cut, 100 % once turned upright). A small network, the *roll
estimator*, reads the roll angle of a face crop and the crop is turned upright before the
age/gender network sees it. Estimating the in-plane rotation with a network and
de-rotating the window is the "router network" of Rowley, Baluja and Kanade,
"Rotation Invariant Neural Network-Based Face Detection", CVPR 1998.

The estimator is a model folder like the age/gender models (``models/roll/``: ``meta.json``,
``net.keras``, ``net.onnx``; trained by :mod:`training.roll`). Angles are degrees,
counter-clockwise positive as in :func:`cv2.getRotationMatrix2D`: a face with roll
``+30`` is an upright face that was turned 30 degrees counter-clockwise, and it is turned
back by ``-30``.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from common.models.preprocess import InputSpec, resize_crop
from common.models.registry import read_meta, resolve_model_dir
from common.models.runtimes import load_networks, run_session

#: Default roll estimator folder in the models folder.
DEFAULT_ROLL_MODEL = "roll"


def rotate_crop(crop: np.ndarray, degrees: float) -> np.ndarray:
    """``crop`` turned by ``degrees`` (counter-clockwise positive) about its centre.

    The output has the input's shape; the corners the rotation uncovers are filled by
    reflection (``cv2.BORDER_REFLECT``, as the compact model's rotation augmentation does).

    Args:
        crop: ``(h, w, C)`` or ``(h, w)`` uint8 image.
        degrees: rotation angle.

    Returns:
        The rotated image, same shape and dtype.
    """
    h, w = crop.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), float(degrees), 1.0)
    out = cv2.warpAffine(crop, m, (w, h), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT)
    return out.reshape(crop.shape)


class RollEstimator:
    """Reads the roll angle of face crops and turns them upright.

    Args:
        directory: the estimator's model folder (``meta.json`` with ``input``, ``files``,
            optional ``onnx``, ``min_degrees`` and ``max_degrees``).
        threads: intra-op threads of the runtime (``None``: its default).
        runtime: ``"auto"``, ``"onnx"`` or ``"keras"`` (see
            :func:`common.models.runtimes.choose_runtime`).
        device: ``"auto"``, ``"cpu"`` or ``"gpu"`` (``"gpu"`` implies Keras).

    Attributes:
        spec: network input size (64x64 BGR for the shipped estimator).
        min_degrees: estimated rolls smaller than this (absolute) leave the crop as it is;
            from ``meta.json`` (set from the estimator's error on upright faces).
        max_degrees: the largest roll the estimator was trained on; estimates are clipped
            to it.
    """

    def __init__(self, directory: str | os.PathLike, threads: int | None = None,
                 runtime: str = "auto", device: str = "auto"):
        self.directory = Path(directory)
        self.meta = read_meta(self.directory)
        self.spec = InputSpec.from_meta(self.meta)
        self.min_degrees = float(self.meta.get("min_degrees", 10.0))
        self.max_degrees = float(self.meta.get("max_degrees", 60.0))
        self.runtime, nets = load_networks(self.directory, self.meta, runtime, threads, device)
        self._net = nets["net"]

    def angles(self, batch: np.ndarray) -> np.ndarray:
        """Roll angles of preprocessed crops.

        Args:
            batch: ``(N, H, W, C)`` uint8 or float32 (0..255) in :attr:`spec`'s size.

        Returns:
            ``(N,)`` float64 degrees, clipped to ``+-max_degrees``.
        """
        if len(batch) == 0:
            return np.zeros(0)
        x = np.ascontiguousarray(batch, np.float32)
        if self.runtime == "onnx":
            out = run_session(self._net, x)[0]
        else:
            out = np.asarray(self._net(x, training=False))
        return np.clip(out.reshape(len(x)).astype(np.float64), -self.max_degrees,
                       self.max_degrees)

    def upright_arrays(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Turn preprocessed crops of :attr:`spec`'s size upright.

        Returns:
            ``(aligned batch (same shape and dtype), angles (N,) degrees)``; crops whose
            roll is under ``min_degrees`` are returned unchanged.
        """
        if len(batch) == 0:
            return np.array(batch, copy=True), np.zeros(0)
        turned, angles = self.upright(list(batch), batch)
        return np.stack(turned), angles

    def upright(self, crops: list[np.ndarray], resized: np.ndarray | None = None
                ) -> tuple[list[np.ndarray], np.ndarray]:
        """Turn detector crops (any size, ``(h, w, 3)`` uint8 BGR) upright.

        The estimator reads the roll of the crop resized to its square input, where a
        crop ``a`` = w/h wide shows a roll ``t`` as ``atan(a * tan t)``; the angle is
        converted back before the crop is turned in its own pixels.

        Args:
            crops: the crops.
            resized: the same crops already resized to :attr:`spec` (saves a resize).

        Raises:
            ValueError: a crop is not a non-empty ``(h, w, 3)`` uint8 array.

        Returns:
            ``(crops, angles (N,) degrees in each crop's pixels)``: rotated copies where
            the roll is at least ``min_degrees``, the original arrays elsewhere.
        """
        if not crops:
            return [], np.zeros(0)
        if resized is None:
            resized = np.stack([resize_crop(c, self.spec) for c in crops])
        squashed = np.radians(self.angles(resized))
        aspect = np.array([c.shape[1] / c.shape[0] for c in crops], np.float64)
        aspect *= self.spec.height / self.spec.width
        angles = np.degrees(np.arctan2(np.sin(squashed), np.cos(squashed) * aspect))
        return [rotate_crop(c, -a) if abs(a) >= self.min_degrees else c
                for c, a in zip(crops, angles)], angles


def load_roll_estimator(name_or_path: str = DEFAULT_ROLL_MODEL, threads: int | None = None,
                        runtime: str = "auto", device: str = "auto",
                        models: str | os.PathLike | None = None) -> RollEstimator:
    """Load the roll estimator by name (in the models folder) or folder path.

    Args:
        models: the models folder (``None``: :func:`common.models.registry.models_dir`).

    Raises:
        FileNotFoundError: no such folder.
    """
    try:
        directory = resolve_model_dir(name_or_path, models)
    except FileNotFoundError:
        raise FileNotFoundError(f"no roll estimator {name_or_path!r}: expected models/<name>/ "
                                f"or a folder with meta.json (shipped: "
                                f"'{DEFAULT_ROLL_MODEL}'; empty align setting: none)") from None
    return RollEstimator(directory, threads=threads, runtime=runtime, device=device)
