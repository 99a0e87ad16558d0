"""A face collection on disk: faces, their groups, and the corrections people make.

:class:`FaceGroups` keeps a collection in one SQLite file, ``<folder>/groups.db`` (the
folder may be a gallery's: the corrections then live next to the gallery they name people
in). It holds each face's embedding, where it came from (source, box, quality, an opaque
thumbnail the caller made), its group, and every correction:

* **name** a group: it becomes a person; with a gallery, its faces are enrolled there as
  that identity (exactly once);
* **merge** two groups, **split** a group, **move** a face to a group, mark a face **not**
  that group's person.

A corrected group is *confirmed*: its faces are pinned to it (must-link), confirmed groups
never merge with each other, and a face marked "not this person" never joins that group
(cannot-link). :meth:`FaceGroups.recluster` (everything again) and :meth:`FaceGroups.update`
(new faces only) honour all of it, in this process or any later one. Group ids are stable:
a confirmed group keeps its id; an automatic group keeps the id of the previous group most of
its faces came from.

Sharing: one FaceGroups object may be shared by threads (one lock); several processes may
open one folder (SQLite serialises their writes; each call reads the committed state).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GroupNotFoundError, InvalidArgumentError, NpcfaceError
from ..validate import check_embeddings
from .clusterer import NOISE, Clusterer, Clustering, Constraints
from .thresholds import ClusterCalibration

log = logging.getLogger(__name__)

DB_NAME = "groups.db"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS groups (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT UNIQUE,
    confirmed INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    vector BLOB NOT NULL,
    source TEXT,
    box TEXT,
    quality REAL,
    thumbnail BLOB,
    key TEXT UNIQUE,
    group_id INTEGER REFERENCES groups(id) ON DELETE SET NULL,
    pinned INTEGER NOT NULL DEFAULT 0,
    confidence REAL,
    clustered INTEGER NOT NULL DEFAULT 0,
    added REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS faces_group ON faces(group_id);
CREATE TABLE IF NOT EXISTS not_in (
    face INTEGER NOT NULL REFERENCES faces(id) ON DELETE CASCADE,
    group_id INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    PRIMARY KEY (face, group_id)
);
CREATE TABLE IF NOT EXISTS corrections (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class GroupInfo:
    """One group of a :class:`FaceGroups`.

    Attributes:
        id: stable group id.
        size: faces in it.
        name: the person's name, if named.
        confirmed: corrected by someone (its faces are pinned to it).
        representative: id of its most typical face.
    """

    id: int
    size: int
    name: str | None
    confirmed: bool
    representative: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "size": self.size,
            "name": self.name,
            "confirmed": self.confirmed,
            "representative": self.representative,
        }


@dataclass(frozen=True)
class FaceInfo:
    """One face of a :class:`FaceGroups`.

    Attributes:
        id: face id.
        group: its group id (None: noise, or not clustered yet).
        source: where it came from (e.g. the photo's path).
        box: (x1, y1, x2, y2) in the photo's pixels, if given.
        quality: face quality in [0, 1], if given.
        confidence: mean cosine similarity to the other faces of its group (None: noise).
        pinned: a correction put it in its group.
    """

    id: int
    group: int | None
    source: str | None
    box: tuple[float, float, float, float] | None
    quality: float | None
    confidence: float | None
    pinned: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "group": self.group,
            "source": self.source,
            "box": list(self.box) if self.box is not None else None,
            "quality": self.quality,
            "confidence": self.confidence,
            "pinned": self.pinned,
        }


class FaceGroups:
    """A face collection kept in ``<folder>/groups.db``; see the module's notes.

    Open one with :meth:`open` (created when missing); use it as a context manager or call
    :meth:`close`.

    Args:
        folder: the folder of ``groups.db`` (a gallery's folder, or any).
        dim: embedding dimension (needed to create one).
        model: the embedding model (recorded; picks the clustering calibration). A
            collection of another model is refused (InvalidArgumentError).
        calibration: impostor statistics instead of the model's shipped ones.
        min_quality: faces stored with a lower quality are noise and not clustered.
    """

    def __init__(
        self,
        folder: str | Path,
        dim: int | None = None,
        model: str | None = None,
        calibration: ClusterCalibration | None = None,
        min_quality: float | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.min_quality = min_quality
        self.path = self.folder / DB_NAME
        self._lock = threading.RLock()
        self._closed = False
        if not self.folder.is_dir():
            raise InvalidArgumentError(f"{self.folder}: no such folder", input="folder")
        try:
            self._conn = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA busy_timeout = 10000")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise NpcfaceError(f"{self.path}: cannot open the face collection: {exc}") from exc
        meta = self._meta()
        if "schema" not in meta:
            if dim is None:
                self._conn.close()
                raise InvalidArgumentError(
                    f"{self.path}: a new face collection needs dim=", input="dim"
                )
            self._set_meta(schema=SCHEMA_VERSION, dim=int(dim), model=model, fitted_at=0)
            meta = self._meta()
        elif int(meta["schema"]) > SCHEMA_VERSION:
            self._conn.close()
            raise NpcfaceError(f"{self.path}: schema {meta['schema']} is newer than this npcface")
        self.dim = int(meta["dim"])
        if dim is not None and int(dim) != self.dim:
            self._conn.close()
            raise InvalidArgumentError(
                f"{self.path} holds {self.dim}-dimensional faces, not {dim}", input="dim"
            )
        recorded = meta.get("model")
        if model is not None and recorded is not None and recorded != model:
            self._conn.close()
            raise InvalidArgumentError(
                f"{self.path} holds faces of model {recorded!r}, not {model!r}: embeddings of "
                "different models are not comparable (use the collection's model)",
                input="model",
            )
        self.model = recorded or model
        self.calibration = calibration

    @classmethod
    def open(
        cls,
        folder: str | Path,
        dim: int | None = None,
        model: str | None = None,
        calibration: ClusterCalibration | None = None,
        min_quality: float | None = None,
    ) -> FaceGroups:
        """Open the collection in ``folder`` (created there, with ``dim``, when missing)."""
        return cls(folder, dim=dim, model=model, calibration=calibration, min_quality=min_quality)

    @staticmethod
    def exists(folder: str | Path) -> bool:
        return (Path(folder) / DB_NAME).is_file()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> FaceGroups:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- plumbing
    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: the writer lock is taken up front)."""
        with self._lock:
            if self._closed:
                raise NpcfaceError(f"{self.path}: the face collection is closed")
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            if self._closed:
                raise NpcfaceError(f"{self.path}: the face collection is closed")
            return self._conn.execute(sql, params).fetchall()

    def _meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self._read("SELECT key, value FROM meta")}

    def _set_meta(self, db: sqlite3.Connection | None = None, **values: Any) -> None:
        conn = db or self._conn
        for k, v in values.items():
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (k, json.dumps(v)),
            )

    def _log(self, db: sqlite3.Connection, action: str, **detail: Any) -> None:
        db.execute(
            "INSERT INTO corrections (at, action, detail) VALUES (?, ?, ?)",
            (time.time(), action, json.dumps(detail)),
        )

    # ---------------------------------------------------------------- faces
    def add(
        self,
        embeddings: np.ndarray,
        *,
        sources: Sequence[str | None] | None = None,
        boxes: Sequence[Sequence[float] | None] | None = None,
        quality: Sequence[float | None] | None = None,
        thumbnails: Sequence[bytes | None] | None = None,
        keys: Sequence[str | None] | None = None,
    ) -> list[int]:
        """Store new faces (not grouped until :meth:`update` or :meth:`recluster`).

        Args:
            embeddings: (n, d) embeddings.
            sources, boxes, quality, thumbnails: per face, optional.
            keys: per face, what it was made from (e.g. ``"<photo sha256>:<face index>"``):
                a face whose key is stored already is not stored again (its id is
                returned), so adding a folder twice adds nothing.

        Returns:
            The face ids, in input order.

        Raises:
            EmbeddingError: bad embeddings. InvalidArgumentError: a per-face list of
                another length.
        """
        x = check_embeddings(embeddings, self.dim, what="embeddings")
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        n = len(x)
        cols = {
            "sources": sources,
            "boxes": boxes,
            "quality": quality,
            "thumbnails": thumbnails,
            "keys": keys,
        }
        for name, col in cols.items():
            if col is not None and len(col) != n:
                raise InvalidArgumentError(f"{name}: {len(col)} values for {n} faces", input=name)
        ids: list[int] = []
        now = time.time()
        with self._write() as db:
            for i in range(n):
                key = keys[i] if keys is not None else None
                if key is not None:
                    row = db.execute("SELECT id FROM faces WHERE key = ?", (key,)).fetchone()
                    if row is not None:
                        ids.append(int(row[0]))
                        continue
                box = boxes[i] if boxes is not None else None
                q = quality[i] if quality is not None else None
                cur = db.execute(
                    "INSERT INTO faces (vector, source, box, quality, thumbnail, key, added) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        x[i].astype(np.float32).tobytes(),
                        sources[i] if sources is not None else None,
                        json.dumps([float(v) for v in box]) if box is not None else None,
                        float(q) if q is not None else None,
                        thumbnails[i] if thumbnails is not None else None,
                        key,
                        now,
                    ),
                )
                ids.append(int(cur.lastrowid))
        return ids

    def __len__(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM faces")[0][0])

    def known_keys(self, prefix: str = "") -> set[str]:
        """The keys of the stored faces (those given to :meth:`add`) that start with
        ``prefix``."""
        rows = self._read(
            "SELECT key FROM faces WHERE key IS NOT NULL AND substr(key, 1, ?) = ?",
            (len(prefix), prefix),
        )
        return {r[0] for r in rows}

    def face(self, face_id: int) -> FaceInfo:
        """One face. Raises GroupNotFoundError: no such face."""
        rows = self._read(
            "SELECT id, group_id, source, box, quality, confidence, pinned FROM faces WHERE id = ?",
            (_int(face_id, "face"),),
        )
        if not rows:
            raise GroupNotFoundError(f"no face {face_id}", input="face")
        return _face(rows[0])

    def thumbnail(self, face_id: int) -> bytes | None:
        """The thumbnail stored with a face (None when none was). Raises
        GroupNotFoundError: no such face."""
        rows = self._read("SELECT thumbnail FROM faces WHERE id = ?", (_int(face_id, "face"),))
        if not rows:
            raise GroupNotFoundError(f"no face {face_id}", input="face")
        return rows[0][0]

    def embeddings(self, face_ids: Sequence[int]) -> np.ndarray:
        """(n, d) float32 embeddings of the faces, in order. Raises GroupNotFoundError."""
        out = np.zeros((len(face_ids), self.dim), np.float32)
        for i, fid in enumerate(face_ids):
            rows = self._read("SELECT vector FROM faces WHERE id = ?", (_int(fid, "face"),))
            if not rows:
                raise GroupNotFoundError(f"no face {fid}", input="face")
            out[i] = np.frombuffer(rows[0][0], np.float32)
        return out

    # ---------------------------------------------------------------- groups
    def groups(self, include_empty: bool = False) -> list[GroupInfo]:
        """Every group, largest first (then by id)."""
        rows = self._read(
            "SELECT g.id, COUNT(f.id), g.name, g.confirmed FROM groups g "
            "LEFT JOIN faces f ON f.group_id = g.id GROUP BY g.id"
        )
        reps = self._representatives()
        out = [
            GroupInfo(int(i), int(n), name, bool(conf), reps.get(int(i)))
            for i, n, name, conf in rows
            if n or include_empty
        ]
        out.sort(key=lambda g: (-g.size, g.id))
        return out

    def group(self, group_id: int) -> GroupInfo:
        """One group. Raises GroupNotFoundError."""
        gid = self._group_id(group_id)
        return next(g for g in self.groups(include_empty=True) if g.id == gid)

    def faces(self, group_id: int | None = None) -> list[FaceInfo]:
        """The faces of a group (most typical first), or with ``None`` the faces in no group.

        Raises:
            GroupNotFoundError: no such group.
        """
        if group_id is None:
            rows = self._read(
                "SELECT id, group_id, source, box, quality, confidence, pinned FROM faces "
                "WHERE group_id IS NULL ORDER BY id"
            )
        else:
            rows = self._read(
                "SELECT id, group_id, source, box, quality, confidence, pinned FROM faces "
                "WHERE group_id = ? ORDER BY confidence DESC, id",
                (self._group_id(group_id),),
            )
        return [_face(r) for r in rows]

    def _group_id(self, group_id: Any) -> int:
        gid = _int(group_id, "group")
        if not self._read("SELECT 1 FROM groups WHERE id = ?", (gid,)):
            raise GroupNotFoundError(f"no group {gid}", input="group")
        return gid

    def _representatives(self) -> dict[int, int]:
        rows = self._read(
            "SELECT group_id, id FROM faces WHERE group_id IS NOT NULL "
            "ORDER BY group_id, confidence DESC, id"
        )
        out: dict[int, int] = {}
        for gid, fid in rows:
            out.setdefault(int(gid), int(fid))
        return out

    # ---------------------------------------------------------------- clustering
    def _clusterer(self) -> Clusterer:
        return Clusterer(
            model=self.model, calibration=self.calibration, min_quality=self.min_quality
        )

    def _quality(self) -> np.ndarray | None:
        """Face quality in face-id order (unknown counts as passing), for ``min_quality``."""
        if self.min_quality is None:
            return None
        rows = self._read("SELECT quality FROM faces ORDER BY id")
        return np.array([1.0 if q is None else float(q) for (q,) in rows])

    def _load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Constraints]:
        """ids, vectors, current group (-1 none), clustered flags, and the constraints."""
        rows = self._read("SELECT id, vector, group_id, pinned, clustered FROM faces ORDER BY id")
        n = len(rows)
        ids = np.array([r[0] for r in rows], np.int64)
        x = np.zeros((n, self.dim), np.float32)
        for i, r in enumerate(rows):
            x[i] = np.frombuffer(r[1], np.float32)
        group = np.array([-1 if r[2] is None else r[2] for r in rows], np.int64)
        pinned = np.array([bool(r[3]) for r in rows])
        clustered = np.array([bool(r[4]) for r in rows])
        tags = np.where(pinned, group, -1)
        row_of = {int(f): i for i, f in enumerate(ids)}
        cannot = tuple(
            (row_of[int(f)], int(g))
            for f, g in self._read("SELECT face, group_id FROM not_in")
            if int(f) in row_of
        )
        return ids, x, group, clustered, Constraints(tags, cannot)

    def recluster(self) -> Clustering:
        """Group every face again, honouring every correction.

        Returns:
            The :class:`~npcface.cluster.Clustering` (its rows in face-id order); the
            stored groups are updated (stable ids).
        """
        ids, x, group, _, cons = self._load()
        if len(ids) == 0:
            return self._empty()
        result = self._clusterer().fit(x, quality=self._quality(), constraints=cons)
        self._store(ids, group, result, fitted_at=len(ids))
        return result

    def update(self) -> Clustering:
        """Group the faces added since the last run without regrouping the others (groups
        are never split here; the whole collection is grouped again once it has grown 1.25
        times since the last full run). Honours every correction.

        Returns:
            The :class:`~npcface.cluster.Clustering` of all faces (rows in face-id order).
        """
        ids, x, group, clustered, cons = self._load()
        if len(ids) == 0:
            return self._empty()
        fitted_at = int(self._meta().get("fitted_at", 0))
        old = np.flatnonzero(clustered)
        if len(old) == 0 or fitted_at == 0 or not np.all(old == np.arange(len(old))):
            return self.recluster()
        c = self._clusterer()
        q = self._quality()
        k = len(old)
        c.restore(
            x[:k], _partition(group[:k]), quality=None if q is None else q[:k], fitted_at=fitted_at
        )
        result = c.add(x[k:], quality=None if q is None else q[k:], constraints=cons)
        self._store(ids, group, result, fitted_at=c.fitted_at)
        return result

    def _empty(self) -> Clustering:
        return Clustering.empty(self._clusterer().thresholds(1))

    def _store(
        self, ids: np.ndarray, before: np.ndarray, result: Clustering, fitted_at: int
    ) -> None:
        """Write a result: confirmed groups keep their ids (their tag), automatic groups
        take the id most of their faces had (each old id once), the rest new ids."""
        labels = result.labels
        with self._write() as db:
            confirmed = {int(r[0]) for r in db.execute("SELECT id FROM groups WHERE confirmed")}
            new_id = np.full(result.groups, -1, np.int64)
            for g in range(result.groups):
                if result.tags.size and result.tags[g] >= 0:
                    new_id[g] = int(result.tags[g])
            taken = set(new_id[new_id >= 0].tolist())
            # automatic groups: the previous automatic id they share most faces with
            cand = []
            for g in np.flatnonzero(new_id < 0).tolist():
                prev = before[labels == g]
                prev = prev[(prev >= 0)]
                if len(prev):
                    vals, counts = np.unique(prev, return_counts=True)
                    for v, cnt in zip(vals.tolist(), counts.tolist(), strict=True):
                        if v not in confirmed:
                            cand.append((-cnt, g, v))
            for _, g, v in sorted(cand):
                if new_id[g] < 0 and v not in taken:
                    new_id[g] = v
                    taken.add(v)
            now = time.time()
            for g in np.flatnonzero(new_id < 0).tolist():
                new_id[g] = db.execute(
                    "INSERT INTO groups (confirmed, created) VALUES (0, ?)", (now,)
                ).lastrowid
            gid = np.where(labels >= 0, new_id[np.maximum(labels, 0)], -1)
            db.executemany(
                "UPDATE faces SET group_id = ?, confidence = ?, clustered = 1 WHERE id = ?",
                [
                    (
                        None if g < 0 else int(g),
                        None if g < 0 else float(cf),
                        int(f),
                    )
                    for f, g, cf in zip(
                        ids.tolist(), gid.tolist(), result.confidence.tolist(), strict=True
                    )
                ],
            )
            # automatic groups left without faces go; confirmed ones stay (they hold names)
            db.execute(
                "DELETE FROM groups WHERE confirmed = 0 AND id NOT IN "
                "(SELECT DISTINCT group_id FROM faces WHERE group_id IS NOT NULL)"
            )
            self._set_meta(db, fitted_at=int(fitted_at))

    # ---------------------------------------------------------------- corrections
    def _confirm(self, db: sqlite3.Connection, gid: int) -> None:
        """Make a group confirmed: its faces are pinned to it."""
        db.execute("UPDATE groups SET confirmed = 1 WHERE id = ?", (gid,))
        db.execute("UPDATE faces SET pinned = 1 WHERE group_id = ?", (gid,))

    def name(self, group_id: int, name: str, gallery: Any = None) -> list[int]:
        """Name a group (it becomes a person) and, with a gallery, enrol its faces there
        as that identity, exactly once (each face's content key is ``face:<id>`` of this
        collection).

        Args:
            group_id: the group.
            name: the person's name (unique among this collection's groups).
            gallery: an open, writable :class:`~npcface.Gallery` of the same model, or None.

        Returns:
            The gallery's template ids of the group's faces ([] without a gallery).

        Raises:
            GroupNotFoundError: no such group. InvalidArgumentError: an empty name, or one
                another group has (merge them instead). GalleryError: the gallery refuses.
        """
        if not isinstance(name, str) or not name.strip():
            raise InvalidArgumentError(
                f"name must be a non-empty string, got {name!r}", input="name"
            )
        name = name.strip()
        with self._write() as db:
            gid = self._group_id(group_id)
            other = db.execute(
                "SELECT id FROM groups WHERE name = ? AND id != ?", (name, gid)
            ).fetchone()
            if other is not None:
                raise InvalidArgumentError(
                    f"group {other[0]} is named {name!r} already: merge the two groups",
                    input="name",
                )
            db.execute("UPDATE groups SET name = ? WHERE id = ?", (name, gid))
            self._confirm(db, gid)
            self._log(db, "name", group=gid, name=name)
            face_ids = [
                int(r[0])
                for r in db.execute("SELECT id FROM faces WHERE group_id = ? ORDER BY id", (gid,))
            ]
        if gallery is None or not face_ids:
            return []
        done = gallery.add_once(
            name,
            self.embeddings(face_ids),
            content_hashes=[f"face:{f}" for f in face_ids],
            sources=[self.face(f).source for f in face_ids],
        )
        return list(done.template_ids)

    def merge(self, group_id: int, other_id: int) -> int:
        """Merge ``other_id`` into ``group_id``: one confirmed group of both groups' faces
        (the name of the first, else of the second).

        Returns:
            The group id (``group_id``).

        Raises:
            GroupNotFoundError: no such group. InvalidArgumentError: the same group twice.
        """
        with self._write() as db:
            a, b = self._group_id(group_id), self._group_id(other_id)
            if a == b:
                raise InvalidArgumentError(f"cannot merge group {a} into itself", input="group")
            name_a, name_b = (
                db.execute("SELECT name FROM groups WHERE id = ?", (g,)).fetchone()[0]
                for g in (a, b)
            )
            db.execute("UPDATE faces SET group_id = ? WHERE group_id = ?", (a, b))
            # "not this person" against either side no longer holds for the merged faces
            db.execute(
                "DELETE FROM not_in WHERE group_id = ? AND face IN "
                "(SELECT id FROM faces WHERE group_id = ?)",
                (a, a),
            )
            db.execute("UPDATE OR IGNORE not_in SET group_id = ? WHERE group_id = ?", (a, b))
            db.execute("DELETE FROM groups WHERE id = ?", (b,))
            if name_a is None and name_b is not None:
                db.execute("UPDATE groups SET name = ? WHERE id = ?", (name_b, a))
            self._confirm(db, a)
            self._log(db, "merge", into=a, merged=b)
        return a

    def split(self, group_id: int, face_ids: Sequence[int]) -> int:
        """Split a group: ``face_ids`` become a new confirmed group, the rest stay (now
        confirmed): the two are different people from then on.

        Returns:
            The new group's id.

        Raises:
            GroupNotFoundError: no such group. InvalidArgumentError: faces not of that
                group, none, or all of them.
        """
        with self._write() as db:
            gid = self._group_id(group_id)
            members = {
                int(r[0]) for r in db.execute("SELECT id FROM faces WHERE group_id = ?", (gid,))
            }
            picked = {_int(f, "faces") for f in face_ids}
            if not picked or not picked <= members or picked == members:
                raise InvalidArgumentError(
                    f"split needs some but not all faces of group {gid} "
                    f"(it has {len(members)}; got {sorted(picked)[:10]})",
                    input="faces",
                )
            new = db.execute(
                "INSERT INTO groups (confirmed, created) VALUES (1, ?)", (time.time(),)
            ).lastrowid
            db.executemany(
                "UPDATE faces SET group_id = ?, pinned = 1 WHERE id = ?",
                [(new, f) for f in sorted(picked)],
            )
            self._confirm(db, gid)
            self._log(db, "split", group=gid, new=new, faces=sorted(picked))
        return int(new)

    def move(self, face_id: int, group_id: int) -> None:
        """Move a face to a group (confirmed from now on; the face pinned to it). The face
        is marked "not" the confirmed group it came from.

        Raises:
            GroupNotFoundError: no such face or group.
        """
        with self._write() as db:
            fid = _int(face_id, "face")
            gid = self._group_id(group_id)
            old = _group_of(db, fid)
            if old == gid:
                self._confirm(db, gid)
                return
            if old is not None:
                confirmed = db.execute(
                    "SELECT confirmed FROM groups WHERE id = ?", (old,)
                ).fetchone()
                if confirmed and confirmed[0]:
                    db.execute(
                        "INSERT OR IGNORE INTO not_in (face, group_id) VALUES (?, ?)", (fid, old)
                    )
            db.execute("DELETE FROM not_in WHERE face = ? AND group_id = ?", (fid, gid))
            db.execute("UPDATE faces SET group_id = ?, pinned = 1 WHERE id = ?", (gid, fid))
            self._confirm(db, gid)
            self._log(db, "move", face=fid, group=gid, came_from=old)

    def not_person(self, face_id: int, group_id: int) -> None:
        """Mark a face as not the person of a group: it leaves the group (noise until the
        next run places it elsewhere) and never joins it again; the group's other faces are
        confirmed.

        Raises:
            GroupNotFoundError: no such face or group.
        """
        with self._write() as db:
            fid = _int(face_id, "face")
            gid = self._group_id(group_id)
            if _group_of(db, fid) == gid:
                db.execute(
                    "UPDATE faces SET group_id = NULL, pinned = 0, confidence = NULL WHERE id = ?",
                    (fid,),
                )
            self._confirm(db, gid)
            db.execute("INSERT OR IGNORE INTO not_in (face, group_id) VALUES (?, ?)", (fid, gid))
            self._log(db, "not_person", face=fid, group=gid)

    def corrections(self) -> list[dict[str, Any]]:
        """Every correction made, oldest first: ``{"seq", "at", "action", ...}``."""
        return [
            {"seq": s, "at": at, "action": a, **json.loads(d)}
            for s, at, a, d in self._read(
                "SELECT seq, at, action, detail FROM corrections ORDER BY seq"
            )
        ]

    def __repr__(self) -> str:
        return f"FaceGroups({str(self.folder)!r})"


