"""Where a gallery lives: a local directory or a Milvus collection, named by one string.

=============================================  ===========================================
``staff`` or ``/data/staff``                   local gallery (SQLite + FAISS) in that folder
``milvus://host:19530/staff``                  collection ``staff`` on a Milvus server
``milvus-lite:///ABSOLUTE/PATH/staff.db``      embedded Milvus Lite in one file (tests, laptops)
=============================================  ===========================================

A Milvus Lite file may hold several galleries: ``milvus-lite:///p/f.db?collection=staff``
(default collection ``gallery``). A server that needs a token reads it from the
environment variable ``NPCFACE_MILVUS_TOKEN`` (never from the URI, so it stays out of logs);
``milvus+https://host:443/staff`` talks TLS.

Reads use Milvus's ``Strong`` consistency (a search sees every acknowledged write, from any
process); ``?consistency=Bounded`` (or ``Session``, ``Eventually``) trades that for speed:
on a Milvus 2.3 server a ``Strong`` search waits for the server's next time ticks (~0.4 s
with its defaults, one query at a time ~2 q/s), a ``Bounded`` one does not (~100 q/s), and
may miss writes of the last seconds (``common.gracefulTime``, 5 s by default). Measured in
``bench/gallery_scale.py --milvus``; see ``docs/scale-out.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from ..errors import GalleryError

LOCAL = "local"
MILVUS = "milvus"
MILVUS_LITE = "milvus-lite"
SCHEMES = {"milvus": "http", "milvus+http": "http", "milvus+https": "https"}
DEFAULT_LITE_COLLECTION = "gallery"
DEFAULT_PORT = 19530
TOKEN_ENV = "NPCFACE_MILVUS_TOKEN"
CONSISTENCY_LEVELS = ("Strong", "Bounded", "Session", "Eventually")
"""Milvus consistency levels a gallery URI may name (``?consistency=``, any case)."""
_COLLECTION_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,200}$")


@dataclass(frozen=True)
class GalleryLocation:
    """A parsed gallery address.

    Attributes:
        kind: ``local``, ``milvus`` or ``milvus-lite``.
        uri: the address as given.
        path: the gallery directory (local) or the Milvus Lite file; ``None`` for a server.
        server: ``http(s)://host:port`` of a Milvus server, else ``None``.
        collection: the Milvus collection name (``None`` for local galleries).
        consistency: the Milvus consistency level of reads the URI asks for
            (``?consistency=``), ``None`` for the default (``Strong``).
    """

    kind: str
    uri: str
    path: Path | None = None
    server: str | None = None
    collection: str | None = None
    consistency: str | None = None

    @property
    def is_milvus(self) -> bool:
        return self.kind in (MILVUS, MILVUS_LITE)

    @property
    def client_uri(self) -> str:
        """What :class:`pymilvus.MilvusClient` is given (a server URL or the Lite file)."""
        if self.kind == MILVUS:
            return str(self.server)
        if self.kind == MILVUS_LITE:
            return str(self.path)
        raise GalleryError(f"{self.uri}: a local gallery has no Milvus client URI")


def is_milvus_uri(value: object) -> bool:
    """Whether ``value`` names a Milvus gallery (cheap; no validation)."""
    if not isinstance(value, str):
        return False
    scheme = value.split("://", 1)[0].lower() if "://" in value else ""
    return scheme in SCHEMES or scheme == MILVUS_LITE


def parse_gallery_uri(value: str | Path) -> GalleryLocation:
    """Parse a gallery address (see the module docstring for the forms).

    Args:
        value: a path (local gallery) or a ``milvus://`` / ``milvus-lite://`` URI.

    Returns:
        The parsed location.

    Raises:
        GalleryError: an unknown scheme, a relative Milvus Lite path, a missing host or a
            collection name Milvus would refuse.
    """
    if isinstance(value, Path):
        return GalleryLocation(LOCAL, str(value), path=value)
    text = str(value).strip()
    if not text:
        raise GalleryError("empty gallery path")
    if "://" not in text:
        return GalleryLocation(LOCAL, text, path=Path(text))
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    query = parse_qs(parts.query)
    if scheme == MILVUS_LITE:
        if parts.netloc:
            raise GalleryError(
                f"{text}: a Milvus Lite URI takes an absolute file path after three slashes, "
                "e.g. milvus-lite:///home/me/faces.db"
            )
        if not parts.path.startswith("/"):
            raise GalleryError(f"{text}: the Milvus Lite file must be an absolute path")
        path = Path(parts.path)
        if path.suffix != ".db":
            raise GalleryError(f"{text}: a Milvus Lite file name must end in .db")
        name = _collection(query.get("collection", [DEFAULT_LITE_COLLECTION])[0], text)
        return GalleryLocation(
            MILVUS_LITE, text, path=path, collection=name, consistency=_consistency(query, text)
        )
    if scheme in SCHEMES:
        if not parts.hostname:
            raise GalleryError(f"{text}: missing host, e.g. milvus://localhost:19530/staff")
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise GalleryError(f"{text}: the port is not a number") from None
        name = parts.path.strip("/")
        if not name:
            raise GalleryError(
                f"{text}: name the gallery's collection after the address, e.g. "
                "milvus://localhost:19530/staff"
            )
        if parts.username or parts.password:
            raise GalleryError(
                f"{text}: credentials do not belong in the gallery URI; set {TOKEN_ENV} "
                "(user:password or an API key) in the environment"
            )
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        server = f"{SCHEMES[scheme]}://{host}:{port}"
        return GalleryLocation(
            MILVUS,
            text,
            server=server,
            collection=_collection(name, text),
            consistency=_consistency(query, text),
        )
    raise GalleryError(
        f"{text}: unknown gallery scheme {parts.scheme!r}; use a folder path, "
        "milvus://HOST:PORT/NAME or milvus-lite:///ABSOLUTE/PATH/FILE.db"
    )


def _consistency(query: dict[str, list[str]], uri: str) -> str | None:
    values = query.get("consistency")
    if not values:
        return None
    for level in CONSISTENCY_LEVELS:
        if values[-1].strip().lower() == level.lower():
            return level
    raise GalleryError(
        f"{uri}: consistency must be one of {', '.join(CONSISTENCY_LEVELS)}, not {values[-1]!r}"
    )


def _collection(name: str, uri: str) -> str:
    if not _COLLECTION_RE.match(name):
        raise GalleryError(
            f"{uri}: {name!r} is not a valid Milvus collection name (letters, digits and "
            "underscores, not starting with a digit)"
        )
    return name
