"""Images into galleries: one-by-one (:func:`enroll`, :func:`identify`) and in bulk
(:func:`enroll_images` over a folder or CSV, resumable, with a failure report).

Enrolment sits beside the recogniser: it turns images into vectors with
:meth:`~npcface.FaceRecognizer.embed_many` and writes them into any gallery backend, which
stores and searches vectors and knows nothing of images.
"""

from __future__ import annotations

from .local import REPORT_NAME, EnrollItem, EnrollSummary, enroll_images, list_images
from .single import check_model, enroll, identify

__all__ = [
    "REPORT_NAME",
    "EnrollItem",
    "EnrollSummary",
    "check_model",
    "enroll",
    "enroll_images",
    "identify",
    "list_images",
]
