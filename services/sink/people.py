"""People: each face track fused into one person, and one person event when it ends.

The detector gives every face a ``track`` (:mod:`services.detector.tracking`) and the
classifier classifies some of a track's faces. Here each ``(stream, track)`` is a
:class:`Person`: its classified faces are fused by quality (:mod:`common.fusion`), every
face of every frame shows the person's fused answer so far (the live answer does not
flicker), and when the person ends a **person event** is made (:meth:`People.event`):

* the detector ended the track (``ended_tracks`` in a result header): ``"track_ended"``;
* the stream ended (end of stream): ``"eos"``;
* no face of the person for ``timeout_s`` seconds of the stream's capture time while the
  stream goes on (a detector worker that vanished never ends its tracks): ``"timeout"``;
* the sink stops: ``"shutdown"``.

Tracks with fewer than ``min_frames`` frames end without an event (a detector flicker,
not a person), except the faces of still photos (``still`` frames: each face is a track
of one frame that ends with its photo, so each gives one event). A face of a person that already ended (a frame that came late through
another classifier worker) shows the person's final answer and does not open it again.

Person event (JSON-ready; people.jsonl, MQTT ``<prefix>/<stream>/person``)::

    {"stream": str, "track": int,
     "first_seen": {"seq": int, "t_media": float seconds or null, "t_wall": ISO 8601 UTC},
     "last_seen": {...the same...},
     "dwell_s": float (last - first: media time when both frames carry it, else capture time),
     "frames": int (frames with the person's face), "frames_classified": int,
     "age": float years or null, "age_range": [low, high] or null,
     "gender": "female" | "male" | null, "gender_confidence": 0.5..1 or null,
     "best_face": {"seq": int, "box": [x1, y1, x2, y2], "quality": 0..1},
     "ended": "track_ended" | "eos" | "timeout" | "shutdown",
     "thumbnail": file name in person_thumbnails_dir (only when that is set)}
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np

from common.fusion import DEFAULT_RHO, Evidence, Fused

log = logging.getLogger("sink")

#: Ended persons remembered per stream (their final answer for late frames).
KEEP_ENDED = 256
#: JPEG quality of person thumbnails.
THUMBNAIL_QUALITY = 85
#: Longest side of a person thumbnail (pixels).
THUMBNAIL_SIDE = 160
#: Age bands of ``agegender_people_total`` (years, lower bounds inclusive): the adult
#: brackets Google Analytics reports (18-24 ... 65+), with one band for minors.
AGE_BANDS = (("0-17", 0), ("18-24", 18), ("25-34", 25), ("35-44", 35), ("45-54", 45),
             ("55-64", 55), ("65+", 65))
#: Label values of ``age_band`` (``unknown``: never classified).
AGE_BAND_LABELS = tuple(b for b, _ in AGE_BANDS) + ("unknown",)
#: Label values of ``gender`` in person metrics.
GENDER_LABELS = ("female", "male", "unknown")


def age_band(age: float | None) -> str:
    """The :data:`AGE_BANDS` label of ``age`` (years); ``"unknown"`` for ``None``."""
    if age is None:
        return "unknown"
    label = AGE_BANDS[0][0]
    for name, low in AGE_BANDS:
        if age >= low:
            label = name
    return label


@dataclasses.dataclass
class Sighting:
    """When a person was seen: frame seq, capture and media time (seconds)."""

    seq: int
    t_capture: float
    t_media: float | None

    def json(self) -> dict:
        """``{"seq", "t_media", "t_wall"}`` (wall time as ISO 8601 UTC, ms)."""
        wall = datetime.datetime.fromtimestamp(self.t_capture, datetime.timezone.utc)
        return {"seq": self.seq,
                "t_media": None if self.t_media is None else round(self.t_media, 3),
                "t_wall": wall.isoformat(timespec="milliseconds").replace("+00:00", "Z")}


@dataclasses.dataclass
class Person:
    """One track's evidence and whereabouts."""

    stream: str
    track: int
    first: Sighting
    last: Sighting
    evidence: Evidence = dataclasses.field(default_factory=Evidence)
    frames: int = 0
    best_quality: float = -1.0
    best_box: list = dataclasses.field(default_factory=list)
    best_seq: int = 0
    thumbnail: np.ndarray | None = None
    fused: Fused | None = None
    #: Seen on a still photo (one frame by nature: ``min_frames`` does not apply).
    still: bool = False


