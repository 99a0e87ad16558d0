"""Face choice: which of the faces found in an image is "the" face of that image.

One policy per call, named by a string so that it can travel through configs, the CLI and the
HTTP service: ``largest``, ``center``, ``best_score`` or ``single``.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import InvalidArgumentError, MultipleFacesError, NoFaceError
from .results import Face

FACE_POLICIES = ("largest", "center", "best_score", "single")


def check_policy(policy: str) -> str:
    """``policy`` if it names a face policy.

    Raises:
        InvalidArgumentError: an unknown policy (the message lists the valid ones).
    """
    if policy not in FACE_POLICIES:
        raise InvalidArgumentError(
            f"unknown face policy {policy!r}; use one of {', '.join(FACE_POLICIES)}"
        )
    return policy


def select_face(
    faces: Sequence[Face], image_shape: tuple[int, ...], policy: str, name: str = "image"
) -> Face:
    """Pick one face by ``policy``.

    ``largest``: biggest box area. ``center``: box centre nearest the image centre, among
    faces at least a quarter of the largest's area. ``best_score``: highest detector score.
    ``single``: exactly one face, else :class:`MultipleFacesError`.

    Args:
        faces: the detector's faces.
        image_shape: (H, W, ...) of the image the faces were found in, in pixels.
        policy: one of :data:`FACE_POLICIES`.
        name: the image's name for error messages.

    Raises:
        InvalidArgumentError: unknown policy. NoFaceError: ``faces`` is empty.
        MultipleFacesError: several faces under policy ``single``.
    """
    check_policy(policy)
    if not faces:
        raise NoFaceError(f"{name}: no face found")
    if policy == "single":
        if len(faces) > 1:
            raise MultipleFacesError(f"{name}: {len(faces)} faces found, policy 'single' wants one")
        return faces[0]
    if policy == "best_score":
        return max(faces, key=lambda f: f.score)
    if policy == "largest":
        return max(faces, key=lambda f: f.area)
    h, w = image_shape[:2]
    biggest = max(f.area for f in faces)
    near = [f for f in faces if f.area >= 0.25 * biggest]

    def dist(f: Face) -> float:
        cx, cy = (f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2
        return float((cx - w / 2) ** 2 + (cy - h / 2) ** 2)

    return min(near, key=dist)