def _group_of(db: sqlite3.Connection, face_id: int) -> int | None:
    """The group of face ``face_id`` (None: in no group); GroupNotFoundError if no such
    face."""
    row = db.execute("SELECT group_id FROM faces WHERE id = ?", (face_id,)).fetchone()
    if row is None:
        raise GroupNotFoundError(f"no face {face_id}", input="face")
    return row[0]


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise InvalidArgumentError(f"{what} id must be an int, got {value!r}", input=what)
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{what} id must be an int, got {value!r}", input=what) from None
    if out != value and not isinstance(value, str):
        raise InvalidArgumentError(f"{what} id must be an int, got {value!r}", input=what)
    return out


def _face(r: tuple) -> FaceInfo:
    box = tuple(json.loads(r[3])) if r[3] is not None else None
    return FaceInfo(
        id=int(r[0]),
        group=None if r[1] is None else int(r[1]),
        source=r[2],
        box=box,  # type: ignore[arg-type]
        quality=None if r[4] is None else float(r[4]),
        confidence=None if r[5] is None else float(r[5]),
        pinned=bool(r[6]),
    )


def _partition(group: np.ndarray) -> np.ndarray:
    """Group ids (-1 none) as a starting partition: each group's first row, noise alone."""
    n = len(group)
    out = np.arange(n, dtype=np.int64)
    grouped = np.flatnonzero(group >= 0)
    if len(grouped):
        _, first, inv = np.unique(group[grouped], return_index=True, return_inverse=True)
        out[grouped] = grouped[first][inv.reshape(-1)]
    return out


__all__ = ["DB_NAME", "FaceGroups", "FaceInfo", "GroupInfo", "NOISE"]
