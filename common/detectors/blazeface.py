"""MediaPipe BlazeFace full-range face detector: boxes and six keypoints per face.

The model (``models/blazeface/``, Apache-2.0, see its ``MODEL_CARD.md``) reads one
192x192 RGB image; the frame is letterboxed (aspect kept, zero border) to it. Running,
decoding and weighted NMS: :mod:`common.detectors.blazeface_net`.

Keypoints, in MediaPipe's order (:data:`common.geometry.KEYPOINT_NAMES`): the person's
right eye, left eye, nose tip, mouth centre, right ear tragion, left ear tragion. "Right"
is the person's own right side, which is on the image's left for a face looking at the
camera.

Tiling (:mod:`common.detectors.blazeface_tiles`): non-square frames are also cut into
square tiles (a pyramid of them for frames larger than ``max_tile_side``) plus one
letterboxed pass of the whole frame, and the detections of all passes are merged.

Smallest face found: about :data:`MIN_FACE_TENSOR_PX` pixels wide (cheek to cheek) at the
network input, i.e. ``MIN_FACE_TENSOR_PX * T / 192`` frame pixels with tiles and
``MIN_FACE_TENSOR_PX * max(W, H) / 192`` in one pass (:func:`smallest_face_px`);
measured by pasting a real face at decreasing sizes into a face-free frame
(:func:`services.detector.smallest_face.smallest_face`): 17.5 px at 480x270, 19.5 px at 640x480,
43.5 px at 1280x720, 60.5 px at 1920x1080, 16.5 px in a 4097x300 panorama, 60.5 px in a
12000x9000 photo (one pass: 29 / 51.5 / 71 / 115.5 px, nothing in the last two);
``models/blazeface/MODEL_CARD.md`` has the table.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from common.detectors.blazeface_net import (INPUT_SIZE, NMS_IOU, NUM_COORDS, STRIDE,
                                            LiteRTRunner, OnnxRunner, decode, weighted_nms)
from common.detectors.blazeface_tiles import (Tile, cut_by_inner_edges, drop_nested,
                                              merge_passes, plan_levels, to_frame)
from common.geometry import Detection, clip_box, eye_roll_degrees
from common.images import check_bgr8
from common.models.registry import models_dir

log = logging.getLogger(__name__)

#: Model folder in the models folder (:func:`common.models.registry.models_dir`).
MODEL_FOLDER = "blazeface"
#: Dense full-range model converted to ONNX (``models/blazeface/NOTICE.md`` says how).
MODEL_FILE = "face_detection_full_range.onnx"


def default_model(models: str | Path | None = None) -> Path:
    """Path of the shipped model: ``<models folder>/blazeface/face_detection_full_range.onnx``
    (the folder found as for the age/gender models: ``models`` argument,
    ``AGEGENDER_MODELS_DIR``, the checkout's ``models/``, the installed package).

    Raises:
        FileNotFoundError: no models folder.
    """
    return models_dir(models) / MODEL_FOLDER / MODEL_FILE


#: Side of the upright view a rolled face is read again in, in face boxes (see
#: :meth:`BlazeFaceDetector._refine`).
REFINE_SCALE = 2.0
#: Width (pixels, network input) of the smallest face found reliably; measured on a real
#: face (scikit-image's astronaut) pasted at decreasing sizes into a real frame
#: (``python -m services.detector.compare --smallest``; see the model card).
MIN_FACE_TENSOR_PX = 12.0


def smallest_face_px(width: int, height: int, max_tile_side: int = 1080,
                     tiles: bool = True, min_gain: float = 1.25) -> float:
    """Approximate width (pixels, cheek to cheek) of the smallest face
    :class:`BlazeFaceDetector` finds in a ``width`` x ``height`` frame with these settings:
    :data:`MIN_FACE_TENSOR_PX` scaled from the network input to the frame by the finest
    tile level (or the whole-frame pass)."""
    levels = plan_levels(width, height, max_tile_side, 0.2, min_gain) if tiles else []
    side = levels[0][0].side if levels else max(width, height)
    return MIN_FACE_TENSOR_PX * side / INPUT_SIZE


class BlazeFaceDetector:
    """MediaPipe BlazeFace full-range detector with tiling (see the module docstring).

    Args:
        confidence: minimum confidence (0..1). MediaPipe's full-range graph uses 0.6 (with
            the sparse model); with the dense model 0.4 finds 3.9 of the 4 small faces of
            ``classroom.mp4`` per frame and no false positive on the shared clips
            (``python -m services.detector.compare``; ``models/blazeface/MODEL_CARD.md``).
        min_face_px: drop boxes narrower or shorter than this (pixels, after clipping).
        tiles: cut non-square frames into square tiles (plus one whole-frame pass); False:
            one whole-frame letterboxed pass (cheapest, small faces are lost).
        max_tile_side: largest tile side (pixels of the frame). Tiles have the frame's
            short side up to this; larger frames (photos) get a pyramid whose finest tiles
            are this large. The smallest face found is about
            ``MIN_FACE_TENSOR_PX * side / 192`` pixels (:func:`smallest_face_px`); 1080
            keeps video frames up to 1080p at one level of two or three tiles.
        min_overlap: least overlap of neighbouring tiles, as a fraction of the tile side;
            faces up to that size lie whole in at least one tile.
        min_gain: a tile level is only used when it enlarges faces by at least this factor
            over the whole-frame pass (1.25: a 5:4 frame runs one pass, 4:3 tiles).
        model: a ``.onnx`` (ONNX Runtime) or ``.tflite`` (LiteRT) BlazeFace full-range
            model; default :func:`default_model` (``models/blazeface/``).
        threads: intra-op threads of the runtime (``None``: its default).
        refine_roll_degrees: faces whose eye line is rolled by at least this (degrees) get
            their box and keypoints read again on an upright view of the face (one more network
            pass per such face, see :meth:`_refine`); ``None`` or 0: never.
        pad: for close-ups (still photos, dataset chips): one more whole-frame pass with a
            black border of ``pad`` times the frame's longer side on each side (one more
            network pass). A face filling the image is too large for the model: on 40
            UTKFace chips (200x200) none is found on 24 without the border, every one with
            0.5. 0 for video.

    Raises:
        ValueError: a parameter out of range or a model whose outputs are not
            ``(1, 2304, 16)`` and ``(1, 2304, 1)``.
        FileNotFoundError: the model file is missing.
    """

    name = "blazeface"
    backend = "cpu"

    def __init__(self, confidence: float = 0.4, min_face_px: int = 4, tiles: bool = True,
                 max_tile_side: int = 1080, min_overlap: float = 0.2, min_gain: float = 1.25,
                 model: str | Path | None = None, threads: int | None = None,
                 refine_roll_degrees: float | None = 8.0, pad: float = 0.0):
        if not 0.0 < confidence <= 1.0:
            raise ValueError("confidence must be in (0, 1]")
        if max_tile_side < INPUT_SIZE // 2:
            raise ValueError(f"max_tile_side must be >= {INPUT_SIZE // 2} pixels")
        if not 0.0 <= min_overlap < 0.9:
            raise ValueError("min_overlap must be in [0, 0.9)")
        if min_gain < 1.0:
            raise ValueError("min_gain must be >= 1")
        if not 0.0 <= pad <= 2.0:
            raise ValueError("pad must be in [0, 2]")
        self.pad = float(pad)
        self.confidence = float(confidence)
        self.min_face_px = int(min_face_px)
        self.tiles = bool(tiles)
        self.max_tile_side = int(max_tile_side)
        self.min_overlap = float(min_overlap)
        self.min_gain = float(min_gain)
        if refine_roll_degrees is not None and refine_roll_degrees < 0:
            raise ValueError("refine_roll_degrees must be >= 0 or None")
        self.refine_roll_degrees = refine_roll_degrees or None
        path = Path(model) if model is not None else default_model()
        if not path.is_file():
            raise FileNotFoundError(f"BlazeFace model file missing: {path}")
        self.model_path = path
        self.runner = (LiteRTRunner if path.suffix == ".tflite" else OnnxRunner)(path, threads)
        reg, cls = self.runner(np.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), np.float32))
        n = (INPUT_SIZE // STRIDE) ** 2
        if reg.shape != (1, n, NUM_COORDS) or cls.shape != (1, n, 1):
            raise ValueError(f"{path}: outputs {reg.shape} {cls.shape}, expected "
                             f"(1, {n}, {NUM_COORDS}) and (1, {n}, 1)")
        log.info("BlazeFace full-range on %s (%s)", self.runner.name, path.name)

    def plan(self, width: int, height: int) -> list[list[Tile]]:
        """Tile levels used for a ``width`` x ``height`` frame, finest first (empty: one
        whole-frame pass); see :func:`plan_levels`."""
        if not self.tiles:
            return []
        return plan_levels(width, height, self.max_tile_side, self.min_overlap, self.min_gain)

    def smallest_face_px(self, width: int, height: int) -> float:
        """Approximate width (pixels) of the smallest face found in a ``width`` x
        ``height`` frame with these settings (:func:`smallest_face_px`)."""
        return smallest_face_px(width, height, self.max_tile_side, self.tiles, self.min_gain)

    def _pass(self, image: np.ndarray, border: float = 0.0
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Letterbox a BGR ``image`` to 192x192 RGB in ``[-1, 1]``, run the network,
        decode and merge (weighted NMS). With ``border``, the image is shrunk as if it
        had a black border of ``border`` times its longer side on each side.

        Returns:
            ``(boxes (N, 4), keypoints (N, 6, 2), conf (N,))`` in ``image`` pixels.
        """
        h, w = image.shape[:2]
        scale = INPUT_SIZE / (max(h, w) * (1.0 + 2.0 * border))
        nw = min(INPUT_SIZE, max(1, int(round(w * scale))))
        nh = min(INPUT_SIZE, max(1, int(round(h * scale))))
        small = _resize(image, nw, nh)
        px, py = (INPUT_SIZE - nw) // 2, (INPUT_SIZE - nh) // 2
        # MediaPipe's BORDER_ZERO pads the uint8 image with 0 before mapping 0..255 to
        # -1..1 (image_to_tensor_converter_opencv.cc): the border is black, -1.
        x = np.full((1, INPUT_SIZE, INPUT_SIZE, 3), -1.0, np.float32)
        rgb = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
        x[0, py:py + nh, px:px + nw] = rgb.astype(np.float32) * (2.0 / 255.0) - 1.0
        reg, cls = self.runner(x)
        boxes, kps, conf = weighted_nms(*decode(reg[0], cls[0], self.confidence), NMS_IOU)
        sx, sy = nw / w, nh / h  # exact per-axis scale of the resize
        boxes = boxes * INPUT_SIZE
        kps = kps * INPUT_SIZE
        boxes[:, [0, 2]] = (boxes[:, [0, 2]] - px) / sx
        boxes[:, [1, 3]] = (boxes[:, [1, 3]] - py) / sy
        kps[..., 0] = (kps[..., 0] - px) / sx
        kps[..., 1] = (kps[..., 1] - py) / sy
        return boxes, kps, conf

    def detect(self, frame: np.ndarray) -> list[Detection]:
        """Find faces in a ``(H, W, 3)`` uint8 BGR frame, most confident first.

        Returns:
            :class:`common.geometry.Detection` list: boxes in frame pixels clipped to
            the frame, at least ``min_face_px`` on each side; six keypoints each in frame
            pixels, clipped to ``[0, W] x [0, H]``.

        Raises:
            ValueError: the frame is not a non-empty ``(H, W, 3)`` uint8 array.
        """
        check_bgr8(frame)
        h, w = frame.shape[:2]
        levels = self.plan(w, h)
        passes = []  # (boxes, keypoints, conf, cut, level) in frame pixels
        if not levels:
            small, fx, fy = frame, 1.0, 1.0
        else:
            for level, tiles in enumerate(levels):
                # Resize the frame once so that a tile is 192x192, then cut the tiles.
                side = tiles[0].side
                sw = max(1, int(round(w * INPUT_SIZE / side)))
                sh = max(1, int(round(h * INPUT_SIZE / side)))
                small = _resize(frame, sw, sh)
                fx, fy = sw / w, sh / h
                for tile in tiles:
                    x0 = max(0, min(int(round(tile.x * fx)), sw - INPUT_SIZE))
                    y0 = max(0, min(int(round(tile.y * fy)), sh - INPUT_SIZE))
                    crop = small[y0:y0 + INPUT_SIZE, x0:x0 + INPUT_SIZE]
                    b, k, c = self._pass(crop)
                    cut = cut_by_inner_edges(b, tile.inner, crop.shape[1], crop.shape[0])
                    passes.append((*to_frame(b, k, x0, y0, fx, fy), c, cut, level))
        # the whole frame, letterboxed from the coarsest level's image; with pad, once
        # more inside a black border (close-ups)
        for border in (0.0, self.pad) if self.pad else (0.0,):
            b, k, c = self._pass(small, border)
            passes.append((*to_frame(b, k, 0, 0, fx, fy), c, np.zeros(len(c), bool),
                           len(levels)))
        b, k, c = drop_nested(*(merge_passes(passes) if len(passes) > 1 else passes[0][:3]))
        dets = []
        for box, kp, cf in zip(b, k, c):
            if self.refine_roll_degrees is not None:
                box, kp = self._refine(frame, box, kp)
            clipped = clip_box(*box, w, h, self.min_face_px)
            if clipped is None:
                continue
            kp = np.clip(kp, 0.0, [w, h])
            dets.append(Detection(clipped, float(min(cf, 1.0)),
                                      tuple((float(x), float(y)) for x, y in kp)))
        return dets

    def _refine(self, frame: np.ndarray, box: np.ndarray, kps: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """Box and keypoints of a rolled face read again on an upright view of it.

        The network's keypoints lag behind the head's roll and its box shrinks (trained
        mostly on upright faces: the astronaut of :mod:`skimage.data` turned by +30 / +45 /
        +60 degrees reads +31 / +44 / +41 relative to its upright reading, turned by -30 /
        -45 / -60 only -13 / -23 / -27, and her 105 px box shrinks to 83 px at 45 degrees).
        When the eye line is rolled by at least ``refine_roll_degrees``, a square of twice
        the box's side about the box centre is turned upright by that roll and resized to
        192x192 (black outside the frame), the network runs on it once more, and the
        detection nearest its centre gives the keypoints (mapped back to frame pixels) and
        the box: a square of its side about its centre, in frame pixels, i.e. the box the
        face would have upright. The same turns then read within 4 degrees of the applied
        angle up to +-60 and keep the box within 10 % of its upright side (the
        detection-then-rotated-region scheme of MediaPipe's face pipeline). Without a face
        there, the first reading is kept.

        Args:
            frame: ``(H, W, 3)`` uint8 BGR.
            box: ``(4,)`` float box of the face (frame pixels, unclipped).
            kps: ``(6, 2)`` keypoints (frame pixels).

        Returns:
            ``(box (4,), keypoints (6, 2))``, frame pixels.
        """
        roll = eye_roll_degrees(kps)
        if abs(roll) < self.refine_roll_degrees:
            return box, kps
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = REFINE_SCALE * max(box[2] - box[0], box[3] - box[1], 1.0)
        m = cv2.getRotationMatrix2D((float(cx), float(cy)), -roll, INPUT_SIZE / side)
        m[:, 2] += (INPUT_SIZE / 2 - cx, INPUT_SIZE / 2 - cy)
        patch = cv2.warpAffine(frame, m, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        b, k, _ = self._pass(patch)
        if not len(b):
            return box, kps
        centres = (b[:, :2] + b[:, 2:]) / 2
        i = int(np.argmin(np.hypot(*(centres - INPUT_SIZE / 2).T)))
        if np.hypot(*(centres[i] - INPUT_SIZE / 2)) > INPUT_SIZE / 4:
            return box, kps
        inv = cv2.invertAffineTransform(m)
        ncx, ncy = centres[i] @ inv[:, :2].T + inv[:, 2]
        half = (b[i, 2] - b[i, 0] + b[i, 3] - b[i, 1]) / 4 * side / INPUT_SIZE
        return (np.array([ncx - half, ncy - half, ncx + half, ncy + half]),
                k[i] @ inv[:, :2].T + inv[:, 2])


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` resized to ``width`` x ``height``.

    Shrinking averages areas (no aliasing of small faces); by more than 2x it resizes
    bilinearly to twice the target first and then halves by area averaging, which costs a
    fifth of one area resize at a fractional factor (1280x720 → 341x192: 0.5 vs 2.1 ms).
    """
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    if width >= w and height >= h:
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    if w > 2 * width and h > 2 * height:
        image = cv2.resize(image, (2 * width, 2 * height), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
