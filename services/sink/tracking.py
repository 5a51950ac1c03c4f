"""Face tracks per stream and smoothing of age and gender over each track.

A per-frame classifier flickers: the same person can read male in one frame and female in
the next, and the age jumps by years. Following each face from frame to frame and
averaging its estimates over the last frames gives stable labels, as video analytics
systems do (for example Savant's age/gender sample smooths per track).

Association is greedy by intersection over union (IoU) of bounding boxes between a
stream's live tracks and the new frame's detections, highest IoU first, at least
``iou_min``. A detection left over starts a new track; a track unseen for ``max_gap_s``
seconds of capture time ends. Estimates are smoothed over the track's last ``window``
frames with the median: of the probability of ``female`` (``gender_confidence`` turned into
P(female)), of the age and of each bound of the age interval. The median, unlike the mean,
lets one confident misreading be outvoted by the following frames (the median of P(female)
is at least 0.5 exactly when at least half of the frames read female), and keeps
``low <= age <= high`` because it preserves order.
"""

from __future__ import annotations

import dataclasses
from collections import deque

import numpy as np

from common.geometry import iou


@dataclasses.dataclass
class Track:
    """One face followed over frames: its id, last box and recent estimates."""

    id: int
    box: list
    last_t: float
    p_female: deque
    age: deque
    lo: deque
    hi: deque


class FaceTracker:
    """Track ids and smoothed age/gender for the faces of ``result`` frames.

    Args:
        window: frames smoothed over per track (1: per-frame values, tracks still
            assigned).
        iou_min: least IoU for a detection to continue a track.
        max_gap_s: a track unseen for longer than this (capture time, seconds) ends.
        on_new_track: called with the stream name whenever a track starts (metrics).
        last_ids: highest track id already given out per stream (a restarted sink
            continues above them: one id never names two people in one output).
    """

    def __init__(self, window: int = 5, iou_min: float = 0.3, max_gap_s: float = 1.0,
                 on_new_track=None, last_ids: dict[str, int] | None = None):
        self.on_new_track = on_new_track
        self.window = window
        self.iou_min = iou_min
        self.max_gap_s = max_gap_s
        self._tracks: dict[str, list[Track]] = {}
        self._next_id: dict[str, int] = dict(last_ids or {})
        self._last_t: dict[str, float] = {}

    def update(self, stream: str, t_capture_s: float, faces: list[dict]) -> list[dict]:
        """Assign tracks to one frame's faces and smooth their estimates.

        Args:
            stream: stream name.
            t_capture_s: the frame's capture time (Unix seconds).
            faces: the ``result`` header's faces (``box``, ``age``, ``age_range``,
                ``gender``, ``gender_confidence``, ...), in any order.

        Returns:
            New face dicts, same order, with ``track`` (int, per stream, from 1; ``None``
            for a frame older than one already seen of its stream, which is passed on
            unsmoothed) and ``age``, ``age_range``, ``gender``, ``gender_confidence``
            smoothed (median) over the track's last ``window`` frames.
        """
        if t_capture_s < self._last_t.get(stream, float("-inf")):
            return [dict(f, track=None) for f in faces]
        self._last_t[stream] = t_capture_s
        tracks = [t for t in self._tracks.get(stream, [])
                  if t_capture_s - t.last_t <= self.max_gap_s]
        pairs = sorted(((iou(t.box, f["box"]), ti, fi) for ti, t in enumerate(tracks)
                        for fi, f in enumerate(faces)), reverse=True)
        match: dict[int, Track] = {}
        used: set[int] = set()
        for score, ti, fi in pairs:
            if score < self.iou_min:
                break
            if ti not in used and fi not in match:
                used.add(ti)
                match[fi] = tracks[ti]
        out = []
        for fi, face in enumerate(faces):
            track = match.get(fi)
            if track is None:
                track = self._new_track(stream, face)
                tracks.append(track)
            track.box, track.last_t = list(face["box"]), t_capture_s
            out.append(self._observe(track, face))
        self._tracks[stream] = tracks
        return out

    def end(self, stream: str) -> None:
        """Forget a stream's tracks (end of stream); its ids are not given out again."""
        for d in (self._tracks, self._last_t):
            d.pop(stream, None)

    def _new_track(self, stream: str, face: dict) -> Track:
        self._next_id[stream] = self._next_id.get(stream, 0) + 1
        if self.on_new_track is not None:
            self.on_new_track(stream)
        n = self.window
        return Track(self._next_id[stream], list(face["box"]), 0.0, deque(maxlen=n),
                     deque(maxlen=n), deque(maxlen=n), deque(maxlen=n))

    @staticmethod
    def _observe(track: Track, face: dict) -> dict:
        """Add one frame's estimates to ``track``; the face with smoothed values."""
        out = dict(face, track=track.id)
        gender, conf = face.get("gender"), face.get("gender_confidence")
        if gender in ("female", "male") and conf is not None:
            track.p_female.append(conf if gender == "female" else 1.0 - conf)
            p = float(np.median(track.p_female))
            out["gender"] = "female" if p >= 0.5 else "male"
            out["gender_confidence"] = round(max(p, 1.0 - p), 4)
        if face.get("age") is not None:
            track.age.append(float(face["age"]))
            out["age"] = round(float(np.median(track.age)), 2)
        rng = face.get("age_range")
        if rng is not None:
            track.lo.append(rng[0])
            track.hi.append(rng[1])
            out["age_range"] = [int(np.floor(np.median(track.lo))),
                                int(np.ceil(np.median(track.hi)))]
        return out
