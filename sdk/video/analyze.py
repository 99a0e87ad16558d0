"""Faces in a video, tracked, one identity per person: the loop that ties the parts together.

Per frame (detection every ``every``-th frame): the recogniser's detector finds the faces,
:class:`~npcface.video.track.FaceTracker` (ByteTrack) gives them track ids, each tracked
face is aligned once at the recogniser's input size and its
:class:`~npcface.results.FaceQuality` measured; a face that enters its track's best faces
(:class:`~npcface.video.template.TrackFaces`) is embedded (flip fusion as the recogniser's
preset says), and a track whose template changed is identified against the gallery again
(the recogniser's one identify contract: ``threshold``, or the one calibrated for ``far``,
or the calibrated default). Events say when a track starts, is identified and ends.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..align import align_faces
from ..errors import InvalidArgumentError
from ..eval.tracking import iou_matrix
from ..quality import assess
from ..results import Face
from .events import TrackEnded, TrackEvent, TrackIdentified, TrackStarted
from .source import Frame, VideoSource
from .template import FaceSample, TrackFaces
from .track import FaceTracker

log = logging.getLogger(__name__)

DEFAULT_FPS = 30.0
"""Frame rate assumed for a source that declares none."""


@dataclass(frozen=True)
class TrackedFace:
    """A face in one frame and the track it belongs to.

    Attributes:
        track_id: its track.
        face: the face (box and landmarks in frame pixels) with its quality.
        identity: the track's identity so far (None: unknown or no gallery).
        similarity: similarity of that decision (None before one).
        detected: True if found in this frame; False when carried from the last frame that
            ran detection (``every`` > 1).
    """

    track_id: int
    face: Face
    identity: str | None
    similarity: float | None
    detected: bool = True


@dataclass(frozen=True)
class FrameResult:
    """What one frame gave.

    Attributes:
        frame: the frame (None for the last result of a run, which only carries the
            ``ended`` events of the tracks still open when the source ended).
        faces: the tracked faces in it.
        events: events this frame caused, in order.
        detected: detection ran on this frame.
    """

    frame: Frame | None
    faces: tuple[TrackedFace, ...]
    events: tuple[TrackEvent, ...]
    detected: bool


@dataclass(frozen=True)
class VideoSummary:
    """Totals of a run.

    Attributes:
        frames: frames processed.
        detected_frames: frames detection ran on.
        dropped: frames a live source dropped because processing was behind.
        tracks: tracks started.
        identified: tracks that ended with an identity.
        video_seconds: seconds of video covered (first to last frame, plus one frame).
        elapsed: wall seconds the run took.
    """

    frames: int
    detected_frames: int
    dropped: int
    tracks: int
    identified: int
    video_seconds: float
    elapsed: float

    @property
    def speed(self) -> float:
        """Video seconds processed per wall second (``x real time``; > 1 is faster)."""
        return self.video_seconds / self.elapsed if self.elapsed > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "detected_frames": self.detected_frames,
            "dropped": self.dropped,
            "tracks": self.tracks,
            "identified": self.identified,
            "video_seconds": round(self.video_seconds, 3),
            "elapsed": round(self.elapsed, 3),
            "speed": round(self.speed, 3),
        }


@dataclass
class _Track:
    track_id: int
    start: float
    first_frame: int
    last: float
    last_frame: int
    wall: float
    faces: TrackFaces
    detections: int = 0
    identity: str | None = None
    similarity: float | None = None
    last_face: TrackedFace | None = None
    tentative: bool = False
    first_box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    first_wall: float = 0.0
    last_box: tuple[float, float, float, float] | None = None
    crowded: TrackFaces | None = None
    """Best crowded faces, kept while the track has no other: they never make its
    template or identify it, but let a track of only crowded faces be relinked."""
    suspect: bool = False
    """Its last checked face was crowded and did not match its template, with no
    evidence of whom it is: its faces are checked, and not reported, until one matches
    or evidence comes."""

    def wants(self, quality: float, crowded: bool) -> bool:
        """Is a face of this quality worth embedding for the track's templates?"""
        if self.tentative:  # it may relink the track at once
            return True
        if not crowded:
            return self.faces.wants(quality)
        return not self.faces.samples and (self.crowded is None or self.crowded.wants(quality))

    @property
    def appearance(self) -> np.ndarray | None:
        """The template, or while there is none, the template of its crowded faces."""
        if self.faces.template is not None:
            return self.faces.template
        return self.crowded.template if self.crowded is not None else None


