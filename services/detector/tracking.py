"""Face tracks per stream and the classification schedule (the detector's tracker).

Every face the detector sends carries a ``track`` id, its ``quality``
(:mod:`common.quality`) and ``classify`` (whether the classifier should classify it now);
the header carries ``ended_tracks`` (:mod:`common.wire`). Tracking runs here, before
classification, so the classifier can work per person instead of per frame.

**Tracker**: `norfair <https://pypi.org/project/norfair-enough/>`_ (the maintained fork),
one :class:`norfair.Tracker` per stream, fed the stream's frames in seq order. A face is
its box as two points (top-left, bottom-right) with norfair's Kalman filter, matched by
norfair's ``"iou"`` distance (``1 - IoU`` of the detection and the track's predicted
box) up to ``max_distance`` (0.8: IoU at least 0.2). IoU fits faces: a face's box
changes little between frames (consecutive-frame IoU of the same face on the shared
clips: 5th percentile 0.70-0.84, median 0.94-0.98), unlike a centroid distance it
scales with the face, and the Kalman prediction carries a moving face across a missed
detection and past another face crossing it. A track survives ``memory_s`` (1 s: a few
frames only for a young track, since norfair's hit counter grows by one per matched
frame up to the limit) without a detection; ``period`` is the seq gap, so frames dropped
upstream count as missed. Tracks start at their first detection (norfair's
``initialization_delay`` 0): every face carries a track.

**Track ids** are ``base + n``: ``n`` counts the stream's tracks in this tracker
(norfair's id, from 1) and ``base`` is the wall clock in milliseconds when this process
began tracking the stream, so a restarted detector or a stream moved to another worker
never gives an id already used (while fewer than 1000 tracks start per second of a
stream).

**Schedule** (:class:`Schedule`): a new track is classified at once; after that a face is
classified when its quality beats the best quality classified so far on its track by
``margin``, or when ``every`` frames passed since the track's last classification
(default: about one second of the stream's frames). ``every`` 1 classifies every face on
every frame (the behaviour before tracking).
"""

from __future__ import annotations

import dataclasses
import math
import time

import norfair
import numpy as np

from common.quality import face_quality

#: Frames between periodic classifications when the stream's frame rate is unknown.
DEFAULT_EVERY = 12
#: Seconds a stream's tracker is kept without frames (then forgotten).
IDLE_FORGET_S = 300.0


@dataclasses.dataclass
class _TrackState:
    """Schedule state of one track."""

    best_quality: float = -1.0
    last_classified_seq: int = -1


@dataclasses.dataclass
class Schedule:
    """When a track's face is classified (module docstring).

    Attributes:
        every: frames between periodic classifications (0: about 1 s of the stream's
            frames, from its ``fps``; 1: every frame).
        margin: quality gain over the best classified face that counts as clearly better.
    """

    every: int = 0
    margin: float = 0.1

    def frames(self, fps: float | None) -> int:
        """The period in frames for a stream of ``fps`` frames/s."""
        if self.every:
            return self.every
        return max(1, round(fps)) if fps else DEFAULT_EVERY

    def decide(self, state: _TrackState, quality: float, seq: int, every: int) -> str | None:
        """Why this face is classified (``"new"``, ``"better"``, ``"periodic"``) or
        ``None``; updates ``state`` when it is."""
        if state.last_classified_seq < 0:
            reason = "new"
        elif quality >= state.best_quality + self.margin:
            reason = "better"
        elif seq - state.last_classified_seq >= every:
            reason = "periodic"
        else:
            return None
        state.best_quality = max(state.best_quality, quality)
        state.last_classified_seq = seq
        return reason


