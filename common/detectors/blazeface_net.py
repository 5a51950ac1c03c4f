"""The BlazeFace full-range network: its runtimes, anchors, output decoding and weighted
non-maximum suppression (the detector with tiling is :mod:`common.detectors.blazeface`).

The model (``models/blazeface/``, Apache-2.0, see its ``MODEL_CARD.md``) reads one
192x192 RGB image in ``[-1, 1]`` and scores 2,304 anchors (one anchor layer of stride 4:
a 48x48 grid, one square anchor per cell). Per anchor it regresses 16 values: box centre
offset and size, then six keypoints as ``(x, y)`` offsets, in MediaPipe's order
(:data:`common.geometry.KEYPOINT_NAMES`). Decoding follows MediaPipe's published graph
options (``mediapipe/modules/face_detection/face_detection.pbtxt`` and
``face_detection_full_range.pbtxt``): anchors are centred in their cell with a fixed size
of 1 (``SsdAnchorsCalculator``: ``fixed_anchor_size: true``, offsets 0.5), raw values are
divided by 192 (``x_scale`` .. ``w_scale``), scores pass a sigmoid after clipping to
+-100, and overlapping detections are merged by *weighted* non-maximum suppression
(``NonMaxSuppressionCalculator``: IoU 0.3, ``algorithm: WEIGHTED``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Network input side (pixels); ``tensor_width``/``tensor_height`` of
#: ``face_detection_full_range.pbtxt``.
INPUT_SIZE = 192
#: Anchor grid: one layer of stride 4 (``strides: 4``, ``num_layers: 1``) → 48x48 cells.
STRIDE = 4
#: Values per anchor (``num_coords: 16``): box (4) then 6 keypoints x (x, y).
NUM_COORDS = 16
NUM_KEYPOINTS = 6
#: IoU above which detections are merged (``min_suppression_threshold: 0.3``).
NMS_IOU = 0.3
#: Raw scores are clipped to +-this before the sigmoid (``score_clipping_thresh: 100``).
SCORE_CLIP = 100.0


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


def _intersections(a: np.ndarray, b: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairwise intersection areas ``(N, M)`` of boxes ``a (N, 4)`` and ``b (M, 4)``
    (``x1, y1, x2, y2``) and the areas of ``a (N,)`` and ``b (M,)``."""
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter, area_a, area_b


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes ``a (N, 4)`` and ``b (M, 4)`` → ``(N, M)``."""
    inter, area_a, area_b = _intersections(a, b)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def covers(a: np.ndarray, b: np.ndarray, fraction: float = 0.5) -> np.ndarray:
    """``(N, M)`` bool: box ``a[i]`` and ``b[j]`` (``x1, y1, x2, y2``) intersect by at least
    ``fraction`` of the smaller one's area (one box lies mostly inside the other)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), bool)
    inter, area_a, area_b = _intersections(a, b)
    return inter >= fraction * np.minimum(area_a[:, None], area_b[None, :])


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


class OnnxRunner:
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


class LiteRTRunner:
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
