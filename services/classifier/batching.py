"""Dynamic batching of face crops across frames and streams (no sockets here).

The classifier service keeps a :class:`PendingFrames` queue of ``faces`` messages in
arrival order. Only faces the detector marked ``classify`` are classified (its schedule:
a track's first face, then clearly better faces or one every ``classify_every`` frames);
the others pass through with their track and quality only. The faces of all queued
frames are classified together, in chunks of at most ``max_batch`` crops (one model call
per chunk), once the queue holds ``max_batch`` faces to classify, once the oldest queued
frame has waited ``max_wait_ms`` or when an end of stream arrives. Frames keep their arrival order on the way out, so the sink sees each stream in
order. A ``faces`` message carries either the raw frame or the crops
(:mod:`common.wire`); :func:`face_crops` takes the crops from whichever it has.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from typing import Any, Callable, Protocol

import numpy as np

from common import wire
from common.crops import DEFAULT_RULE, CropRule, face_crop
from common.faces import classified
from common.geometry import clip_box
from common.images import BadFrame, frame_image
from common.models.dlib_descriptor import OPINION_WEIGHT, combine_gender, opinion_weight

log = logging.getLogger("classifier")


class Model(Protocol):
    """The part of :class:`common.models.AgeGenderModel` the batcher uses."""

    name: str

    def predict(self, crops: list[np.ndarray]) -> list[dict]:  # pragma: no cover - protocol
        """Crops ``(h, w, 3) uint8`` BGR -> one dict per crop (age, gender, ...)."""


def to_classify(msg: wire.Message) -> list[dict]:
    """The faces of a ``faces`` message the classifier classifies (``classify`` true)."""
    return [f for f in msg.header.get("faces", []) if f.get("classify")]


def result_frames(msg: wire.Message, predictions: list[dict], t_ns: int,
                  fusion: dict | None = None) -> list:
    """Encode the ``result`` message of one ``faces`` message.

    Args:
        msg: the decoded ``faces`` message (its header keeps all upstream fields).
        predictions: one model prediction per face to classify (:func:`to_classify`), in
            the order of ``msg.header["faces"]``.
        t_ns: classifier timestamp (ns since the Unix epoch) stamped as ``t_classifier_ns``.
        fusion: the model's ``meta.json`` ``fusion`` map, carried in the header for the
            sink (``None``: none).

    Returns:
        Multipart frames ``[header, image]``: the payload is the frame only (no crops).

    Raises:
        ValueError: the number of predictions differs from the number of faces to classify.
    """
    faces = msg.header.get("faces", [])
    wanted = sum(1 for f in faces if f.get("classify"))
    if len(predictions) != wanted:
        raise ValueError(f"{len(predictions)} predictions for {wanted} faces to classify")
    h = wire.stamp(msg.header, "classifier", t_ns)
    h.pop("crops", None)
    h["kind"] = "result"
    preds = iter(predictions)
    h["faces"] = [classified(f, next(preds)) if f.get("classify") else dict(f) for f in faces]
    if fusion:
        h["fusion"] = dict(fusion)
    return wire.encode(h, [msg.image_bytes])


def classify(crops: list[np.ndarray], model: Model, max_batch: int,
             on_batch: Callable[[int, float], None] | None = None) -> list[dict]:
    """Classify ``crops`` with one ``model.predict`` call per chunk of ``max_batch``.

    Args:
        crops: ``(h, w, 3) uint8`` BGR face crops.
        model: the age/gender model.
        max_batch: largest number of crops per model call.
        on_batch: called as ``on_batch(batch_size, seconds)`` after each model call.

    Returns:
        One prediction dict per crop, in order.

    Raises:
        ValueError: the model returned a different number of predictions than crops.
    """
    out: list[dict] = []
    for i in range(0, len(crops), max_batch):
        chunk = crops[i:i + max_batch]
        t0 = time.perf_counter()
        preds = model.predict(chunk)
        dt = time.perf_counter() - t0
        if len(preds) != len(chunk):
            raise ValueError(f"model returned {len(preds)} predictions for {len(chunk)} crops")
        if on_batch is not None:
            on_batch(len(chunk), dt)
        out.extend(preds)
    return out


class PendingFrames:
    """``faces`` messages waiting for classification, in arrival order.

    Args:
        max_batch: flush once this many faces are queued.
        max_wait_s: flush once the oldest queued frame has waited this long (seconds).
        clock: monotonic clock (seconds); injectable for tests.
    """

    def __init__(self, max_batch: int, max_wait_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.clock = clock
        self._items: deque[tuple[float, wire.Message]] = deque()
        self.faces = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, msg: wire.Message) -> None:
        """Queue a ``faces`` message (with or without faces to classify)."""
        self._items.append((self.clock(), msg))
        self.faces += len(to_classify(msg))

    def due(self) -> bool:
        """True when the queue should be classified now (full batch or waited long enough)."""
        if not self._items:
            return False
        return self.faces >= self.max_batch or self.wait_left() <= 0.0

    def wait_left(self) -> float:
        """Seconds until the oldest queued frame reaches ``max_wait_s`` (0 when overdue)."""
        if not self._items:
            return self.max_wait_s
        return max(0.0, self._items[0][0] + self.max_wait_s - self.clock())

    def take(self) -> list[wire.Message]:
        """Remove and return all queued messages in arrival order."""
        msgs = [m for _, m in self._items]
        self._items.clear()
        self.faces = 0
        return msgs


def face_crops(msg: wire.Message, aspect: float | None, rule: CropRule = DEFAULT_RULE
               ) -> list[np.ndarray]:
    """The crops of the faces to classify (:func:`to_classify`) of a ``faces`` message for
    a model with crop aspect ``aspect`` (width/height) and crop rule ``rule``.

    With a raw frame (``msg.image``), each face box is rounded outwards and clipped to the
    frame (:func:`common.geometry.clip_box`) and cut by :func:`common.crops.face_crop`:
    upright by the eye line by ``rule`` when the face has ``keypoints``, else widened to
    ``aspect`` (``None``: as detected). Without a raw frame (a JPEG frame in the crops
    form) the detector's crops, cut by the same function with the default rule and its
    ``crop_aspect`` setting, are used as they are, unless a face has keypoints and
    ``rule`` is not the default rule: then the faces are cut by ``rule`` from the decoded
    JPEG frame (a model with its own ``crop_rule``, e.g. ``compact-wild``, reads the crops
    it was trained on in both forms; a JPEG that cannot be decoded leaves the detector's
    crops, with a warning). A box that rounds to nothing keeps the detector's crop when
    the message has crops.
    """
    image = msg.image
    if image is None and msg.crops and rule != DEFAULT_RULE and msg.image_bytes \
            and any(f.get("keypoints") for f in to_classify(msg)):
        try:
            image = frame_image(msg)
        except BadFrame as exc:
            log.warning("%s: the detector's crops are used as they are", exc)
    if image is None or (not aspect and msg.crops and image is msg.image):
        return list(msg.crops)
    height, width = image.shape[:2]
    faces = to_classify(msg)
    crops = msg.crops or [None] * len(faces)
    out = []
    for face, crop in zip(faces, crops):
        box = clip_box(*face["box"], width, height)
        if box is None and crop is not None:
            out.append(crop)
            continue
        out.append(face_crop(image, box or face["box"], face.get("keypoints"), aspect,
                             rule))
    return out


def fusion_numbers(meta: dict | None) -> dict:
    """The finite numbers of ``meta["fusion"]`` (``{"rho": 0.99, ...}``), what a
    ``result`` header's ``fusion`` map carries (:mod:`common.wire`); ``{}`` without one."""
    fusion = (meta or {}).get("fusion")
    if not isinstance(fusion, dict):
        return {}
    return {str(k): float(v) for k, v in fusion.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class Opinion(Protocol):
    """A gender second opinion (:class:`common.models.dlib_descriptor.DlibGenderOpinion`)."""

    name: str
    rule: CropRule
    crop_aspect: float | None
    min_face_px: float

    def __call__(self, crops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """BGR crops -> ``(log-odds of female (N,), NaN: no opinion; plausible (N,))``."""


#: Depth of the second opinion's CPU budget (CPU seconds): 1-2 faces of dlib back to back
#: (60-80 ms each here), the most one batch's results wait for it.
BURST_S = 0.1


class OpinionBudget:
    """A CPU budget for the second opinion: at most ``share`` of one core on average.

    A token bucket in CPU seconds: it refills at ``share`` seconds per second of wall time
    up to ``burst_s`` (so a few new tracks at once get the opinion at once, and one batch
    waits at most about ``burst_s`` for it); a face is given to the opinion while the
    balance is positive, and the opinion's CPU time (:func:`time.process_time`) is taken
    from it afterwards.

    Args:
        share: largest average share of one core (0 < share).
        burst_s: bucket size (CPU seconds; default :data:`BURST_S`).
        clock: monotonic wall clock (seconds); injectable for tests.
    """

    def __init__(self, share: float, burst_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.share, self.clock = float(share), clock
        self.burst_s = BURST_S if burst_s is None else float(burst_s)
        self.balance = self.burst_s
        self._last = clock()

    def allow(self) -> bool:
        """Whether the next face may be given to the opinion (refills first)."""
        now = self.clock()
        self.balance = min(self.burst_s, self.balance + self.share * (now - self._last))
        self._last = now
        return self.balance > 0

    def spend(self, cpu_s: float) -> None:
        """Take ``cpu_s`` CPU seconds of the opinion's work from the balance."""
        self.balance -= max(0.0, cpu_s)


def second_opinion(msgs: list[wire.Message], preds: list[dict], opinion: Opinion,
                   on_opinion: Callable[[int, int, int, float, int], None] | None = None,
                   budget: OpinionBudget | None = None,
                   weight: float = OPINION_WEIGHT) -> list[dict]:
    """The predictions ``preds`` (one per face to classify of ``msgs``, in order) with the
    gender of each merged with ``opinion``'s (:func:`common.models.dlib_descriptor.
    combine_gender`: a weighted mean of the two logits, ``weight`` the opinion's; the
    classifier passes the model's :func:`common.models.dlib_descriptor.opinion_weight`).
    A face whose box is narrower than ``opinion.min_face_px`` keeps the model's answer
    without asking the opinion (it reads such faces worse than the model) and costs no
    budget. A face keeps the model's answer when the
    opinion has none (implausible landmarks, a crop under 8 px) or when ``budget`` is
    spent (faces are given to the opinion in arrival order, one at a time).

    The opinion reads its own crops, cut from the frame by its rule
    (:func:`face_crops` with ``opinion.rule`` and ``opinion.crop_aspect``), or the
    detector's crops in the crops form.

    Args:
        on_opinion: called once per call as ``on_opinion(used, no_answer, over_budget,
            seconds, small)`` (faces, the opinion's wall time, then the faces under
            ``opinion.min_face_px``).
        budget: CPU budget (``None``: every face).
    """
    if not preds:
        return preds
    crops = [c for m in msgs for c in face_crops(m, opinion.crop_aspect, opinion.rule)]
    widths = [f["box"][2] - f["box"][0] for m in msgs for f in to_classify(m)]
    small = np.array([w < opinion.min_face_px for w in widths[:len(preds)]], bool)
    logits = np.full(len(preds), np.nan)
    asked = np.zeros(len(preds), bool)
    t0 = time.perf_counter()
    for i, crop in enumerate(crops[:len(preds)]):
        if small[i] or (budget is not None and not budget.allow()):
            continue
        c0 = time.process_time()
        logits[i] = opinion([crop])[0][0]
        asked[i] = True
        if budget is not None:
            budget.spend(time.process_time() - c0)
    dt = time.perf_counter() - t0
    out = [combine_gender(p, float(z), weight) for p, z in zip(preds, logits)]
    if on_opinion is not None:
        used = int(np.isfinite(logits).sum())
        n_small = int(small.sum())
        on_opinion(used, int(asked.sum()) - used, len(preds) - int(asked.sum()) - n_small, dt,
                   n_small)
    return out


def process_batch(msgs: list[wire.Message], model: Model, max_batch: int,
                  now_ns: Callable[[], int] = time.time_ns,
                  on_batch: Callable[[int, float], None] | None = None,
                  opinion: Opinion | None = None,
                  on_opinion: Callable[[int, int, int, float, int], None] | None = None,
                  budget: OpinionBudget | None = None) -> list[tuple[Any, list]]:
    """Classify every face of ``msgs`` together and build one ``result`` per message.

    Args:
        msgs: ``faces`` messages in arrival order (either form, see :func:`face_crops`).
        model: the age/gender model.
        max_batch: largest number of crops per model call.
        now_ns: wall clock (ns) used for ``t_classifier_ns``.
        on_batch: metrics callback, see :func:`classify`.
        opinion: a gender second opinion merged into each prediction
            (:func:`second_opinion`), or ``None``.
        on_opinion: metrics callback, see :func:`second_opinion`.
        budget: the opinion's CPU budget (:class:`OpinionBudget`; ``None``: no limit).

    The numbers of the model's ``meta["fusion"]`` (when it has one: ``rho``, ...; its
    descriptive entries stay in meta.json) go into every result header.

    Returns:
        ``[(msg, frames), ...]``: each input message with its encoded ``result`` frames, in
        the same order.
    """
    aspect = getattr(model, "crop_aspect", None)
    rule = getattr(model, "crop_rule", DEFAULT_RULE)
    crops = [c for m in msgs for c in face_crops(m, aspect, rule)]
    preds = classify(crops, model, max_batch, on_batch) if crops else []
    if opinion is not None:
        weight = opinion_weight(getattr(model, "meta", None), opinion.name)
        preds = second_opinion(msgs, preds, opinion, on_opinion, budget, weight)
    fusion = fusion_numbers(getattr(model, "meta", None))
    t = now_ns()
    out = []
    i = 0
    for m in msgs:
        n = len(to_classify(m))
        out.append((m, result_frames(m, preds[i:i + n], t, fusion)))
        i += n
    return out
