"""``npcface serve``: face recognition and galleries as an HTTP service (extra ``serve``).

Build the application with :func:`create_app` (a factory; nothing is built at import)::

    from npcface.serve import Settings, create_app
    app = create_app(Settings(gallery_root="galleries"))

The JSON forms of results and errors live in :mod:`npcface.wire`, which the service and
:mod:`npcface.client` share (it needs only numpy).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Settings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "Settings":
        from .settings import Settings

        return Settings
    raise AttributeError(f"module 'npcface.serve' has no attribute {name!r}")
