"""Faces followed across frames: ByteTrack, as packaged by ``supervision``.

ByteTrack (Zhang et al., "ByteTrack: Multi-Object Tracking by Associating Every Detection
Box", ECCV 2022) matches each frame's boxes to the tracks' Kalman-predicted boxes by IoU,
high-score boxes first and then the low-score ones, so a face that is briefly detected with
a low score keeps its track. npcface does not track by itself: this module only turns
:class:`~npcface.results.Face` lists into the tracker's boxes and back.

``supervision`` 0.30 is the last release that ships ByteTrack without a dependency on the
full ``opencv-python`` (it marks it deprecated in favour of the ``trackers`` package, which
pins ``opencv-python`` and would install a second ``cv2`` over npcface's headless one), so
the ``video`` extra pins ``supervision>=0.30,<0.31``. Swapping the tracker is this module
alone.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError, MissingExtraError
from ..results import Face


def _supervision() -> Any:
    try:
        import supervision
    except ImportError:
        raise MissingExtraError("face tracking", "video", "supervision") from None
    if not hasattr(supervision, "ByteTrack"):
        raise MissingExtraError(
            f"face tracking needs supervision's ByteTrack (supervision>=0.30,<0.31; "
            f"{supervision.__version__} has none): pip install 'npcface[video]'"
        )
    return supervision


class FaceTracker:
    """Give each face a track id that stays with the person from frame to frame.

    Args:
        fps: frames per second at which :meth:`update` is called (the video's rate divided
            by the detection interval).
        lost_after: seconds a track survives without a detection (occlusion, a missed
            detection) before it ends; a face found again later starts a new track.
        match_iou: ByteTrack's matching threshold (1 - IoU cost); lower is stricter.
        min_score: detections below this detector score start no track (they can still
            continue one, ByteTrack's second association).

    Raises:
        InvalidArgumentError: a number out of range.
        MissingExtraError: supervision is not installed.
    """

    def __init__(
        self,
        fps: float,
        lost_after: float = 1.0,
        match_iou: float = 0.8,
        min_score: float = 0.5,
    ) -> None:
        if not fps or fps <= 0:
            raise InvalidArgumentError(f"fps must be > 0, got {fps!r}", input="fps")
        if lost_after <= 0:
            raise InvalidArgumentError(f"lost_after must be > 0 s, got {lost_after!r}")
        sv = _supervision()
        self._sv = sv
        self.fps = float(fps)
        self.lost_after = float(lost_after)
        with warnings.catch_warnings():  # its deprecation notice: see the module docstring
            warnings.simplefilter("ignore", FutureWarning)
            # supervision counts lost_track_buffer in frames at 30 fps, scaled by frame_rate
            self._tracker = sv.ByteTrack(
                track_activation_threshold=float(min_score) - 0.1,
                lost_track_buffer=max(1, round(self.lost_after * 30)),
                minimum_matching_threshold=float(match_iou),
                frame_rate=self.fps,
                minimum_consecutive_frames=1,
            )

    def update(self, faces: Sequence[Face]) -> list[tuple[int, Face]]:
        """Track ids for one frame's faces.

        Args:
            faces: the detector's faces of this frame.

        Returns:
            (track id, face) for every face the tracker follows (a face seen for the first
            time gets its id from its second frame, ByteTrack's confirmation, except in
            the tracker's first frame), in the order
            of ``faces``. Ids are positive and never reused.
        """
        sv = self._sv
        if faces:
            xyxy = np.stack([np.asarray(f.box, np.float32) for f in faces])
            score = np.asarray([f.score for f in faces], np.float32)
        else:
            xyxy, score = np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        dets = sv.Detections(
            xyxy=xyxy,
            confidence=score,
            class_id=np.zeros(len(faces), int),
            data={"index": np.arange(len(faces))},
        )
        out = self._tracker.update_with_detections(dets)
        if len(out) == 0:
            return []
        pairs = sorted(
            (int(i), int(t)) for i, t in zip(out.data["index"], out.tracker_id, strict=True)
        )
        return [(t, faces[i]) for i, t in pairs]

    def reset(self) -> None:
        """Forget every track (ids start again at 1)."""
        self._tracker.reset()
