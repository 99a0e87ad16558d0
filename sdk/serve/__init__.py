"""``npcface serve``: face recognition and galleries as an HTTP service (extra ``serve``).

Build the application with :func:`create_app` (a factory; nothing is built at import)::

    from npcface.serve import Settings, create_app
    app = create_app(Settings(gallery_root="galleries"))

:mod:`npcface.serve.wire` (the JSON forms of results and errors) needs only numpy, so
:mod:`npcface.client` uses it without FastAPI installed.
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
