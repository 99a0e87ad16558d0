"""Images into galleries in bulk (:func:`enroll_images` over a folder or CSV, resumable,
with a failure report, on the local engine or Ray). One-by-one enrolment and identification
are the recogniser's own methods (:meth:`~npcface.FaceRecognizer.enroll`,
:meth:`~npcface.FaceRecognizer.identify`).

Enrolment sits beside the recogniser: it turns images into vectors with
:meth:`~npcface.FaceRecognizer.embed_many` and writes them into any gallery backend, which
stores and searches vectors and knows nothing of images.
"""

from __future__ import annotations

from .local import REPORT_NAME, EnrollItem, EnrollSummary, enroll_images, list_images

__all__ = [
    "REPORT_NAME",
    "EnrollItem",
    "EnrollSummary",
    "enroll_images",
    "list_images",
]
