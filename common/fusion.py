"""Fusing one person's per-frame age and gender answers into one answer.

A track's classified faces are evidence about one person, weighted by face quality
(:mod:`common.quality`). With weights ``w_i`` (quality, at least :data:`MIN_WEIGHT`):

* **gender**: the weighted mean of the log-odds of female,
  ``L = sum(w_i logit(p_i)) / sum(w_i)``, read back as ``p = 1 / (1 + exp(-L))``. A mean,
  not a sum: frames of one face are not independent looks (the same face, light and
  camera), so a hundred frames must not make the answer a hundred times surer; the
  confidence stays that of a typical good frame, and a confident misreading is outvoted
  by the frames around it.
* **age**: the weighted mean of the per-frame ages (years).
* **age interval**: about the fused age, each side ``h = hbar * sqrt((1 - rho) / n_eff +
  rho)``, where ``hbar`` is the weighted mean of that side of the per-frame intervals
  (the model's calibrated central interval ``age_range``, as distances below and above
  the frame's age: one frame gives back its own interval),
  ``n_eff = (sum w_i)^2 / sum(w_i^2)`` is Kish's effective sample size of the weights
  (L. Kish, *Survey Sampling*, Wiley 1965) and ``rho`` is the correlation of one person's
  errors between frames. The factor is the standard deviation of the mean of ``n``
  equally correlated errors relative to one error (``Var(mean) = sigma^2 (rho +
  (1 - rho) / n)``; Kish's design effect for clusters, ``1 + (n - 1) rho``, divided by
  ``n``): with independent frames (``rho`` 0) the interval narrows as ``1/sqrt(n)``;
  with ``rho`` 1 it never narrows. The interval narrows with evidence without claiming
  more than correlated frames can give. ``rho`` comes from the model's ``meta.json``
  ``fusion.rho`` (carried in each ``result`` header) or :data:`DEFAULT_RHO` until it is
  calibrated on several views of the same people.
"""

from __future__ import annotations

import dataclasses
import math

#: Correlation of one person's errors between frames when the model gives none.
DEFAULT_RHO = 0.6
#: Smallest weight a classified face gets (a quality of 0 still counts a little).
MIN_WEIGHT = 1e-3
#: P(female) is clipped to [EPS, 1 - EPS] before its log-odds are taken.
EPS = 1e-4


def logit(p: float) -> float:
    """Log-odds of ``p`` (clipped to ``[EPS, 1 - EPS]``)."""
    p = min(max(float(p), EPS), 1.0 - EPS)
    return math.log(p / (1.0 - p))


@dataclasses.dataclass(frozen=True)
class Fused:
    """A person's fused answer.

    Attributes:
        age: years. age_range: ``[low, high]`` whole years (``None`` when no classified
            face had an interval). gender: ``"female"`` | ``"male"``.
        gender_confidence: 0.5..1. n: classified faces. n_eff: Kish's effective number.
    """

    age: float
    age_range: list[int] | None
    gender: str
    gender_confidence: float
    n: int
    n_eff: float

    def face_fields(self) -> dict:
        """The face map fields (``age``, ``age_range``, ``gender``, ``gender_confidence``)."""
        out = {"age": round(self.age, 2), "gender": self.gender,
               "gender_confidence": round(self.gender_confidence, 4)}
        if self.age_range is not None:
            out["age_range"] = list(self.age_range)
        return out


class Evidence:
    """The weighted sums of one person's classified faces (see the module docstring)."""

    def __init__(self):
        self.n = 0
        self.w = 0.0
        self.w2 = 0.0
        self.age = 0.0
        self.logodds = 0.0
        self.w_range = 0.0
        self.below = 0.0
        self.above = 0.0

    def add(self, quality: float, age: float, gender: str, gender_confidence: float,
            age_range=None) -> None:
        """Add one classified face.

        Args:
            quality: the face's quality, 0..1 (its weight).
            age: years. gender: ``"female"`` | ``"male"``. gender_confidence: 0..1.
            age_range: ``[low, high]`` years or ``None``.
        """
        w = max(float(quality), MIN_WEIGHT)
        p_female = gender_confidence if gender == "female" else 1.0 - gender_confidence
        self.n += 1
        self.w += w
        self.w2 += w * w
        self.age += w * float(age)
        self.logodds += w * logit(p_female)
        if age_range is not None:
            self.w_range += w
            self.below += w * max(float(age) - float(age_range[0]), 0.0)
            self.above += w * max(float(age_range[1]) - float(age), 0.0)

    def fused(self, rho: float = DEFAULT_RHO) -> Fused | None:
        """The fused answer (``None`` before any classified face).

        Args:
            rho: correlation of the person's errors between frames, 0..1.
        """
        if self.n == 0:
            return None
        age = self.age / self.w
        p = 1.0 / (1.0 + math.exp(-self.logodds / self.w))
        n_eff = self.w * self.w / self.w2
        rng = None
        if self.w_range > 0:
            rho = min(max(float(rho), 0.0), 1.0)
            shrink = math.sqrt((1.0 - rho) / n_eff + rho) / self.w_range
            # whole years outwards (1e-9: 28.4 + 2.6 must stay 31, not round up to 32)
            rng = [max(0, math.floor(age - self.below * shrink + 1e-9)),
                   math.ceil(age + self.above * shrink - 1e-9)]
        gender = "female" if p >= 0.5 else "male"
        return Fused(age, rng, gender, max(p, 1.0 - p), self.n, n_eff)