class People:
    """Every stream's persons (see the module docstring).

    Args:
        min_frames: tracks with fewer frames make no person event.
        timeout_s: a person unseen for this long (capture time, seconds) ends.
        thumbnails_dir: write a JPEG of each person's best face here (``None``: off;
            faces are personal data).
        default_rho: correlation of errors between frames when a result carries no
            ``fusion`` map.
    """

    def __init__(self, min_frames: int = 3, timeout_s: float = 10.0,
                 thumbnails_dir: Path | None = None, default_rho: float = DEFAULT_RHO):
        self.min_frames = min_frames
        self.timeout_s = timeout_s
        self.thumbnails_dir = Path(thumbnails_dir) if thumbnails_dir else None
        self.default_rho = default_rho
        self.open: dict[str, dict[int, Person]] = {}
        self.ended: dict[str, OrderedDict[int, Fused | None]] = {}
        #: People counted (events made) per stream.
        self.counted: dict[str, int] = {}
        if self.thumbnails_dir is not None:
            self.thumbnails_dir.mkdir(parents=True, exist_ok=True)

    def streams(self) -> list[str]:
        """Streams seen so far."""
        return sorted(set(self.open) | set(self.counted))

    def in_view(self, stream: str) -> int:
        """Persons of ``stream`` open now (their track has not ended)."""
        return len(self.open.get(stream, {}))

    def observe(self, header: dict, image_of=None) -> tuple[list[dict], list[dict]]:
        """Take one ``result`` frame.

        Args:
            header: the decoded ``result`` header (``faces`` with ``track``, ``quality``
                and, where classified, the prediction; ``ended_tracks``; ``fusion``).
            image_of: ``() -> (H, W, 3) uint8`` BGR frame, called only when a thumbnail
                is to be cut (thumbnails on and a better face).

        Returns:
            ``(faces, events)``: the frame's faces with each person's fused answer so far
            (``age``, ``age_range``, ``gender``, ``gender_confidence``; absent before the
            person's first classified face), and the person events of persons that ended.
        """
        stream = header["stream"]
        rho = (header.get("fusion") or {}).get("rho", self.default_rho)
        seen = Sighting(int(header["seq"]), header["t_capture_ns"] / 1e9,
                        header["t_media_ns"] / 1e9 if "t_media_ns" in header else None)
        persons = self.open.setdefault(stream, {})
        ended = self.ended.setdefault(stream, OrderedDict())
        self.counted.setdefault(stream, 0)
        out = []
        for face in header.get("faces", []):
            track = face["track"]
            shown = {k: v for k, v in face.items()
                     if k not in ("age", "age_range", "gender", "gender_confidence")}
            if track in ended:
                fused = ended[track]
            else:
                person = persons.get(track)
                if person is None:
                    person = persons[track] = Person(stream, track, seen, seen,
                                                     still=bool(header.get("still")))
                fused = self._add(person, face, seen, rho, image_of)
            if fused is not None:
                shown.update(fused.face_fields())
            out.append(shown)
        events = []
        for track in header.get("ended_tracks", []):
            events += self._end(stream, track, "track_ended")
        for track in [t for t, p in persons.items()
                      if seen.t_capture - p.last.t_capture > self.timeout_s]:
            events += self._end(stream, track, "timeout")
        return out, events

    def _add(self, person: Person, face: dict, seen: Sighting, rho: float,
             image_of) -> Fused | None:
        if seen.seq >= person.last.seq or seen.t_capture >= person.last.t_capture:
            person.last = seen
        person.frames += 1
        quality = float(face.get("quality", 0.0))
        if quality > person.best_quality:
            person.best_quality, person.best_box, person.best_seq = \
                quality, list(face["box"]), seen.seq
            if self.thumbnails_dir is not None and image_of is not None:
                person.thumbnail = _thumbnail(image_of(), face["box"])
        if "age" in face:
            person.evidence.add(quality, face["age"], face["gender"],
                                face["gender_confidence"], face.get("age_range"))
            person.fused = person.evidence.fused(rho)
        return person.fused

    def _end(self, stream: str, track: int, why: str) -> list[dict]:
        person = self.open.get(stream, {}).pop(track, None)
        if person is None:
            return []
        ended = self.ended.setdefault(stream, OrderedDict())
        ended[track] = person.fused
        while len(ended) > KEEP_ENDED:
            ended.popitem(last=False)
        if person.frames < self.min_frames and not person.still:
            log.debug("stream %s track %d ended after %d frame(s): no person event",
                      stream, track, person.frames)
            return []
        self.counted[stream] = self.counted.get(stream, 0) + 1
        return [self.event(person, why)]

    def end_stream(self, stream: str, why: str = "eos") -> list[dict]:
        """End every open person of ``stream``; returns their events."""
        return [e for t in list(self.open.get(stream, {})) for e in self._end(stream, t, why)]

    def end_all(self, why: str = "shutdown") -> list[dict]:
        """End every open person (the sink stops); returns their events."""
        return [e for s in list(self.open) for e in self.end_stream(s, why)]

    def event(self, person: Person, why: str) -> dict:
        """The person event of ``person`` (module docstring); writes its thumbnail."""
        f = person.fused
        first, last = person.first, person.last
        if first.t_media is not None and last.t_media is not None:
            dwell = last.t_media - first.t_media
        else:
            dwell = last.t_capture - first.t_capture
        event = {
            "stream": person.stream, "track": person.track,
            "first_seen": first.json(), "last_seen": last.json(),
            "dwell_s": round(max(dwell, 0.0), 3), "frames": person.frames,
            "frames_classified": person.evidence.n,
            "age": None if f is None else round(f.age, 1),
            "age_range": None if f is None else f.age_range,
            "gender": None if f is None else f.gender,
            "gender_confidence": None if f is None else round(f.gender_confidence, 4),
            "best_face": {"seq": person.best_seq, "box": [int(v) for v in person.best_box],
                          "quality": round(person.best_quality, 4)},
            "ended": why}
        if self.thumbnails_dir is not None and person.thumbnail is not None:
            name = f"{person.stream}_{person.track}.jpg"
            if cv2.imwrite(str(self.thumbnails_dir / name), person.thumbnail,
                           [cv2.IMWRITE_JPEG_QUALITY, THUMBNAIL_QUALITY]):
                event["thumbnail"] = name
            else:
                log.warning("could not write the thumbnail %s", self.thumbnails_dir / name)
        return event


def _thumbnail(image: np.ndarray | None, box) -> np.ndarray | None:
    """A copy of the face ``box`` of ``image``, at most :data:`THUMBNAIL_SIDE` pixels."""
    if image is None:
        return None
    x1, y1, x2, y2 = (int(v) for v in box)
    crop = image[y1:y2, x1:x2]
    if crop.size == 0:
        return None
    scale = THUMBNAIL_SIDE / max(crop.shape[:2])
    if scale < 1:
        crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return crop.copy()
