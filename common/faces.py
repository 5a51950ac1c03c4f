"""The face record: one form for a classified face on the wire and in JSON output.

A face map (``result`` messages, :mod:`common.wire`) holds ``box`` ``[x1, y1, x2, y2]``
(int pixels, clipped, ``x2``/``y2`` exclusive), ``confidence`` (detector score, 0..1),
optionally ``keypoints`` (six ``[x, y]`` float pixels, BlazeFace), ``track`` (int),
``quality`` (0..1), ``classify`` (bool) and, once classified, ``age`` (years, 0..150), ``age_range`` (``[low, high]`` whole years, absent
when the model gives none), ``gender`` (``"female"`` | ``"male"``) and
``gender_confidence`` (0..1). :func:`classified` builds it from a detector face and a
model prediction; :func:`face_json` turns it into the JSON object that ``agegender
predict`` prints and the sink writes to events.jsonl.
"""

from __future__ import annotations

import math
from typing import Mapping, TypedDict

from common.wire_checks import GENDERS, MAX_AGE_YEARS

#: Keys of a face's JSON object, in order (``track`` follows when asked for).
FACE_KEYS = ("box", "confidence", "age", "age_range", "gender", "gender_confidence")


class Face(TypedDict, total=False):
    """A face map as it travels in ``faces`` and ``result`` messages (see the module
    docstring for units)."""

    box: list[int]
    confidence: float
    keypoints: list[list[float]]
    age: float
    age_range: list[int]
    gender: str
    gender_confidence: float
    track: int
    quality: float
    classify: bool


def _bounded(value, lo: float, hi: float) -> float:
    """``value`` as a float clipped to ``[lo, hi]``; NaN becomes ``lo``."""
    v = float(value)
    return lo if math.isnan(v) else min(max(v, lo), hi)


def classified(face: Mapping, prediction: Mapping) -> dict:
    """A detector face map merged with a model prediction, within the wire's bounds.

    Args:
        face: ``{"box", "confidence", ...}``; every key is kept.
        prediction: ``{"age", "gender", "gender_confidence", "age_range" (optional or
            None)}`` as :meth:`common.models.AgeGenderModel.predict` returns it.

    Returns:
        A new map: the face's keys plus ``age`` (clipped to 0..150, NaN -> 0),
        ``gender`` (anything but ``"female"`` reads ``"male"``), ``gender_confidence``
        (clipped to 0..1, NaN -> 0) and ``age_range`` (sorted ints) when the prediction
        has one, so a NaN from a model cannot make the sink reject the whole frame.
    """
    out = dict(face)
    out["age"] = _bounded(prediction["age"], 0.0, MAX_AGE_YEARS)
    out["gender"] = GENDERS[0] if prediction["gender"] == GENDERS[0] else GENDERS[1]
    out["gender_confidence"] = _bounded(prediction["gender_confidence"], 0.0, 1.0)
    rng = prediction.get("age_range")
    if rng is not None:
        lo, hi = sorted((int(rng[0]), int(rng[1])))
        out["age_range"] = [lo, hi]
    return out


def face_json(face: Mapping, track: bool = False) -> dict:
    """The JSON object of a face map: keys :data:`FACE_KEYS` in order.

    ``box`` as ints (rounded), ``confidence`` rounded to 4 decimals, ``age`` and
    ``gender_confidence`` as floats, ``age_range`` as ``[int, int]``; a value the face
    does not have is ``None`` (an unclassified face). With ``track``, ``"track"`` (int or
    ``None``) and ``"quality"`` (float 0..1 or ``None``) follow.
    """
    rng = face.get("age_range")
    age, gconf = face.get("age"), face.get("gender_confidence")
    out = {"box": [int(round(v)) for v in face["box"]],
           "confidence": round(float(face["confidence"]), 4),
           "age": None if age is None else float(age),
           "age_range": None if rng is None else [int(rng[0]), int(rng[1])],
           "gender": face.get("gender"),
           "gender_confidence": None if gconf is None else float(gconf)}
    if track:
        out["track"] = None if face.get("track") is None else int(face["track"])
        q = face.get("quality")
        out["quality"] = None if q is None else round(float(q), 4)
    return out
