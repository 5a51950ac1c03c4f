"""BlazeFace tiling: which square tiles of a frame the network reads, and how the
detections of all passes become one list (used by :mod:`common.detectors.blazeface`).

The network sees 192x192 pixels, so a 16:9 frame letterboxed whole shrinks a face by
``192 / W``. Frames that are not square are therefore also cut into square tiles of side
``T = min(short side, max_tile_side)`` (neighbours overlapping by at least
``min_overlap * T``), each resized to 192x192; frames larger than ``max_tile_side`` get a
pyramid of tile levels (each :data:`LEVEL_FACTOR` times coarser, up to tiles of the short
side); one extra letterboxed pass of the whole frame finds faces larger than any tile
(:func:`plan_levels`). A 1280x720 frame costs three passes (two 720x720 tiles + the
frame), a 4097x300 panorama 18, a 12000x9000 photo about 180. Detections from all passes
are merged (:func:`merge_passes`): boxes cut by an inner tile edge are dropped when an
uncut box covers the face, coarse boxes give way to finer ones of the same face, and the
rest are merged by the same weighted NMS.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from common.detectors.blazeface_net import INPUT_SIZE, NMS_IOU, covers, weighted_nms

#: Smallest tile side (pixels of the frame): half the network input, so a tile is never
#: enlarged more than twice.
MIN_TILE_SIDE = INPUT_SIZE // 2
#: Frames whose short side is below this (pixels) run in one pass (no face worth finding
#: fits).
MIN_TILED_SIDE = 16
#: Each tile level's tiles are this many times larger than the previous level's.
LEVEL_FACTOR = 3.0


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


def to_frame(boxes: np.ndarray, kps: np.ndarray, x0: float, y0: float, fx: float,
              fy: float) -> tuple[np.ndarray, np.ndarray]:
    """Boxes/keypoints from a tile at ``(x0, y0)`` of an image resized by ``(fx, fy)`` to
    frame pixels."""
    boxes = (boxes + [x0, y0, x0, y0]) / [fx, fy, fx, fy]
    kps = (kps + [x0, y0]) / [fx, fy]
    return boxes, kps


def cut_by_inner_edges(boxes: np.ndarray, inner: tuple[bool, bool, bool, bool], width: int,
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


def merge_passes(passes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def drop_nested(boxes: np.ndarray, kps: np.ndarray, conf: np.ndarray
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
