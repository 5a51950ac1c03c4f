"""MediaPipe BlazeFace full-range face detector: boxes and six keypoints per face.

The model (``models/blazeface/``, Apache-2.0, see its ``MODEL_CARD.md``) reads one
192x192 RGB image in ``[-1, 1]`` and scores 2,304 anchors (one anchor layer of stride 4:
a 48x48 grid, one square anchor per cell). Per anchor it regresses 16 values: box centre
offset and size, then six keypoints as ``(x, y)`` offsets. Decoding follows MediaPipe's
published graph options (``mediapipe/modules/face_detection/face_detection.pbtxt`` and
``face_detection_full_range.pbtxt``): the frame is letterboxed (aspect kept, zero
border) to 192x192, anchors are centred in their cell with a fixed size of 1
(``SsdAnchorsCalculator``: ``fixed_anchor_size: true``, offsets 0.5), raw values are
divided by 192 (``x_scale`` .. ``w_scale``), scores pass a sigmoid after clipping to
+-100, and overlapping detections are merged by *weighted* non-maximum suppression
(``NonMaxSuppressionCalculator``: IoU 0.3, ``algorithm: WEIGHTED``).

Keypoints, in MediaPipe's order (:data:`KEYPOINT_NAMES`): the person's right eye, left
eye, nose tip, mouth centre, right ear tragion, left ear tragion. "Right" is the
person's own right side, which is on the image's left for a face looking at the camera.

Tiling: the network sees 192x192 pixels, so a 16:9 frame letterboxed whole shrinks a face
by ``192 / W``. Frames that are not square are therefore also cut into square tiles of
side ``T = min(short side, max_tile_side)`` (neighbours overlapping by at least
``min_overlap * T``), each resized to 192x192; frames larger than ``max_tile_side`` get a
pyramid of tile levels (each :data:`LEVEL_FACTOR` times coarser, up to tiles of the short
side); one extra letterboxed pass of the whole frame finds faces larger than any tile
(:func:`plan_levels`). A 1280x720 frame costs three passes (two 720x720 tiles + the
frame), a 4097x300 panorama 18, a 12000x9000 photo about 180. Detections from all passes
are merged (:func:`_merge`): boxes cut by an inner tile edge are dropped when an uncut box
covers the face, coarse boxes give way to finer ones of the same face, and the rest are
merged by the same weighted NMS.

Smallest face found: about :data:`MIN_FACE_TENSOR_PX` pixels wide (cheek to cheek) at the
network input, i.e. ``MIN_FACE_TENSOR_PX * T / 192`` frame pixels with tiles and
``MIN_FACE_TENSOR_PX * max(W, H) / 192`` in one pass (:func:`smallest_face_px`);
measured by pasting a real face at decreasing sizes into a face-free frame
(:func:`services.detector.compare.smallest_face`): 17.5 px at 480x270, 19.5 px at 640x480,
43.5 px at 1280x720, 60.5 px at 1920x1080, 16.5 px in a 4097x300 panorama, 60.5 px in a
12000x9000 photo (one pass: 29 / 51.5 / 71 / 115.5 px, nothing in the last two);
``models/blazeface/MODEL_CARD.md`` has the table.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import cv2
import numpy as np

from common.geometry import KEYPOINT_NAMES, Detection, clip_box, eye_roll_degrees
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

#: Network input side (pixels); ``tensor_width``/``tensor_height`` of
#: ``face_detection_full_range.pbtxt``.
INPUT_SIZE = 192
#: Anchor grid: one layer of stride 4 (``strides: 4``, ``num_layers: 1``) → 48x48 cells.
STRIDE = 4
#: Values per anchor (``num_coords: 16``): box (4) then 6 keypoints x (x, y).
NUM_COORDS = 16
NUM_KEYPOINTS = 6
#: MediaPipe's keypoint order (face detection model card / ``FaceKeyPoint`` enum):
#: :data:`common.geometry.KEYPOINT_NAMES`.
KEYPOINT_NAMES = KEYPOINT_NAMES
#: IoU above which detections are merged (``min_suppression_threshold: 0.3``).
NMS_IOU = 0.3
#: Raw scores are clipped to +-this before the sigmoid (``score_clipping_thresh: 100``).
SCORE_CLIP = 100.0
#: Smallest tile side (pixels of the frame): half the network input, so a tile is never
#: enlarged more than twice.
MIN_TILE_SIDE = INPUT_SIZE // 2
#: Frames whose short side is below this (pixels) run in one pass (no face worth finding
#: fits).
MIN_TILED_SIDE = 16
#: Side of the upright view a rolled face is read again in, in face boxes (see
#: :meth:`BlazeFaceDetector._refine`).
REFINE_SCALE = 2.0
#: Each tile level's tiles are this many times larger than the previous level's.
LEVEL_FACTOR = 3.0
#: Width (pixels, network input) of the smallest face found reliably; measured on a real
#: face (scikit-image's astronaut) pasted at decreasing sizes into a real frame
#: (``python -m services.detector.compare --smallest``; see the model card).
MIN_FACE_TENSOR_PX = 12.0


def anchors() -> np.ndarray:
    """Anchor centres ``(2304, 2)`` as ``(x, y)`` in ``0..1`` of the network input.

    One anchor per cell of the 48x48 grid, centred in its cell (``anchor_offset_x/y:
    0.5``), row-major (y outer, x inner), the order of the model's outputs.
    """
    n = INPUT_SIZE // STRIDE
    centres = (np.arange(n, dtype=np.float32) + 0.5) / n
    ys, xs = np.meshgrid(centres, centres, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


_ANCHORS = anchors()


def decode(regressors: np.ndarray, scores: np.ndarray, threshold: float
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode one image's raw outputs into candidate detections (before NMS).

    Args:
        regressors: ``(2304, 16)`` float raw box/keypoint values.
        scores: ``(2304,)`` or ``(2304, 1)`` float raw scores (logits).
        threshold: minimum confidence (0..1) after the sigmoid.

    Returns:
        ``(boxes (N, 4) x1, y1, x2, y2, keypoints (N, 6, 2) x, y, confidences (N,))``,
        coordinates in ``0..1`` of the 192x192 input (may fall outside it).
    """
    logits = np.clip(np.asarray(scores, np.float64).reshape(-1), -SCORE_CLIP, SCORE_CLIP)
    conf = 1.0 / (1.0 + np.exp(-logits))
    keep = np.flatnonzero(conf >= threshold)
    raw = np.asarray(regressors, np.float32).reshape(-1, NUM_COORDS)[keep] / INPUT_SIZE
    anc = _ANCHORS[keep]
    cx = raw[:, 0] + anc[:, 0]
    cy = raw[:, 1] + anc[:, 1]
    w, h = raw[:, 2], raw[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    kps = raw[:, 4:].reshape(-1, NUM_KEYPOINTS, 2) + anc[:, None, :]
    return boxes, kps, conf[keep]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes ``a (N, 4)`` and ``b (M, 4)`` → ``(N, M)``."""
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, conf: np.ndarray,
                 iou: float = NMS_IOU) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted non-maximum suppression (MediaPipe's ``WEIGHTED`` algorithm).

    Repeatedly takes the most confident remaining detection and every remaining one that
    overlaps it by IoU > ``iou``; the group becomes one detection whose box and keypoints
    are the confidence-weighted mean of the group's and whose confidence is the highest
    in the group.

    Args:
        boxes: ``(N, 4)`` ``x1, y1, x2, y2`` (any unit).
        keypoints: ``(N, K, 2)``.
        conf: ``(N,)`` confidences.
        iou: overlap threshold.

    Returns:
        ``(boxes, keypoints, conf)`` of the merged detections, most confident first.
    """
    order = np.argsort(-conf, kind="stable")
    boxes, keypoints, conf = boxes[order], keypoints[order], conf[order]
    out_b, out_k, out_c = [], [], []
    remaining = np.arange(len(conf))
    while remaining.size:
        top = remaining[0]
        overlap = iou_matrix(boxes[top:top + 1], boxes[remaining])[0]
        group = remaining[(overlap > iou) | (remaining == top)]
        wts = conf[group][:, None]
        out_b.append((boxes[group] * wts).sum(0) / wts.sum())
        out_k.append((keypoints[group] * wts[:, :, None]).sum(0) / wts.sum())
        out_c.append(conf[top])
        remaining = remaining[(overlap <= iou) & (remaining != top)]
    if not out_c:
        return (np.zeros((0, 4), np.float32), np.zeros((0,) + keypoints.shape[1:], np.float32),
                np.zeros(0, np.float32))
    return np.array(out_b), np.array(out_k), np.array(out_c)


@dataclasses.dataclass(frozen=True)
class Tile:
    """A square region of the frame and where its inner edges are (edges shared with
    another tile rather than the frame's border): ``inner`` = (left, top, right, bottom)."""

    x: int
    y: int
    side: int
    inner: tuple[bool, bool, bool, bool]


def tile_starts(length: int, tile: int, min_overlap: float) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``0..length`` with neighbours
    overlapping by at least ``min_overlap * tile`` pixels, spread evenly."""
    if tile >= length:
        return [0]
    step = max(1.0, tile * (1.0 - min_overlap))
    n = max(2, math.ceil((length - tile) / step) + 1)
    return [int(round(i * (length - tile) / (n - 1))) for i in range(n)]


def plan_tiles(width: int, height: int, side: int, min_overlap: float) -> list[Tile]:
    """Square tiles of ``side`` pixels covering a ``width`` x ``height`` frame, row-major,
    neighbours overlapping by at least ``min_overlap * side`` (a tile larger than the frame
    along an axis is cut off at the frame)."""
    xs = tile_starts(width, side, min_overlap)
    ys = tile_starts(height, side, min_overlap)
    return [Tile(x, y, side, (x > 0, y > 0, x + side < width, y + side < height))
            for y in ys for x in xs]


def plan_levels(width: int, height: int, max_tile_side: int, min_overlap: float,
                min_gain: float, level_factor: float = LEVEL_FACTOR) -> list[list[Tile]]:
    """The tile pyramid of a ``width`` x ``height`` frame, finest level first (empty: one
    whole-frame pass suffices).

    Level 0 has tiles of side ``T0 = min(width, height, max_tile_side)`` (at least
    :data:`MIN_TILE_SIDE`: a strip lower than that gets tiles that reach past it, cut off
    at the frame); each next level's tiles are ``level_factor`` times larger, the last one
    of the frame's short side. A level is left out when its tiles would enlarge faces by
    less than ``min_gain`` over the whole-frame pass (which scales by
    ``192 / max(width, height)``). Frames whose short side is under
    :data:`MIN_TILED_SIDE` pixels are never tiled. Video frames up to ``max_tile_side``
    high have one level (1280x720: two 720x720 tiles); a 12000x9000 photo with
    ``max_tile_side`` 1080 has three (1080, 3240 and 9000 pixels).
    """
    short, long = min(width, height), max(width, height)
    if short < MIN_TILED_SIDE:
        return []
    levels, side = [], max(min(short, max_tile_side), min(MIN_TILE_SIDE, long))
    while True:
        if long / side >= min_gain:
            levels.append(plan_tiles(width, height, side, min_overlap))
        if side >= short:
            return levels
        side = min(short, int(math.ceil(side * level_factor)))


class _OnnxRunner:
    """ONNX Runtime CPU session; ``__call__((1, 192, 192, 3) float32) -> (reg, cls)``."""

    name = "onnxruntime"

    def __init__(self, path: Path, threads: int | None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or 0)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        # no busy-waiting between runs (other sessions share the cores)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), opts,
                                            providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        shapes = [o.shape for o in self.session.get_outputs()]
        # regressors (.., 16) and classificators (.., 1), whatever the output order
        self.reg = next(i for i, s in enumerate(shapes) if s[-1] == NUM_COORDS)
        self.cls = next(i for i, s in enumerate(shapes) if s[-1] == 1)

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.session.run(None, {self.input: x})
        return out[self.reg], out[self.cls]


class _LiteRTRunner:
    """LiteRT (TFLite) interpreter; ``__call__((1, 192, 192, 3) float32) -> (reg, cls)``."""

    name = "litert"

    def __init__(self, path: Path, threads: int | None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise ImportError("a .tflite BlazeFace model needs LiteRT: pip install "
                              "ai-edge-litert (or use the shipped .onnx model)") from exc
        self.interp = Interpreter(model_path=str(path), num_threads=threads or None)
        self.interp.allocate_tensors()
        self.input = self.interp.get_input_details()[0]["index"]
        outs = self.interp.get_output_details()
        self.reg = next(o["index"] for o in outs if o["shape"][-1] == NUM_COORDS)
        self.cls = next(o["index"] for o in outs if o["shape"][-1] == 1)

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.interp.set_tensor(self.input, x)
        self.interp.invoke()
        return self.interp.get_tensor(self.reg), self.interp.get_tensor(self.cls)


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
        self.runner = (_LiteRTRunner if path.suffix == ".tflite" else _OnnxRunner)(path, threads)
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
                    cut = _cut(b, tile.inner, crop.shape[1], crop.shape[0])
                    passes.append((*_to_frame(b, k, x0, y0, fx, fy), c, cut, level))
        # the whole frame, letterboxed from the coarsest level's image; with pad, once
        # more inside a black border (close-ups)
        for border in (0.0, self.pad) if self.pad else (0.0,):
            b, k, c = self._pass(small, border)
            passes.append((*_to_frame(b, k, 0, 0, fx, fy), c, np.zeros(len(c), bool),
                           len(levels)))
        b, k, c = _drop_nested(*(_merge(passes) if len(passes) > 1 else passes[0][:3]))
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


def _to_frame(boxes: np.ndarray, kps: np.ndarray, x0: float, y0: float, fx: float,
              fy: float) -> tuple[np.ndarray, np.ndarray]:
    """Boxes/keypoints from a tile at ``(x0, y0)`` of an image resized by ``(fx, fy)`` to
    frame pixels."""
    boxes = (boxes + [x0, y0, x0, y0]) / [fx, fy, fx, fy]
    kps = (kps + [x0, y0]) / [fx, fy]
    return boxes, kps


def _merge(passes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge the detections of all passes (``(boxes, keypoints, conf, cut, level)`` each,
    frame pixels; level 0 = finest tiles, the whole-frame pass last).

    A finer level sees a face at a higher resolution, and coarse boxes of small faces are
    loose (a 17 px face of ``classroom.mp4`` comes out 30 px wide in the whole-frame pass),
    so: (1) a box cut by an inner tile edge is dropped when an uncut box of another pass
    covers it; (2) an uncut box is dropped when an uncut box of a finer level covers it;
    (3) the rest (duplicates from overlapping tiles, cut boxes nothing covers) are merged
    by weighted NMS. "Covers": the intersection is at least half the smaller box's area.
    """
    boxes = np.concatenate([p[0] for p in passes])
    kps = np.concatenate([p[1] for p in passes])
    conf = np.concatenate([p[2] for p in passes])
    cut = np.concatenate([p[3] for p in passes])
    level = np.concatenate([np.full(len(p[2]), p[4]) for p in passes])
    src = np.concatenate([np.full(len(p[2]), i) for i, p in enumerate(passes)])
    keep = np.ones(len(conf), bool)
    uncut = np.flatnonzero(~cut)
    if len(uncut) and len(conf):
        cov = covers(boxes, boxes[uncut])  # (all, uncut)
        other = src[:, None] != src[uncut][None, :]
        finer = level[uncut][None, :] < level[:, None]
        keep[cut & (cov & other).any(axis=1)] = False
        keep[~cut & (cov & finer).any(axis=1)] = False
    return weighted_nms(boxes[keep], kps[keep], conf[keep], NMS_IOU)


def _drop_nested(boxes: np.ndarray, kps: np.ndarray, conf: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop detections that lie mostly inside a more confident one (after NMS).

    Faces do not nest: a box at least half inside a more confident box that NMS left
    apart (IoU <= 0.3, so much smaller) is a part of that face, as the left eye and
    cheek of a close-up that fills the image (a UTKFace chip: 0.46 for the part read in
    the plain pass, 0.80 for the whole face read inside a border).
    """
    if len(conf) < 2:
        return boxes, kps, conf
    cov = covers(boxes, boxes)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    inside = cov & (area[:, None] < area[None, :]) & (conf[:, None] <= conf[None, :])
    keep = ~inside.any(axis=1)
    return boxes[keep], kps[keep], conf[keep]


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


def _cut(boxes: np.ndarray, inner: tuple[bool, bool, bool, bool], width: int,
         height: int) -> np.ndarray:
    """Which boxes (pixels of a ``width`` x ``height`` tile) reach one of the tile's inner
    edges (``inner`` = left, top, right, bottom) within 2 % of its size: the face may go on
    in the neighbouring tile."""
    mx, my = 0.02 * width, 0.02 * height
    left, top, right, bottom = inner
    cut = np.zeros(len(boxes), bool)
    if left:
        cut |= boxes[:, 0] <= mx
    if top:
        cut |= boxes[:, 1] <= my
    if right:
        cut |= boxes[:, 2] >= width - mx
    if bottom:
        cut |= boxes[:, 3] >= height - my
    return cut


def covers(a: np.ndarray, b: np.ndarray, fraction: float = 0.5) -> np.ndarray:
    """``(N, M)`` bool: box ``a[i]`` and ``b[j]`` (``x1, y1, x2, y2``) intersect by at least
    ``fraction`` of the smaller one's area (one box lies mostly inside the other)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), bool)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter >= fraction * np.minimum(area_a[:, None], area_b[None, :])
