"""Template id -> identity id, for the live templates a local gallery's index holds.

FAISS returns template ids; a search needs their identities, and the number of live
templates per identity. Both live here as flat int64 arrays indexed by id (ids come from
SQLite's ``AUTOINCREMENT``: dense, never reused), so a lookup of a whole result matrix is
one fancy-indexing step.
"""

from __future__ import annotations

import numpy as np


class IdMap:
    """Owner of every live template, and live templates per identity.

    Not thread-safe by itself (the :class:`~npcface.gallery.Gallery` facade serialises calls).
    """

    def __init__(self) -> None:
        self._owner = np.full(1, -1, dtype=np.int64)  # template id -> identity id (-1: none)
        self._count = np.zeros(1, dtype=np.int64)  # identity id -> live templates
        self.templates = 0
        """Live templates."""
        self.identities = 0
        """Identities with at least one live template."""

    def reset(self, template_ids: np.ndarray, owners: np.ndarray, max_template_id: int) -> None:
        """Start over from the complete list of live (template id, identity id) pairs."""
        top = int(template_ids.max()) if template_ids.size else 0
        self._owner = np.full(max(top, int(max_template_id)) + 1, -1, dtype=np.int64)
        self._owner[template_ids] = owners
        size = int(owners.max()) + 1 if owners.size else 1
        self._count = np.bincount(owners, minlength=size).astype(np.int64)
        self.templates = int(template_ids.size)
        self.identities = int(np.count_nonzero(self._count))

    def add(self, template_ids: np.ndarray, owners: np.ndarray) -> None:
        """Record live templates (ids already known are left as they are)."""
        if not template_ids.size:
            return
        self._grow(int(template_ids.max()), int(owners.max()))
        new = self._owner[template_ids] < 0
        template_ids, owners = template_ids[new], owners[new]
        self._owner[template_ids] = owners
        np.add.at(self._count, owners, 1)
        self.templates += int(template_ids.size)
        self.identities = int(np.count_nonzero(self._count))

    def remove(self, template_ids: np.ndarray) -> None:
        """Forget deleted templates (unknown ids are ignored)."""
        ids = template_ids[(template_ids >= 0) & (template_ids < self._owner.size)]
        owners = self._owner[ids]
        live = owners >= 0
        self._owner[ids[live]] = -1
        np.subtract.at(self._count, owners[live], 1)
        self.templates -= int(live.sum())
        self.identities = int(np.count_nonzero(self._count))

    def owners_of(self, labels: np.ndarray) -> np.ndarray:
        """Identity id of each template id in ``labels`` (any shape); -1 where not live."""
        ok = (labels >= 0) & (labels < self._owner.size)
        out = np.full(labels.shape, -1, dtype=np.int64)
        out[ok] = self._owner[labels[ok]]
        return out

    def _grow(self, max_tid: int, max_ident: int) -> None:
        if max_tid >= self._owner.size:
            grown = np.full(max(max_tid + 1, 2 * self._owner.size), -1, dtype=np.int64)
            grown[: self._owner.size] = self._owner
            self._owner = grown
        if max_ident >= self._count.size:
            grown = np.zeros(max(max_ident + 1, 2 * self._count.size), dtype=np.int64)
            grown[: self._count.size] = self._count
            self._count = grown