class VideoAnalyzer:
    """Track the faces of a video and identify each track against a gallery.

    Args:
        recognizer: the :class:`~npcface.FaceRecognizer` whose detector, alignment and
            embeddings are used (its preset decides flip fusion).
        gallery: an open :class:`~npcface.Gallery` of the same model, or None (tracks
            only; templates are still made, for :func:`npcface.video.find.find_person`).
        every: run detection on every ``every``-th frame (1: all); faces of the frames
            between keep their last place.
        threshold, far: the identify decision, as :meth:`FaceRecognizer.identify` (never
            both; default: the calibrated default threshold).
        keep: best faces kept per track for its template.
        margin: quality gain by which a new face must beat the worst kept one.
        lost_after: seconds a track survives without detection before it ends.
        embed: embed tracked faces at all (False: tracking only, for speed runs).
        relink_far: a face the tracker starts a new track for continues a track lost in
            the last ``lost_after`` seconds, or resumes one that ended in the last
            ``relink_after`` seconds, when its embedding matches that track's template at
            the threshold calibrated for this false-accept rate, or (with a gallery) when
            it is identified as the same gallery identity as that track (the tracker
            alone loses a face occluded longer than its motion model holds, or not
            detected for a while, and a turned face can match the gallery but not a
            template of other poses); None: never.
        relink_gallery_far: the gallery's word alone does not relink: the face must also
            match the track's template at the (looser) threshold calibrated for this FAR
            (a turned face can be identified as the wrong person; appearance and gallery
            must agree); None: the gallery alone.
        relink_after: seconds after its ``ended`` event a track can still be resumed
            (a ``started`` event with ``resumed`` and the same track id follows).
        relink_wait: a new face that does not match at once while a track is lost or
            recently ended stays tentative (not reported, no event) for up to this many
            seconds, while its own template grows and is compared again: the first face
            of a reappearing person is often turned or half hidden. A new track that
            waited gets its ``started`` event (with its first frame's time) when it is
            confirmed; 0: never wait.
        detect_side: frames whose longer side exceeds this are downscaled for detection
            only (faces are aligned and embedded from the full frame); None: the
            detector's own limit. Video faces are rarely small, and detection is most of
            the cost (``bench/video.py``).
        crowd_margin: a face whose box, grown by this share of its width and height on
            every side, meets another face's grown box is *crowded* (where people cross,
            the one behind is partly hidden): it never enters a track's template, the
            gallery's word on it is no evidence that a track holds someone else, and a
            new track of only crowded faces is not reported until it has another face or
            ``crowded_wait`` seconds have passed (see ``docs/video.md``); < 0: off.
        jump_iou: a face whose box overlaps its track's last box at a lower IoU is
            checked by appearance in that frame (the tracker handed the track to a face
            that appeared where its own vanished).
        crowded_wait: seconds after which a new track of only crowded faces is reported
            all the same (identified from them at the FAR 1e-4 threshold), once no lost
            or ended track could still be theirs.

    Raises:
        InvalidArgumentError: a bad number, or both ``threshold`` and ``far``.
        GalleryError: the gallery belongs to another model.
    """

    def __init__(
        self,
        recognizer: Any,
        gallery: Any = None,
        *,
        every: int = 1,
        threshold: float | None = None,
        far: float | None = None,
        keep: int = 5,
        margin: float = 0.05,
        lost_after: float = 1.0,
        embed: bool = True,
        relink_far: float | None = 1e-4,
        relink_gallery_far: float | None = 1e-2,
        relink_after: float = 10.0,
        relink_wait: float = 0.5,
        detect_side: int | None = 640,
        crowd_margin: float = 0.25,
        jump_iou: float = 0.6,
        crowded_wait: float = 1.0,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise InvalidArgumentError(f"every must be an int >= 1, got {every!r}", input="every")
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise InvalidArgumentError(f"keep must be an int >= 1, got {keep!r}", input="keep")
        if lost_after <= 0:
            raise InvalidArgumentError(f"lost_after must be > 0 s, got {lost_after!r}")
        self.rec = recognizer
        self.detect_side = detect_side
        self.gallery = gallery
        self.every = every
        self.keep = keep
        self.margin = float(margin)
        self.lost_after = float(lost_after)
        self.embed = bool(embed) or gallery is not None
        self.threshold: float | None = None
        if gallery is not None:
            self.threshold = recognizer.decision_threshold(threshold, far)
            gallery.check_model(recognizer.info.name, recognizer.info.embedding_size)
        elif threshold is not None or far is not None:
            self.threshold = recognizer.decision_threshold(threshold, far)
        self._thresholds = _far_table(recognizer) if gallery is not None else []
        self.relink_threshold: float | None = None
        if self.embed and relink_far is not None:
            self.relink_threshold = recognizer.default_threshold(far=relink_far)
        self.relink_floor = -1.0
        """Template similarity a gallery-backed relink needs at least."""
        if self.relink_threshold is not None and relink_gallery_far is not None:
            self.relink_floor = recognizer.default_threshold(far=relink_gallery_far)
        self.relink_after = float(relink_after)
        self.crowd_margin = float(crowd_margin)
        self.jump_iou = float(jump_iou)
        self.crowded_wait = float(crowded_wait)
        self.relink_wait = float(relink_wait)
        self.relinked = 0
        """New tracker ids that were continuations of lost or ended tracks."""
        self._alias: dict[int, int] = {}  # the tracker's ids -> ours
        self._next_id = itertools.count(1)
        self.split_below = recognizer.default_threshold(far=1e-2) if self.embed else None
        """A followed face whose embedding matches its track's template below this (the
        threshold at FAR 1e-2) is not that track's person: the tracker swapped faces."""
        self.splits = 0
        """Faces taken from a track because they did not match its template."""
        self._prev_detect_time = -1.0
        self._ended: dict[int, _Track] = {}  # ended tracks that may still be resumed
        self._tracker: FaceTracker | None = None
        self._tracks: dict[int, _Track] = {}
        self._started = 0
        self._identified: set[int] = set()
        self._frames = 0
        self._detected = 0
        self._first_time: float | None = None
        self._last_time = 0.0
        self._frame_step = 1.0 / DEFAULT_FPS
        self._t0 = time.perf_counter()
        self._elapsed = 0.0
        self._dropped = 0
        self.timings: dict[str, float] = {}
        """Seconds spent per stage (detect, track, align, quality, embed, identify)."""

    # ------------------------------------------------------------------ the loop
    def run(
        self, source: VideoSource, stop: threading.Event | None = None
    ) -> Iterator[FrameResult]:
        """Process every frame of ``source`` (until it ends or ``stop`` is set), then end
        the tracks still open.

        Yields:
            One :class:`FrameResult` per frame, and a last one (``frame`` None) with the
            ``ended`` events of the tracks open at the end.

        Raises:
            VideoError: the source failed (a stream lost, a corrupt file).
        """
        fps = source.fps or DEFAULT_FPS
        self.start(fps)
        try:
            for frame in source:
                self._dropped = source.dropped
                yield self.process(frame)
                if stop is not None and stop.is_set():
                    break
        finally:
            self._dropped = source.dropped
        yield self.finish()

    def start(self, fps: float) -> None:
        """Begin a run at ``fps`` frames per second (done by :meth:`run`)."""
        self._frame_step = 1.0 / fps
        self._tracker = FaceTracker(fps / self.every, lost_after=self.lost_after)
        self._t0 = time.perf_counter()

    def process(self, frame: Frame) -> FrameResult:
        """One frame: detect (on every ``every``-th), track, embed, identify."""
        if self._tracker is None:
            self.start(DEFAULT_FPS)
        assert self._tracker is not None
        self._frames += 1
        if self._first_time is None:
            self._first_time = frame.time
        self._last_time = frame.time
        if (self._frames - 1) % self.every != 0:
            carried = tuple(
                TrackedFace(t.track_id, t.last_face.face, t.identity, t.similarity, False)
                for t in self._tracks.values()
                if t.last_face is not None and t.last == self._last_detect_time
            )
            self._elapsed = time.perf_counter() - self._t0
            return FrameResult(frame, carried, (), False)
        self._detected += 1
        self._prev_detect_time = self._last_detect_time
        self._last_detect_time = frame.time
        events: list[TrackEvent] = []
        t0 = time.perf_counter()
        faces = self._detect(frame.image)
        t1 = time.perf_counter()
        tracked = self._tracker.update(faces)
        t2 = time.perf_counter()
        self._add("detect", t1 - t0)
        self._add("track", t2 - t1)
        out: list[TrackedFace] = []
        if tracked:
            out = self._follow(frame, tracked, events)
        events.extend(self._end_lost(frame.time))
        self._elapsed = time.perf_counter() - self._t0
        return FrameResult(frame, tuple(out), tuple(events), True)

    _last_detect_time = -1.0

    def _detect(self, image: np.ndarray) -> list[Face]:
        side = max(image.shape[:2])
        if not self.detect_side or side <= self.detect_side:
            return self.rec.detector.detect(image)
        import cv2

        scale = self.detect_side / side
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        return [
            Face(f.box / scale, f.landmarks / scale, f.score)
            for f in self.rec.detector.detect(small)
        ]

    def _follow(
        self, frame: Frame, tracked: list[tuple[int, Face]], events: list[TrackEvent]
    ) -> list[TrackedFace]:
        t0 = time.perf_counter()
        size = self.rec.input_size if self.embed else 112
        crops = align_faces(frame.image, np.stack([f.landmarks for _, f in tracked]), size)
        t1 = time.perf_counter()
        faces = [
            Face(f.box, f.landmarks, f.score, assess(f, crop))
            for (_, f), crop in zip(tracked, crops, strict=True)
        ]
        self._add("align", t1 - t0)
        self._add("quality", time.perf_counter() - t1)
        tids = [tid for tid, _ in tracked]
        known: list[int | None] = [self._alias.get(tid) for tid in tids]
        crowded = _crowded(faces, self.crowd_margin)
        checks = self._checks(known, faces, crowded)
        # faces worth embedding: every face of a new track, faces that enter their track's
        # best (a crowded face never does), and faces whose track must be checked
        todo = [
            i
            for i, tid in enumerate(known)
            if self.embed
            and (tid is None or i in checks or self._tracks[tid].wants(_q(faces[i]), i in crowded))
        ]
        embs: dict[int, np.ndarray] = {}
        if todo:
            t2 = time.perf_counter()
            out = self.rec.embed_crops(np.stack([crops[i] for i in todo]))
            self._add("embed", time.perf_counter() - t2)
            embs = dict(zip(todo, out, strict=True))
        withheld = self._split(frame, known, tids, checks, embs, crowded)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("frame %d faces: %s", frame.index, self._describe(known, tids, faces, embs))
        ids: list[int] = [0] * len(tids)
        new = [i for i, tid in enumerate(known) if tid is None]
        for i, tid in enumerate(known):
            if tid is not None:
                ids[i] = tid
                track = self._tracks[tid]
                track.last, track.last_frame, track.wall = frame.time, frame.index, frame.wall
                track.detections += 1
                track.last_box = _box(faces[i])
        for i in new:
            ids[i] = self._start_or_relink(
                frame, tids[i], faces[i], embs.get(i), events, i in crowded
            )
            self._tracks[ids[i]].last_box = _box(faces[i])
        changed: dict[int, _Track] = {}
        for i in todo:
            track = self._tracks[ids[i]]
            if i in crowded:  # partly hidden, perhaps: no evidence of who it is
                if not track.faces.samples:
                    track.crowded = track.crowded or TrackFaces(self.keep, self.margin)
                    if track.crowded.add(
                        FaceSample(_q(faces[i]), frame.time, frame.index, crops[i], embs[i])
                    ):
                        changed[track.track_id] = track
                continue
            sample = FaceSample(_q(faces[i]), frame.time, frame.index, crops[i], embs[i])
            if track.faces.add(sample):
                changed[track.track_id] = track
        for i, tid in enumerate(ids):
            track = self._tracks[tid]
            if track.tentative and i not in new:
                ids[i] = self._settle(frame, track, faces[i], events, changed)
        changed = {k: t for k, t in changed.items() if not t.tentative and k in self._tracks}
        if self.gallery is not None and changed:
            self._identify(frame, list(changed.values()), events)
        out_faces = []
        for i, (tid, face) in enumerate(zip(ids, faces, strict=True)):
            track = self._tracks[tid]
            if track.tentative or i in withheld:
                continue
            tf = TrackedFace(tid, face, track.identity, track.similarity, True)
            track.last_face = tf
            out_faces.append(tf)
        return out_faces

    def _describe(self, known, tids, faces, embs) -> str:
        """tracker id -> track (quality, detector score, similarity to the template) of
        each face, for the debug log."""
        out = []
        for i, face in enumerate(faces):
            track = self._tracks.get(known[i]) if known[i] is not None else None
            sim = ""
            if i in embs and track is not None and track.faces.template is not None:
                sim = f" sim {float(track.faces.template @ embs[i]):.2f}"
            out.append(f"{tids[i]}->{known[i]} (q {_q(face):.2f} s {face.score:.2f}{sim})")
        return ", ".join(out)

    def _checks(self, known: list[int | None], faces: list[Face], crowded: set[int]) -> set[int]:
        """Faces whose track must be confirmed by appearance: the face's box jumped from
        the track's last box (IoU below :attr:`jump_iou`: the tracker moved the track to
        a face that appeared where its own face vanished, behind someone or out of the
        picture), the tracker found the track again after missing it (a lost track's
        predicted box lands on another face), every 10th detection, and every face of a
        track that two faces claim in one frame."""
        if self.split_below is None:
            return set()
        out = set()
        seen: dict[int, list[int]] = {}
        for i, tid in enumerate(known):
            if tid is None:
                continue
            seen.setdefault(tid, []).append(i)
            t = self._tracks[tid]
            if t.tentative or not t.faces.samples:
                continue
            if t.suspect:
                out.add(i)
                continue
            jumped = (
                t.last_box is not None
                and float(iou_matrix(t.last_box, _box(faces[i]))[0, 0]) < self.jump_iou
            )
            if jumped or (
                len(t.faces.samples) >= 2
                and (t.last < self._prev_detect_time or t.detections % 10 == 9)
            ):
                out.add(i)
        for group in seen.values():
            if len(group) > 1:
                out.update(group)
        return out

    def _split(
        self,
        frame: Frame,
        known: list[int | None],
        tids: list[int],
        checks: set[int],
        embs: dict[int, np.ndarray],
        crowded: set[int],
    ) -> set[int]:
        """Checked faces that do not match their track's template (below
        :attr:`split_below`) and are someone else (another lost or ended track's template
        matches at :attr:`relink_threshold`, or, for a face that is not crowded, the
        gallery names another identity than the track's) leave it: their tracker id starts
        (or relinks) a track of its own. A turned face of the same person can fall below
        the threshold too: without that evidence it stays. A partly hidden face can be
        named as anyone by the gallery (once at the decision threshold, on the 24-video
        set): a crowded face needs another track's template; without it, it stays but
        is withheld (returned: not reported) and its track is checked at every detection
        until a face matches or leaves (:attr:`_Track.suspect`). Of several faces claiming
        one track, all but the most similar leave."""
        withheld: set[int] = set()
        if not checks:
            return withheld
        sims = {}
        for i in checks:
            template = self._tracks[known[i]].faces.template  # type: ignore[index]
            sims[i] = float(template @ embs[i]) if template is not None else 1.0
        best: dict[int, int] = {}
        for i in sorted(checks):
            tid = known[i]
            assert tid is not None
            if tid not in best or sims[i] > sims[best[tid]]:
                best[tid] = i
        for i in checks:
            assert self.split_below is not None
            own = self._tracks[known[i]]  # type: ignore[index]
            if best[own.track_id] == i and sims[i] >= self.split_below:
                own.suspect = False
                continue
            if best[own.track_id] == i and not self._someone_else(
                frame, own, embs[i], known, i not in crowded
            ):
                own.suspect = i in crowded
                if own.suspect:
                    withheld.add(i)
                continue
            log.debug(
                "frame %d: tracker id %d left track %s (similarity %.3f)",
                frame.index,
                tids[i],
                known[i],
                sims[i],
            )
            self._alias.pop(tids[i], None)
            known[i] = None
            self.splits += 1
            own.suspect = False
        return withheld

    def _someone_else(
        self,
        frame: Frame,
        own: _Track,
        emb: np.ndarray,
        known: list[int | None],
        gallery: bool = True,
    ) -> bool:
        """``emb`` matches another lost or ended track, or (``gallery``) the gallery names
        someone other than ``own``'s identity."""
        claimed = set(known)
        others = [t for t in self._pool(frame) if t.track_id not in claimed]
        if others and self.relink_threshold is not None:
            best = float(np.max(np.stack([t.appearance for t in others]) @ emb))
            if best >= self.relink_threshold:
                return True
        if self.gallery is None or own.identity is None or not gallery:
            return False
        t1 = time.perf_counter()
        found = self.gallery.search(emb[None], k=1)[0]
        self._add("identify", time.perf_counter() - t1)
        assert self.threshold is not None
        return (
            bool(found)
            and found[0].similarity >= self.threshold
            and (found[0].identity != own.identity)
        )

    def _start_or_relink(
        self,
        frame: Frame,
        tid: int,
        face: Face,
        emb: np.ndarray | None,
        events: list[TrackEvent],
        crowded: bool = False,
    ) -> int:
        """A face the tracker gave a new id: the continuation of a track lost in the last
        ``lost_after`` seconds or ended in the last ``relink_after`` seconds, when it
        matches that track (see ``relink_far`` in the class docstring); else a new track,
        tentative while such a track could still be matched, or while it has no face that
        is not ``crowded`` (its first usable face may still match a track lost later)."""
        box = _box(face)
        old = self._relink_candidate(frame, emb)
        log.debug(
            "frame %d: tracker id %d new, relinks to %s", frame.index, tid, old and old.track_id
        )
        if old is not None:
            self._alias[tid] = old.track_id
            return self._continue(old, frame, box, events).track_id
        self._alias[tid] = tid = next(self._next_id)
        track = _Track(
            tid,
            frame.time,
            frame.index,
            frame.time,
            frame.index,
            frame.wall,
            TrackFaces(self.keep, self.margin),
            detections=1,
            first_box=box,
            first_wall=frame.wall,
        )
        self._tracks[tid] = track
        if emb is not None and self.relink_wait > 0 and (crowded or self._pool(frame)):
            track.tentative = True
            log.debug("frame %d: track %d tentative", frame.index, tid)
        else:
            self._confirm(track, events)
        return tid

    def _confirm(self, track: _Track, events: list[TrackEvent]) -> None:
        track.tentative = False
        self._started += 1
        events.append(
            TrackStarted(
                track.track_id, track.start, track.first_frame, track.first_wall, track.first_box
            )
        )

    def _continue(
        self,
        old: _Track,
        frame: Frame,
        box: tuple[float, float, float, float],
        events: list[TrackEvent],
    ) -> _Track:
        """``old`` (lost or ended) seen again in ``frame``."""
        self.relinked += 1
        if old.track_id in self._tracks:  # lost, not ended: it goes on
            old.last, old.last_frame, old.wall = frame.time, frame.index, frame.wall
            old.detections += 1
            return old
        del self._ended[old.track_id]  # ended: it starts again under its id
        track = _Track(
            old.track_id,
            frame.time,
            frame.index,
            frame.time,
            frame.index,
            frame.wall,
            old.faces,
            detections=1,
            identity=old.identity,
            similarity=old.similarity,
        )
        self._tracks[track.track_id] = track
        track.first_box = box
        events.append(TrackStarted(track.track_id, frame.time, frame.index, frame.wall, box, True))
        return track

    def _settle(
        self,
        frame: Frame,
        track: _Track,
        face: Face,
        events: list[TrackEvent],
        changed: dict[int, _Track],
    ) -> int:
        """A tentative track seen again: merged into the lost or ended track its template
        (or that of its crowded faces) now matches, confirmed once ``relink_wait`` has
        passed and it has a template (a face that is not crowded), or once
        ``crowded_wait`` has passed with crowded faces only (someone who walks beside
        another the whole time), or left waiting."""
        old = self._relink_candidate(frame, track.appearance, exclude=track)
        log.debug(
            "frame %d: tentative %d matches %s", frame.index, track.track_id, old and old.track_id
        )
        if old is not None:
            merged = self._continue(old, frame, _box(face), events)
            for sample in track.faces.samples:
                if merged.faces.add(sample):
                    changed[merged.track_id] = merged
            if track.crowded is not None and not merged.faces.samples:
                merged.crowded = merged.crowded or TrackFaces(self.keep, self.margin)
                for sample in track.crowded.samples:
                    merged.crowded.add(sample)
            merged.detections += track.detections - 1
            del self._tracks[track.track_id]
            for k in [k for k, v in self._alias.items() if v == track.track_id]:
                self._alias[k] = merged.track_id
            return merged.track_id
        waited = frame.time - track.start
        if (
            track.faces.template is not None
            and (waited >= self.relink_wait or not self._pool(frame))
        ) or (
            track.appearance is not None
            and waited >= self.crowded_wait
            and not self._pool(frame)  # a lost track may yet be theirs (video 18, fast)
        ):
            self._confirm(track, events)
            changed[track.track_id] = track
        return track.track_id

    def _pool(self, frame: Frame, exclude: _Track | None = None) -> list[_Track]:
        """Tracks a new face may continue: lost (open, not seen in this frame) or ended in
        the last ``relink_after`` seconds, with a template, not tentative."""
        if self.relink_threshold is None:
            return []
        for tid in [k for k, t in self._ended.items() if frame.time - t.last > self.relink_after]:
            del self._ended[tid]
        return [
            t
            for t in (*self._tracks.values(), *self._ended.values())
            if t.last < frame.time
            and t.appearance is not None
            and not t.tentative
            and t is not exclude
        ]

    def _relink_candidate(
        self, frame: Frame, emb: np.ndarray | None, exclude: _Track | None = None
    ) -> _Track | None:
        """The track of :meth:`_pool` that a face (or a tentative track's template) with
        embedding ``emb`` continues: its template matches at :attr:`relink_threshold`, or
        the gallery identifies ``emb`` as that track's identity and the template matches
        at :attr:`relink_floor`; the most similar."""
        if emb is None:
            return None
        pool = self._pool(frame, exclude)
        if not pool:
            return None
        assert self.relink_threshold is not None
        sims = np.stack([t.appearance for t in pool]) @ emb
        best = int(np.argmax(sims))
        if sims[best] >= self.relink_threshold:
            return pool[best]
        identity = None  # else the gallery may know the face as a pool track's identity
        if self.gallery is not None and any(t.identity is not None for t in pool):
            t1 = time.perf_counter()
            found = self.gallery.search(emb[None], k=1)[0]
            self._add("identify", time.perf_counter() - t1)
            assert self.threshold is not None
            if found and found[0].similarity >= self.threshold:
                identity = found[0].identity
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "relink? %s template sims %s, gallery %s",
                frame.index,
                {t.track_id: round(float(x), 3) for t, x in zip(pool, sims, strict=True)},
                identity,
            )
        if identity is None:
            return None
        same = [
            k for k, t in enumerate(pool) if t.identity == identity and sims[k] >= self.relink_floor
        ]
        return pool[max(same, key=lambda k: sims[k])] if same else None

    def _identify(self, frame: Frame, tracks: list[_Track], events: list[TrackEvent]) -> None:
        t1 = time.perf_counter()
        templates = np.stack([t.appearance for t in tracks])
        results = self.gallery.search(templates, k=1)
        self._add("identify", time.perf_counter() - t1)
        assert self.threshold is not None
        for track, matches in zip(tracks, results, strict=True):
            threshold = self.threshold
            if track.faces.template is None:  # only crowded faces: a stricter decision
                threshold = max(threshold, self.relink_threshold or threshold)
            best = matches[0] if matches else None
            sim = best.similarity if best is not None else None
            identity = best.identity if best is not None and sim >= threshold else None
            previous = track.identity
            track.similarity = sim
            if identity is not None and identity != previous:
                track.identity = identity
                events.append(
                    TrackIdentified(
                        track.track_id,
                        frame.time,
                        frame.index,
                        frame.wall,
                        identity,
                        float(sim),
                        threshold,
                        self._far_of(float(sim)),
                        len(track.faces.samples),
                        previous,
                    )
                )
            elif identity is None and previous is not None:
                track.identity = None  # its better faces no longer match anyone

    def _end_lost(self, now: float) -> list[TrackEvent]:
        gone = [t for t in self._tracks.values() if now - t.last > self.lost_after]
        return [e for t in gone if (e := self._end(t)) is not None]

    def _end(self, track: _Track) -> TrackEnded | None:
        """End ``track`` (None for a tentative one: it was never reported)."""
        del self._tracks[track.track_id]
        for k in [k for k, v in self._alias.items() if v == track.track_id]:
            del self._alias[k]
        if track.tentative:
            return None
        if self.relink_threshold is not None and track.appearance is not None:
            self._ended[track.track_id] = track
        if track.identity is not None:
            self._identified.add(track.track_id)
        best = track.faces.best
        return TrackEnded(
            track.track_id,
            track.start,
            track.last,
            track.first_frame,
            track.last_frame,
            track.wall,
            track.detections,
            track.identity,
            track.similarity,
            best.quality if best is not None else 0.0,
            best.crop if best is not None else None,
            track.faces.template,
        )

    def finish(self) -> FrameResult:
        """End every open track (the source ended or was stopped)."""
        tracks = sorted(self._tracks.values(), key=lambda t: t.track_id)
        events = [e for t in tracks if (e := self._end(t)) is not None]
        self._elapsed = time.perf_counter() - self._t0
        return FrameResult(None, (), tuple(events), False)

    # ------------------------------------------------------------------ figures
    def summary(self) -> VideoSummary:
        """Totals so far."""
        span = 0.0
        if self._first_time is not None:
            span = self._last_time - self._first_time + self._frame_step
        return VideoSummary(
            self._frames,
            self._detected,
            self._dropped,
            self._started,
            len(self._identified),
            span,
            self._elapsed,
        )

    def _add(self, stage: str, seconds: float) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + seconds

    def _far_of(self, similarity: float) -> float | None:
        for far, thr in self._thresholds:  # smallest FAR first
            if similarity >= thr:
                return far
        return None


