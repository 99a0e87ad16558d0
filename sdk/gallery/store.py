"""The gallery's source of truth: one SQLite database holding identities, templates and vectors.

Everything a gallery knows is here; the FAISS index next to it is a cache that can always be
rebuilt from this file. Rules:

* WAL journal, ``synchronous=FULL``: a method that writes returns only after its transaction
  has committed, so an acknowledged template survives a crash of the process (or machine).
* Vectors are stored as raw little-endian ``float32`` or ``float16`` blobs and read back with
  ``np.frombuffer``; metadata as JSON text. Nothing is ever pickled.
* Template and identity ids come from ``AUTOINCREMENT`` and are never reused, so "the index
  covers every template up to id L" is a meaningful statement even after deletions.
* Every deletion of a template is logged in ``deletions`` with an increasing sequence number,
  so an index saved before the deletion can be caught up.
* The schema carries a version; a database written by a newer npcface is refused, not guessed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import (
    GalleryArgumentError,
    GalleryCorruptError,
    GalleryError,
    GalleryExistsError,
    GalleryNotFoundError,
    IdentityNotFoundError,
    RequestKeyReusedError,
)
from ..fsutil import fsync_dir, fsync_file
from .checks import NAME_FORM

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
"""Version of the tables below. Bump it (and add a migration) whenever they change in a way
an older npcface could not read. (:data:`_REQUESTS` is additive: older versions ignore it.)"""

REQUEST_TTL_S = 24 * 3600.0
"""How long the outcome of an :meth:`Store.add_once` request key is kept (a retry after
that is a new request; Stripe's idempotency keys last 24 hours too)."""


VECTOR_DTYPES = ("float32", "float16")
"""How vectors may be stored. float16 halves the database; search uses float32 either way."""

_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE identities (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    metadata TEXT,
    created REAL NOT NULL
);
CREATE TABLE templates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    identity_id INTEGER NOT NULL REFERENCES identities(id),
    vector BLOB NOT NULL,
    source TEXT,
    content_hash TEXT,
    created REAL NOT NULL
);
CREATE INDEX templates_by_identity ON templates(identity_id);
CREATE INDEX templates_by_hash ON templates(content_hash) WHERE content_hash IS NOT NULL;
CREATE TABLE deletions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    template_id INTEGER NOT NULL
);
"""

_REQUESTS = """
CREATE TABLE IF NOT EXISTS requests (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    result TEXT NOT NULL,
    created REAL NOT NULL
);
"""
"""Outcomes of :meth:`Store.add_once` by request key, written in the same transaction as
the templates; a retry with the key gets the first outcome and writes nothing, also after
the identity was removed (a late retry must not bring it back). A record holds no name and
no vector: the key, a SHA-256 of the request, and template ids."""


@dataclass(frozen=True)
class AddOnce:
    """What :meth:`Store.add_once` did.

    Attributes:
        template_ids: (n,) the template of each input row: new, or the identity's template
            that holds that content already.
        added: (n,) True where the row was stored now.
        replayed: the request key had committed before; nothing was written now.
        new_ids, new_owners: (m,) template and identity ids stored now, in id order.
        new_rows: (m,) indexes of the input rows stored now.
    """

    template_ids: tuple[int, ...]
    added: tuple[bool, ...]
    replayed: bool
    new_ids: np.ndarray
    new_owners: np.ndarray
    new_rows: np.ndarray


_READ_CHUNK = 65_536
ERASE_WAIT_S = 30.0
"""How long :meth:`Store.erase` waits for readers of older snapshots."""


@dataclass(frozen=True)
class StoreCounts:
    """Sizes of a store: live identities and templates, and the high-water marks of the ids."""

    identities: int
    templates: int
    max_template_id: int
    max_deletion_seq: int


class Store:
    """A gallery's SQLite database. Use :meth:`create` or :meth:`open`, not the constructor.

    Not safe for concurrent use from several threads; :class:`~npcface.gallery.Gallery`
    serialises access with a lock. Several processes may read while one writes (WAL).
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, readonly: bool) -> None:
        self.path = path
        self._conn = conn
        self.readonly = readonly
        self._meta: dict[str, Any] = {}
        self._snapshot_depth = 0
        self._load_meta()
        self.dim = int(self._meta["dim"])
        self.dtype = np.dtype(self._meta["dtype"]).newbyteorder("<")
        self._row_bytes = self.dim * self.dtype.itemsize

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(cls, path: str | Path, meta: Mapping[str, Any]) -> Store:
        """Create a new database at ``path`` with the given metadata.

        Args:
            path: file to create; must not exist.
            meta: JSON-serialisable settings; must contain ``dim`` and ``dtype``.

        Raises:
            GalleryError: the file exists or the settings are invalid.
        """
        path = Path(path)
        if path.exists():
            raise GalleryExistsError(f"{path}: already exists; open it instead of creating it")
        if meta.get("dtype") not in VECTOR_DTYPES:
            raise GalleryError(
                f"vector dtype must be one of {', '.join(VECTOR_DTYPES)}, not {meta.get('dtype')!r}"
            )
        meta = {**meta, "names": NAME_FORM}
        # build the database under a temporary name and rename it into place, so a crash
        # during creation never leaves a half-made gallery behind
        tmp = path.with_name(f".{path.name}.creating")
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)
        conn = _connect(tmp, readonly=False)
        try:
            conn.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}{_REQUESTS}COMMIT;")
            with _transaction(conn, tmp):
                conn.execute("INSERT INTO schema_version(version) VALUES (?)", (SCHEMA_VERSION,))
                conn.executemany(
                    "INSERT INTO meta(key, value) VALUES (?, ?)",
                    [(k, json.dumps(v)) for k, v in meta.items()],
                )
        finally:
            conn.close()
        fsync_file(tmp)
        tmp.replace(path)
        fsync_dir(path.parent)
        conn = _connect(path, readonly=False)
        return cls(path, conn, readonly=False)

    @classmethod
    def open(cls, path: str | Path, readonly: bool = False) -> Store:
        """Open an existing database and check its schema version.

        Raises:
            GalleryError: the file does not exist.
            GalleryCorruptError: the file is not a gallery database, is damaged, or was
                written by a newer npcface.
        """
        path = Path(path)
        if not path.is_file():
            raise GalleryNotFoundError(f"{path}: no gallery database here")
        conn = _connect(path, readonly=readonly)
        try:
            version = _schema_version(conn, path)
            if version > SCHEMA_VERSION:
                raise GalleryCorruptError(
                    f"{path}: gallery schema version {version} was written by a newer npcface "
                    f"(this one reads up to {SCHEMA_VERSION}); upgrade npcface to open it"
                )
            if version < 1:
                raise GalleryCorruptError(f"{path}: invalid gallery schema version {version}")
            store = cls(path, conn, readonly=readonly)
            if not readonly:
                store._upgrade()
            return store
        except BaseException:
            conn.close()
            raise

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()

    # --------------------------------------------------------------------- meta
    def _load_meta(self) -> None:
        rows = self._query("SELECT key, value FROM meta")
        try:
            self._meta = {k: json.loads(v) for k, v in rows}
        except json.JSONDecodeError as exc:
            raise GalleryCorruptError(f"{self.path}: unreadable gallery settings: {exc}") from exc
        for key in ("dim", "dtype"):
            if key not in self._meta:
                raise GalleryCorruptError(f"{self.path}: gallery settings lack {key!r}")

    def _upgrade(self) -> None:
        """Bring a gallery written by an older npcface up to date (writers only): the
        request table, and identity names in :data:`NAME_FORM`."""
        with _transaction(self._conn, self.path):
            self._conn.execute(_REQUESTS)
        if self._meta.get("names") != NAME_FORM:
            self.normalize_names()

    def normalize_names(self) -> int:
        """Rename identities to :data:`NAME_FORM`; where that name exists already, move the
        templates over (as new templates, so readers follow) and merge the metadata (the
        existing identity's values win). Returns the number of identities changed."""
        self._writable()
        changed = 0
        conn = self._conn
        with _transaction(conn, self.path):
            rows = conn.execute("SELECT id, name, metadata FROM identities ORDER BY id").fetchall()
            for ident, name, meta in rows:
                form = unicodedata.normalize(NAME_FORM, name)
                if form == name:
                    continue
                changed += 1
                target = conn.execute(
                    "SELECT id FROM identities WHERE name = ?", (form,)
                ).fetchone()
                if target is None:
                    conn.execute("UPDATE identities SET name = ? WHERE id = ?", (form, ident))
                    continue
                moved = conn.execute(
                    "SELECT id, vector, source, content_hash, created FROM templates "
                    "WHERE identity_id = ? ORDER BY id",
                    (ident,),
                ).fetchall()
                conn.executemany(
                    "INSERT INTO templates(identity_id, vector, source, content_hash, created) "
                    "VALUES (?, ?, ?, ?, ?)",
                    ((target[0], v, src, h, t) for _, v, src, h, t in moved),
                )
                self._log_deletions(np.array([r[0] for r in moved], dtype=np.int64))
                conn.execute("DELETE FROM templates WHERE identity_id = ?", (ident,))
                if meta:
                    current = self.identity_metadata(form) or {}
                    self._merge_metadata(target[0], form, {**json.loads(meta), **current})
                conn.execute("DELETE FROM identities WHERE id = ?", (ident,))
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('names', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (json.dumps(NAME_FORM),),
            )
        self._meta["names"] = NAME_FORM
        if changed:
            log.warning(
                "%s: %d identity names rewritten in Unicode %s", self.path, changed, NAME_FORM
            )
        return changed

    def reload_meta(self) -> None:
        """Re-read the settings (another process may have changed them)."""
        self._load_meta()

    def meta(self, key: str, default: Any = None) -> Any:
        """A stored setting (JSON value), or ``default``."""
        return self._meta.get(key, default)

    def set_meta(self, **values: Any) -> None:
        """Store settings (JSON-serialisable values) in one transaction."""
        self._writable()
        with _transaction(self._conn, self.path):
            self._conn.executemany(
                "INSERT INTO meta(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [(k, json.dumps(v)) for k, v in values.items()],
            )
        self._meta.update(values)

    # ------------------------------------------------------------------- writes
    def add_templates(
        self,
        identities: Sequence[str],
        vectors: np.ndarray,
        sources: Sequence[str | None] | None = None,
        content_hashes: Sequence[str | None] | None = None,
        metadata: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Insert templates (and their identities when new) in one transaction.

        Args:
            identities: (n,) identity name of each vector.
            vectors: (n, dim) vectors, already in the form to store (normalised if needed).
            sources: optional (n,) free text per template, e.g. the image path.
            content_hashes: optional (n,) content hash per template, for resumable enrolment.
            metadata: identity name -> dict merged into that identity's metadata.

        Returns:
            ``(template_ids, identity_ids)``, both (n,) int64; template ids increase in input
            order. They exist once this method returns (the transaction has committed).
        """
        self._writable()
        n = len(identities)
        if vectors.shape != (n, self.dim):
            raise GalleryError(f"expected {n} vectors of dimension {self.dim}, got {vectors.shape}")
        sources = list(sources) if sources is not None else [None] * n
        content_hashes = list(content_hashes) if content_hashes is not None else [None] * n
        if len(sources) != n or len(content_hashes) != n:
            raise GalleryArgumentError("sources and content_hashes must have one entry per vector")
        with _transaction(self._conn, self.path):
            return self._insert(identities, vectors, sources, content_hashes, metadata)

    def _insert(
        self,
        identities: Sequence[str],
        vectors: np.ndarray,
        sources: Sequence[str | None],
        content_hashes: Sequence[str | None],
        metadata: Mapping[str, Mapping[str, Any]] | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The inserts of :meth:`add_templates`, inside the caller's transaction."""
        n = len(identities)
        blobs = np.ascontiguousarray(vectors, dtype=self.dtype)
        now = time.time()
        names = list(dict.fromkeys(identities))
        ident_ids = self._ensure_identities(names, now)
        for name, extra in (metadata or {}).items():
            self._merge_metadata(ident_ids[name], name, extra)
        start = self._sequence("templates")
        ids = np.arange(start + 1, start + 1 + n, dtype=np.int64)
        self._conn.executemany(
            "INSERT INTO templates(id, identity_id, vector, source, content_hash, created) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                (
                    int(ids[i]),
                    ident_ids[identities[i]],
                    blobs[i].tobytes(),
                    sources[i],
                    content_hashes[i],
                    now,
                )
                for i in range(n)
            ),
        )
        return ids, np.array([ident_ids[name] for name in identities], dtype=np.int64)

    def add_once(
        self,
        identity: str,
        vectors: np.ndarray,
        content_hashes: Sequence[str],
        sources: Sequence[str | None] | None,
        metadata: Mapping[str, Any] | None,
        request: tuple[str, str] | None,
    ) -> AddOnce:
        """Store the rows whose content ``identity`` does not hold yet, exactly once per
        request key, in one transaction.

        Args:
            identity: the identity (created if new).
            vectors: (n, dim) vectors in the form to store.
            content_hashes: (n,) content hash of each row (a row repeated within the call is
                stored once).
            sources: optional (n,) text per row.
            metadata: merged into the identity's metadata (when anything is stored).
            request: ``(key, fingerprint)``: when ``key`` committed before, its outcome is
                returned and nothing is written.

        Raises:
            GalleryArgumentError: ``key`` was used before for a request of another
                fingerprint.
        """
        self._writable()
        n = len(content_hashes)
        sources = list(sources) if sources is not None else [None] * n
        conn = self._conn
        with _transaction(conn, self.path):
            if request is not None:
                done = self._recall(*request)
                if done is not None:
                    return done
            held = dict(self._identity_hashes(identity, content_hashes))
            rows: list[int] = []
            for i, h in enumerate(content_hashes):
                if h not in held:
                    held[h] = -1 - len(rows)  # placeholder: the k-th new row
                    rows.append(i)
            if rows:
                new_ids, owners = self._insert(
                    [identity] * len(rows),
                    vectors[rows],
                    [sources[i] for i in rows],
                    [content_hashes[i] for i in rows],
                    {identity: dict(metadata)} if metadata else None,
                )
            else:
                new_ids = owners = np.zeros(0, np.int64)
            tids = tuple(
                int(new_ids[-1 - held[h]]) if held[h] < 0 else int(held[h]) for h in content_hashes
            )
            stored = set(rows)
            added = tuple(i in stored for i in range(n))
            if request is not None:
                conn.execute(
                    "INSERT INTO requests(key, fingerprint, result, created) VALUES (?, ?, ?, ?)",
                    (
                        request[0],
                        request[1],
                        json.dumps({"template_ids": tids, "added": added}),
                        time.time(),
                    ),
                )
                conn.execute(
                    "DELETE FROM requests WHERE created < ?", (time.time() - REQUEST_TTL_S,)
                )
        return AddOnce(tids, added, False, new_ids, owners, np.array(rows, dtype=np.int64))

    def _recall(self, key: str, fingerprint: str) -> AddOnce | None:
        row = self._conn.execute(
            "SELECT fingerprint, result, created FROM requests WHERE key = ?", (key,)
        ).fetchone()
        if row is None or row[2] < time.time() - REQUEST_TTL_S:
            return None
        if row[0] != fingerprint:
            raise RequestKeyReusedError(
                f"request key {key!r} was used before for another request (other identity, "
                "images, embeddings or metadata); use a new key for a new request"
            )
        result = json.loads(row[1])
        empty = np.zeros(0, np.int64)
        return AddOnce(
            tuple(int(t) for t in result["template_ids"]),
            tuple(bool(a) for a in result["added"]),
            True,
            empty,
            empty,
            empty,
        )

    def _identity_hashes(self, identity: str, hashes: Sequence[str]) -> list[tuple[str, int]]:
        """(content hash, template id) of ``identity``'s templates among ``hashes``."""
        out: list[tuple[str, int]] = []
        for chunk in _chunks(list(dict.fromkeys(hashes)), 500):
            marks = ",".join("?" * len(chunk))
            out.extend(
                (h, int(t))
                for t, h in self._conn.execute(
                    "SELECT t.id, t.content_hash FROM templates t JOIN identities i "
                    f"ON i.id = t.identity_id WHERE i.name = ? AND t.content_hash IN ({marks}) "
                    "ORDER BY t.id DESC",
                    (identity, *chunk),
                )
            )
        return out

    def _ensure_identities(self, names: Sequence[str], now: float) -> dict[str, int]:
        conn = self._conn
        conn.executemany(
            "INSERT OR IGNORE INTO identities(name, metadata, created) VALUES (?, NULL, ?)",
            ((name, now) for name in names),
        )
        found: dict[str, int] = {}
        for chunk in _chunks(list(names), 500):
            marks = ",".join("?" * len(chunk))
            for row_id, name in conn.execute(
                f"SELECT id, name FROM identities WHERE name IN ({marks})", chunk
            ):
                found[name] = int(row_id)
        return found

    def _merge_metadata(self, identity_id: int, name: str, extra: Mapping[str, Any]) -> None:
        row = self._conn.execute(
            "SELECT metadata FROM identities WHERE id = ?", (identity_id,)
        ).fetchone()
        current = json.loads(row[0]) if row and row[0] else {}
        current.update(extra)
        try:
            text = json.dumps(current, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise GalleryArgumentError(
                f"metadata of identity {name!r} must be JSON-serialisable: {exc}"
            ) from exc
        self._conn.execute("UPDATE identities SET metadata = ? WHERE id = ?", (text, identity_id))

    def remove_identities(self, names: Sequence[str]) -> np.ndarray:
        """Delete identities and all their templates in one transaction; log the deletions.

        Returns:
            The deleted template ids.

        Raises:
            GalleryError: a name is unknown (nothing is deleted then).
        """
        self._writable()
        conn = self._conn
        with _transaction(conn, self.path):
            rows = []
            for name in dict.fromkeys(names):
                row = conn.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
                if row is None:
                    raise IdentityNotFoundError(f"{self.path.parent}: no identity named {name!r}")
                rows.append(row)
            ids = np.array(
                [
                    r[0]
                    for row in rows
                    for r in conn.execute("SELECT id FROM templates WHERE identity_id = ?", row)
                ],
                dtype=np.int64,
            )
            self._log_deletions(ids)
            conn.executemany("DELETE FROM templates WHERE identity_id = ?", rows)
            conn.executemany("DELETE FROM identities WHERE id = ?", rows)
        return ids

    def remove_templates(self, template_ids: Sequence[int]) -> np.ndarray:
        """Delete templates by id (identities left without templates are deleted too).

        Returns:
            The ids that existed and were deleted.
        """
        self._writable()
        conn = self._conn
        wanted = [int(t) for t in template_ids]
        with _transaction(conn, self.path):
            existing: list[int] = []
            owners: set[int] = set()
            for chunk in _chunks(wanted, 500):
                marks = ",".join("?" * len(chunk))
                for tid, owner in conn.execute(
                    f"SELECT id, identity_id FROM templates WHERE id IN ({marks})", chunk
                ):
                    existing.append(int(tid))
                    owners.add(int(owner))
            ids = np.array(sorted(existing), dtype=np.int64)
            self._log_deletions(ids)
            for chunk in _chunks([int(i) for i in ids], 500):
                marks = ",".join("?" * len(chunk))
                conn.execute(f"DELETE FROM templates WHERE id IN ({marks})", chunk)
            for owner in owners:
                conn.execute(
                    "DELETE FROM identities WHERE id = ? AND NOT EXISTS "
                    "(SELECT 1 FROM templates WHERE identity_id = ?)",
                    (owner, owner),
                )
        return ids

    def erase(self) -> None:
        """Make deleted rows unrecoverable from the gallery's files: deleted content is
        zeroed in place (``secure_delete``, set on every writable connection) and the
        write-ahead log, which still holds the pages as they were, is checkpointed into the
        database and truncated to zero bytes. Waits for readers in other processes to leave
        older snapshots (their reads are short).

        Raises:
            GalleryError: a reader kept an old snapshot past the busy timeout.
        """
        self._writable()
        deadline = time.monotonic() + ERASE_WAIT_S
        while True:
            try:
                busy, _, _ = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.DatabaseError as exc:
                raise _wrap(exc, self.path) from exc
            if not busy:
                return
            if time.monotonic() > deadline:
                raise GalleryError(
                    f"{self.path}: readers kept the write-ahead log busy for {ERASE_WAIT_S:g} s; "
                    "the deletion is committed but its old pages are still in the log"
                )
            time.sleep(0.01)

    def _log_deletions(self, ids: np.ndarray) -> None:
        self._conn.executemany(
            "INSERT INTO deletions(template_id) VALUES (?)", ((int(i),) for i in ids)
        )

    def prune_deletions(self, up_to_seq: int) -> None:
        """Forget logged deletions with ``seq <= up_to_seq`` (the index has absorbed them)."""
        self._writable()
        with _transaction(self._conn, self.path):
            self._conn.execute("DELETE FROM deletions WHERE seq <= ?", (int(up_to_seq),))

    def vacuum(self) -> None:
        """Rewrite the database file to give the space of deleted rows back to the disk."""
        self._writable()
        try:
            self._conn.execute("VACUUM")
        except sqlite3.DatabaseError as exc:
            raise _wrap(exc, self.path) from exc

    # ---------------------------------------------------------------- snapshots
    @contextlib.contextmanager
    def read_snapshot(self) -> Iterator[None]:
        """Every read inside the block sees one committed state of the database.

        Opens a read transaction (WAL: commits of other connections made meanwhile stay
        invisible until the block ends). Re-entrant; no writes inside the block.
        """
        if self._snapshot_depth:
            self._snapshot_depth += 1
            try:
                yield
            finally:
                self._snapshot_depth -= 1
            return
        try:
            self._conn.execute("BEGIN")
            self._conn.execute("SELECT seq FROM sqlite_sequence LIMIT 1").fetchall()  # pin
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            raise _wrap(exc, self.path) from exc
        self._snapshot_depth = 1
        try:
            yield
        finally:
            self._snapshot_depth = 0
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("COMMIT")

    def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version``: changes whenever *another* connection commits.

        One cheap call; inside :meth:`read_snapshot` it describes the pinned state.
        """
        try:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            raise _wrap(exc, self.path) from exc

    def deletion_log_complete_after(self, seq: int) -> bool:
        """Whether every deletion after sequence number ``seq`` is still logged.

        :meth:`prune_deletions` forgets deletions once the saved index has absorbed them; a
        reader whose index is older than that cannot catch up from the log and must compare
        its ids with the live templates instead.
        """
        max_seq = self._sequence("deletions")
        if max_seq <= seq:
            return True
        (first,) = self._query("SELECT MIN(seq) FROM deletions")[0]
        return first is not None and int(first) <= seq + 1

    # -------------------------------------------------------------------- reads
    def counts(self) -> StoreCounts:
        """Numbers of live identities and templates and the id high-water marks."""
        (identities,) = self._query("SELECT COUNT(*) FROM identities")[0]
        (templates,) = self._query("SELECT COUNT(*) FROM templates")[0]
        return StoreCounts(
            identities=int(identities),
            templates=int(templates),
            max_template_id=self._sequence("templates"),
            max_deletion_seq=self._sequence("deletions"),
        )

    def high_water(self) -> tuple[int, int]:
        """(highest template id ever assigned, highest deletion sequence number): cheap."""
        return self._sequence("templates"), self._sequence("deletions")

    def template_owners(self) -> tuple[np.ndarray, np.ndarray]:
        """(template ids, identity ids) of every live template, both int64, by template id."""
        parts = []
        try:
            cur = self._conn.execute("SELECT id, identity_id FROM templates ORDER BY id")
            while rows := cur.fetchmany(_READ_CHUNK):
                parts.append(np.array(rows, dtype=np.int64))
        except sqlite3.DatabaseError as exc:
            raise _wrap(exc, self.path) from exc
        if not parts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        arr = np.concatenate(parts)
        return arr[:, 0].copy(), arr[:, 1].copy()

    def iter_vectors(
        self, after_id: int = 0, upto: int | None = None, chunk: int = _READ_CHUNK
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Live templates with ``after_id < id <= upto`` in id order, ``chunk`` at a time, as
        (template ids int64, identity ids int64, vectors float32)."""
        last = int(after_id)
        upto = (1 << 62) if upto is None else int(upto)
        while True:
            rows = self._query(
                "SELECT id, identity_id, vector FROM templates WHERE id > ? AND id <= ? "
                "ORDER BY id LIMIT ?",
                (last, upto, chunk),
            )
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            owners = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
            yield ids, owners, self._decode([r[2] for r in rows], ids)
            last = int(ids[-1])

    def vectors(self, template_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Vectors of the given live template ids, float32, in the order given."""
        wanted = [int(t) for t in template_ids]
        found: dict[int, bytes] = {}
        for chunk in _chunks(wanted, 500):
            marks = ",".join("?" * len(chunk))
            for tid, blob in self._query(
                f"SELECT id, vector FROM templates WHERE id IN ({marks})", chunk
            ):
                found[int(tid)] = blob
        missing = [t for t in wanted if t not in found]
        if missing:
            raise IdentityNotFoundError(f"{self.path}: no template with id {missing[0]}")
        ids = np.array(wanted, dtype=np.int64)
        return self._decode([found[t] for t in wanted], ids)

    def _decode(self, blobs: list[bytes], ids: np.ndarray) -> np.ndarray:
        bad = [int(ids[i]) for i, b in enumerate(blobs) if len(b) != self._row_bytes]
        if bad:
            raise GalleryCorruptError(
                f"{self.path}: template {bad[0]} has a vector of the wrong size "
                f"(expected {self.dim} x {self.dtype.name}); the database is damaged"
            )
        flat = np.frombuffer(b"".join(blobs), dtype=self.dtype)
        return flat.reshape(len(blobs), self.dim).astype(np.float32)

    def deletions_after(self, seq: int) -> np.ndarray:
        """Template ids deleted after deletion sequence number ``seq``."""
        rows = self._query("SELECT template_id FROM deletions WHERE seq > ? ORDER BY seq", (seq,))
        return np.array([r[0] for r in rows], dtype=np.int64)

    def identity_records(self, identity_ids: Sequence[int]) -> dict[int, tuple[str, dict | None]]:
        """identity id -> (name, metadata dict or None) for the ids that exist."""
        out: dict[int, tuple[str, dict | None]] = {}
        for chunk in _chunks([int(i) for i in identity_ids], 500):
            marks = ",".join("?" * len(chunk))
            for row_id, name, meta in self._query(
                f"SELECT id, name, metadata FROM identities WHERE id IN ({marks})", chunk
            ):
                out[int(row_id)] = (name, json.loads(meta) if meta else None)
        return out

    def identity_metadata(self, name: str) -> dict[str, Any] | None:
        """The metadata of identity ``name`` ({} when it has none; None if unknown)."""
        rows = self._query("SELECT metadata FROM identities WHERE name = ?", (name,))
        if not rows:
            return None
        return json.loads(rows[0][0]) if rows[0][0] else {}

    def identity_names(self) -> list[str]:
        """Every identity name, in enrolment order."""
        return [r[0] for r in self._query("SELECT name FROM identities ORDER BY id")]

    def template_counts(self) -> list[tuple[str, int]]:
        """(identity name, number of templates) for every identity, in enrolment order."""
        return [
            (name, int(n))
            for name, n in self._query(
                "SELECT i.name, COUNT(t.id) FROM identities i "
                "LEFT JOIN templates t ON t.identity_id = i.id GROUP BY i.id ORDER BY i.id"
            )
        ]

    def has_identity(self, name: str) -> bool:
        return bool(self._query("SELECT 1 FROM identities WHERE name = ?", (name,)))

    def identity_templates(self, name: str) -> list[tuple[int, str | None, str | None]]:
        """(template id, source, content hash) of an identity's templates; [] if unknown."""
        return [
            (int(t), s, h)
            for t, s, h in self._query(
                "SELECT t.id, t.source, t.content_hash FROM templates t "
                "JOIN identities i ON i.id = t.identity_id WHERE i.name = ? ORDER BY t.id",
                (name,),
            )
        ]

    def content_hashes(self) -> set[str]:
        """Every content hash recorded with a live template."""
        return {
            r[0]
            for r in self._query(
                "SELECT content_hash FROM templates WHERE content_hash IS NOT NULL"
            )
        }

    def sample_ids(self, n: int, seed: int = 0) -> np.ndarray:
        """Up to ``n`` live template ids drawn uniformly without replacement, sorted."""
        ids, _ = self.template_owners()
        if ids.size <= n:
            return ids
        rng = np.random.default_rng(seed)
        return np.sort(rng.choice(ids, size=n, replace=False))

    # ---------------------------------------------------------------- internals
    def _sequence(self, table: str) -> int:
        row = self._conn.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)
        ).fetchone()
        return int(row[0]) if row else 0

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise _wrap(exc, self.path) from exc

    def _writable(self) -> None:
        if self.readonly:
            raise GalleryError(f"{self.path.parent}: gallery opened read-only; open it writable")


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    try:
        if readonly:
            conn = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
            )
        else:
            conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 10000")
        if not readonly:
            conn.execute("PRAGMA secure_delete = ON")  # deleted content zeroed, not left behind
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":  # pragma: no cover - e.g. network file systems
                log.warning("%s: SQLite refused WAL mode (%s); using it anyway", path, mode)
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn
    except sqlite3.DatabaseError as exc:
        raise _wrap(exc, path) from exc


