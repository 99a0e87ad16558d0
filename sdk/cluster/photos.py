"""Faces found in photos, gathered row by row for :meth:`FaceGroups.add
<npcface.cluster.store.FaceGroups.add>`: one place that turns a photo's faces into the
collection's columns, for the CLI (``npcface cluster``) and the service's groups routes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..draw import face_thumbnail
from ..results import Face

_COLUMNS = ("emb", "src", "box", "q", "thumb", "key")


class FaceRows:
    """Faces waiting to join a :class:`~npcface.cluster.store.FaceGroups`, with their
    source, box (pixels), overall quality, thumbnail (JPEG) and a stable key
    ``<photo SHA-256>:<face index>`` (a photo sent again adds nothing)."""

    def __init__(self) -> None:
        self._rows: dict[str, list[Any]] = {k: [] for k in _COLUMNS}

    def __len__(self) -> int:
        return len(self._rows["emb"])

    def add_photo(
        self,
        image: np.ndarray,
        embeddings: Sequence[np.ndarray],
        faces: Sequence[Face],
        digest: str,
        source: str,
    ) -> None:
        """The faces of one decoded photo (BGR ``image``), in the order of ``faces``."""
        rows = self._rows
        for i, (e, f) in enumerate(zip(embeddings, faces, strict=True)):
            rows["emb"].append(e)
            rows["src"].append(source)
            rows["box"].append([float(v) for v in f.box])
            rows["q"].append(None if f.quality is None else float(f.quality.overall))
            rows["thumb"].append(face_thumbnail(image, f.box))
            rows["key"].append(f"{digest}:{i}")

    def add_to(self, groups: Any) -> list[int]:
        """Add the gathered faces to ``groups`` (a FaceGroups) and forget them: their face
        ids, in order (none when nothing is gathered)."""
        if not len(self):
            return []
        rows = self._rows
        ids = groups.add(
            np.stack(rows["emb"]),
            sources=rows["src"],
            boxes=rows["box"],
            quality=rows["q"],
            thumbnails=rows["thumb"],
            keys=rows["key"],
        )
        for column in rows.values():
            column.clear()
        return ids
