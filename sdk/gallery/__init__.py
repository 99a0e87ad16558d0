"""Galleries for 1:N identification: SQLite as the source of truth, a FAISS index for speed.

See :class:`Gallery`; bulk enrolment from image folders is :mod:`npcface.enroll`,
and the recogniser integration (images in, matches out) is :mod:`npcface.enroll`.
"""

from npcface.gallery.gallery import (
    AddResult,
    CompactReport,
    ConsistencyReport,
    Gallery,
    GalleryInfo,
)
from npcface.gallery.uri import GalleryLocation, is_milvus_uri, parse_gallery_uri

__all__ = [
    "AddResult",
    "CompactReport",
    "ConsistencyReport",
    "Gallery",
    "GalleryInfo",
    "GalleryLocation",
    "is_milvus_uri",
    "parse_gallery_uri",
]