def _schema_version(conn: sqlite3.Connection, path: Path) -> int:
    try:
        table = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        ).fetchone()
        if table is None:
            raise GalleryCorruptError(
                f"{path}: an SQLite file, but not an npcface gallery (no schema_version table)"
            )
        row = conn.execute("SELECT version FROM schema_version").fetchone()
    except sqlite3.DatabaseError as exc:
        raise _wrap(exc, path) from exc
    if row is None:
        raise GalleryCorruptError(f"{path}: gallery schema version is missing")
    return int(row[0])


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on error), errors made typed."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            raise _wrap(exc, self.path) from exc
        return self.conn

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
            except sqlite3.DatabaseError as err:
                self.conn.execute("ROLLBACK")
                raise _wrap(err, self.path) from err
        else:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.DatabaseError):
                raise _wrap(exc, self.path) from exc


_TRANSIENT = {5: "SQLITE_BUSY", 6: "SQLITE_LOCKED", 8: "SQLITE_READONLY", 14: "SQLITE_CANTOPEN"}
"""SQLite's primary result codes of conditions that are no damage to the database."""


def _wrap(exc: sqlite3.DatabaseError, path: Path) -> GalleryError:
    text = str(exc)
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+; 3.10 has only the text
    transient = (
        (code & 0xFF) in _TRANSIENT
        if code is not None
        else any(w in text for w in ("locked", "readonly", "unable to open"))
    )
    if isinstance(exc, sqlite3.OperationalError) and transient:
        return GalleryError(f"{path}: {text}")
    if isinstance(exc, sqlite3.IntegrityError):
        return GalleryError(f"{path}: {text}")
    return GalleryCorruptError(
        f"{path}: the gallery database is damaged or not a database ({text}); restore it from a "
        "backup (the index file alone cannot rebuild it)"
    )


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