def _crowded(faces: list[Face], margin: float) -> set[int]:
    """Indices of faces near another face of the frame: their boxes, each grown by
    ``margin`` of its width and height on every side, intersect. Where faces cross, the
    one behind is partly hidden (the ground truth of ``bench/video.py`` drops a face less
    than half visible, yet the detector still finds it, often with a high quality figure):
    its embedding is no evidence of who it is."""
    if len(faces) < 2 or margin < 0:
        return set()
    b = np.stack([np.asarray(f.box, np.float64) for f in faces])
    w, h = (b[:, 2] - b[:, 0]) * margin, (b[:, 3] - b[:, 1]) * margin
    g = np.stack([b[:, 0] - w, b[:, 1] - h, b[:, 2] + w, b[:, 3] + h], axis=1)
    ix = np.minimum(g[:, None, 2], g[None, :, 2]) - np.maximum(g[:, None, 0], g[None, :, 0])
    iy = np.minimum(g[:, None, 3], g[None, :, 3]) - np.maximum(g[:, None, 1], g[None, :, 1])
    near = (ix > 0) & (iy > 0)
    np.fill_diagonal(near, False)
    return {int(i) for i in np.flatnonzero(near.any(axis=1))}


def _box(face: Face) -> tuple[float, float, float, float]:
    return (float(face.box[0]), float(face.box[1]), float(face.box[2]), float(face.box[3]))


def _q(face: Face) -> float:
    assert face.quality is not None
    return face.quality.overall


def _far_table(recognizer: Any) -> list[tuple[float, float]]:
    """(FAR, threshold) pairs calibrated for the recogniser, smallest FAR first."""
    out = []
    for key, thr in recognizer.info.thresholds.items():
        if key.startswith("far="):
            out.append((float(key[4:]), float(thr)))
    return sorted(out)