class StreamTracker:
    """One stream's tracker and schedule state.

    Args:
        fps: the stream's frame rate (frames/s) or ``None``.
        base: track ids are ``base + n`` (n from 1).
        schedule: the classification schedule.
        memory_s: seconds a track survives without a detection.
        max_distance: largest ``1 - IoU`` that continues a track.
    """

    def __init__(self, fps: float | None, base: int, schedule: Schedule,
                 memory_s: float = 1.0, max_distance: float = 0.8):
        self.base = base
        self.schedule = schedule
        self.every = schedule.frames(fps)
        hits = max(2, math.ceil((fps or DEFAULT_EVERY) * memory_s))
        self.tracker = norfair.Tracker(distance_function="iou",
                                       distance_threshold=max_distance,
                                       hit_counter_max=hits, initialization_delay=0)
        self.states: dict[int, _TrackState] = {}
        self.last_seq: int | None = None
        self.frame = 0
        self.active: set[int] = set()
        self.touched = time.monotonic()
        #: Ids given to faces of still frames (outside norfair): base + stills_given.
        self.stills_given = 0

    def update(self, seq: int, faces: list[dict], image: np.ndarray | None,
               quality_ref_px: float, still: bool = False
               ) -> tuple[list[int], list[str | None]]:
        """Track one frame's faces (in place: each gets ``track``, ``quality``,
        ``classify``).

        A still frame (a photo of an image folder, ``still``) is a scene of its own: the
        tracks open before it end, each of its faces gets a new track, is classified
        (``"new"``) and ends at this frame; the tracker is not involved (two photos that
        show faces at the same place are two people, not one). A stream's frames are all
        stills or none (one source per stream).

        Args:
            seq: the frame's seq (a gap counts as missed frames; a seq not above the
                last one, e.g. a restarted source, as the next frame).
            faces: the detector's faces (``box``, ``confidence``, ``keypoints``).
            image: the frame, ``(H, W, 3) uint8`` BGR (for sharpness), or ``None``.
            quality_ref_px: face side from which size scores 1 (:mod:`common.quality`).

        Returns:
            ``(ended_tracks, reasons)``: track ids that ended at this frame, and per face
            why it is classified (``None``: not classified).
        """
        period = 1 if self.last_seq is None or seq <= self.last_seq else seq - self.last_seq
        self.last_seq = seq
        self.frame += 1
        self.touched = time.monotonic()
        if still:  # a scene of its own: open tracks end, every face is a new track
            ended = sorted(self.active)
            self.active = set()
            self.states.clear()
            first = self.base + self.stills_given + 1
            self.stills_given += len(faces)
            ids = list(range(first, first + len(faces)))
        else:
            ids, ended = self._track(faces, period)
        reasons = []
        for face, track in zip(faces, ids):
            q = face_quality(image, face["box"], face["confidence"], face.get("keypoints"),
                             ref_px=quality_ref_px).value
            state = self.states.setdefault(track, _TrackState())
            reason = self.schedule.decide(state, q, seq, self.every)
            face.update(track=int(track), quality=round(q, 4), classify=reason is not None)
            reasons.append(reason)
        if still:  # ...that ends with its photo
            ended += ids
            self.states.clear()
        return ended, reasons

    def _track(self, faces: list[dict], period: int) -> tuple[list[int], list[int]]:
        """``(ids, ended)``: norfair's track id of each face, and the tracks that ended."""
        dets = [norfair.Detection(np.array([[f["box"][0], f["box"][1]],
                                            [f["box"][2], f["box"][3]]], np.float64),
                                  data=(self.frame, i)) for i, f in enumerate(faces)]
        active = self.tracker.update(dets, period=period)
        ids: list[int | None] = [None] * len(faces)
        for obj in self.tracker.tracked_objects:
            data = obj.last_detection.data
            if data is not None and data[0] == self.frame and obj.id is not None:
                ids[data[1]] = self.base + obj.id
        now = {self.base + o.id for o in active if o.id is not None} | \
            {i for i in ids if i is not None}
        ended = sorted(self.active - now)
        self.active = now
        for t in ended:
            self.states.pop(t, None)
        return ids, ended

    @property
    def ids_given(self) -> int:
        """How many track ids above ``base`` this tracker has handed out."""
        return self.tracker.total_object_count + self.stills_given


class Tracking:
    """The trackers of every stream one detector process sees.

    Args:
        schedule: the classification schedule.
        memory_s: seconds a track survives without a detection.
        max_distance: largest ``1 - IoU`` that continues a track.
        quality_ref_px: face side from which size scores 1.
        clock_ms: wall clock in ms (track id bases).
    """

    def __init__(self, schedule: Schedule | None = None, memory_s: float = 1.0,
                 max_distance: float = 0.8, quality_ref_px: float = 64.0,
                 clock_ms=lambda: time.time_ns() // 1_000_000):
        self.schedule = schedule or Schedule()
        self.memory_s = memory_s
        self.max_distance = max_distance
        self.quality_ref_px = quality_ref_px
        self.clock_ms = clock_ms
        self.streams: dict[str, StreamTracker] = {}
        self._floor: dict[str, int] = {}  # stream -> highest id given by a dropped tracker

    def _base(self, stream: str) -> int:
        """A new id base for ``stream``: the clock in ms, above any id this process gave
        the stream before."""
        return max(self.clock_ms(), self._floor.get(stream, 0))

    def update(self, stream: str, seq: int, faces: list[dict], image: np.ndarray | None,
               fps: float | None = None, still: bool = False
               ) -> tuple[list[int], list[str | None]]:
        """Track one frame of ``stream`` (see :meth:`StreamTracker.update`)."""
        st = self.streams.get(stream)
        if st is None:
            self._forget_idle()
            st = self.streams[stream] = StreamTracker(fps, self._base(stream), self.schedule,
                                                      self.memory_s, self.max_distance)
        return st.update(seq, faces, image, self.quality_ref_px, still)

    def end(self, stream: str) -> list[int]:
        """The stream ended: forget its tracker; returns its tracks still open."""
        st = self.streams.pop(stream, None)
        if st is None:
            return []
        self._drop(stream, st)
        return sorted(st.active)

    def _drop(self, stream: str, st: StreamTracker) -> None:
        self._floor[stream] = st.base + st.ids_given

    def _forget_idle(self) -> None:
        """Forget trackers of streams without frames for :data:`IDLE_FORGET_S` (streams
        that moved to another worker and never came back)."""
        now = time.monotonic()
        for name in [n for n, st in self.streams.items() if now - st.touched > IDLE_FORGET_S]:
            self._drop(name, self.streams.pop(name))
