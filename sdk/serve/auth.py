"""API keys: stored as SHA-256 hashes, compared in constant time, with read or write rights.

The key file has one key per line, ``ROLE SHA256-HEX [LABEL]``, ``#`` starts a comment::

    write 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 enrolment-box
    read  60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752 kiosk

``read`` keys may detect, embed, verify, identify, search and list; ``write`` keys may also
create and delete galleries and enrol or delete identities. Keys are random tokens made by
``npcface serve --new-key``; being high-entropy, an unsalted SHA-256 is enough to store them.
Clients send ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path

from ..errors import ForbiddenError, InvalidArgumentError, UnauthorizedError

ROLES = ("read", "write")


@dataclass(frozen=True)
class Key:
    """One stored key: its role, SHA-256 (hex) and label."""

    role: str
    sha256: str
    label: str = ""


def hash_key(key: str) -> str:
    """SHA-256 (hex) of a key, as stored in the key file."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(role: str = "write", label: str = "") -> tuple[str, str]:
    """A fresh random key and its key-file line.

    Raises:
        InvalidArgumentError: unknown role.
    """
    if role not in ROLES:
        raise InvalidArgumentError(f"role must be read or write, not {role!r}", input="role")
    key = secrets.token_urlsafe(32)
    return key, f"{role} {hash_key(key)} {label}".rstrip()


class KeyRing:
    """The keys the service accepts. Empty means authentication is off."""

    def __init__(self, keys: list[Key]) -> None:
        self.keys = keys

    @classmethod
    def load(cls, path: str | Path | None) -> KeyRing:
        """Read a key file (``None``: no keys, authentication off).

        Raises:
            InvalidArgumentError: unreadable file, a malformed line, or no key in the file.
        """
        if path is None:
            return cls([])
        try:
            text = Path(path).read_text(encoding="utf-8-sig")  # Notepad writes a BOM
        except OSError as exc:
            raise InvalidArgumentError(f"{path}: cannot read key file: {exc}") from exc
        keys = []
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split(None, 2)
            ok = (
                len(parts) >= 2
                and parts[0] in ROLES
                and len(parts[1]) == 64
                and all(c in "0123456789abcdef" for c in parts[1].lower())
            )
            if not ok:
                raise InvalidArgumentError(
                    f"{path}:{n}: expected 'read|write SHA256-HEX [label]' "
                    "(make keys with `npcface serve --new-key`)",
                )
            keys.append(Key(parts[0], parts[1].lower(), parts[2] if len(parts) > 2 else ""))
        if not keys:
            raise InvalidArgumentError(f"{path}: no keys in the key file")
        return cls(keys)

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def role_of(self, presented: str | None) -> str | None:
        """The role of a presented key, or ``None``. Every stored hash is compared (in
        constant time), so the time taken does not tell which key came close."""
        if not presented:
            return None
        digest = hash_key(presented).encode()
        role = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.sha256.encode()):
                role = key.role
        return role

    def check(self, presented: str | None, need: str) -> str:
        """The role of ``presented`` if it allows ``need`` (``read`` or ``write``).

        Raises:
            UnauthorizedError: no or unknown key. ForbiddenError: a read-only key used to
                write.
        """
        if not self.enabled:
            return "write"
        role = self.role_of(presented)
        if role is None:
            msg = "invalid API key" if presented else "API key required"
            raise UnauthorizedError(f"{msg}: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'")
        if need == "write" and role != "write":
            raise ForbiddenError("this API key is read-only; writing needs a write key")
        return role
