"""``npcface serve``: run the HTTP service (extra ``serve``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from ..cli_sdk import add_model_args, config_from_args
from ..errors import MissingExtraError

LOG_ENV = "NPCFACE_SERVE_LOG_LEVEL"


KEEP_ALIVE_S = 75
"""Seconds an idle kept-alive connection stays open (uvicorn's default, 5 s, closes the
connections of clients that pause between requests, and a request sent just as one closes
fails; 75 s is what common load balancers expect of their backends)."""


def register(sub: Any) -> None:
    s = sub.add_parser(
        "serve",
        help="face recognition and galleries as an HTTP service (OpenAPI at /docs)",
        description="Serve detection, verification and galleries over HTTP (routes under "
        "/v1, OpenAPI at /docs, a demo page at /). Needs: pip install 'npcface[serve]'.",
    )
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument(
        "--gallery-root",
        default="galleries",
        metavar="DIR",
        help="directory of the galleries, one sub-directory per name (default ./galleries)",
    )
    s.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    s.add_argument(
        "--api-key-file",
        default=None,
        metavar="FILE",
        help="hashed API keys, one 'read|write SHA256 [label]' per line (default: no auth)",
    )
    s.add_argument(
        "--new-key",
        choices=("read", "write"),
        default=None,
        help="print a new API key and its key-file line, then exit",
    )
    s.add_argument("--max-images", type=int, default=32, help="images per request")
    s.add_argument("--max-body-mb", type=float, default=20.0, help="request body limit (MiB)")
    s.add_argument("--timeout", type=float, default=60.0, help="request timeout (s)")
    s.add_argument("--max-streams", type=int, default=4, help="stream monitors at once (default 4)")
    s.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow this origin by CORS (repeatable; default: no CORS)",
    )
    add_model_args(s)
    s.set_defaults(func=_serve)


def settings_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~npcface.serve.Settings` the options describe."""
    from .settings import Settings

    return Settings(
        gallery_root=Path(args.gallery_root),
        api_key_file=Path(args.api_key_file) if args.api_key_file else None,
        pipeline=config_from_args(args),
        max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        max_images=args.max_images,
        request_timeout_s=args.timeout,
        workers=args.workers,
        cors_origins=tuple(args.cors_origin),
        max_streams=args.max_streams,
    )


def _serve(args: argparse.Namespace) -> int:
    if args.new_key:
        from .auth import new_key

        key, line = new_key(args.new_key)
        print(f"key:  {key}")
        print(f"line: {line}   (append it to the --api-key-file; keep the key secret)")
        return 0
    for module in ("fastapi", "uvicorn", "multipart", "prometheus_client"):
        try:
            __import__(module)
        except ImportError:
            raise MissingExtraError("npcface serve", "serve", module) from None
    import uvicorn

    from .app import MASTER_ENV, SETTINGS_ENV, create_app, settings_to_env
    from .middleware import setup_logging

    settings = settings_from_args(args)
    create_app(settings)  # fails fast on a bad key file, before any worker starts
    os.environ[SETTINGS_ENV] = settings_to_env(settings)
    os.environ[MASTER_ENV] = str(os.getpid())  # workers end when it does
    level = logging.getLogger().getEffectiveLevel()
    os.environ[LOG_ENV] = str(level)
    setup_logging(level)
    print(
        f"npcface serve: http://{args.host}:{args.port}/ (API docs at /docs), "
        f"galleries in {settings.gallery_root}",
        file=sys.stderr,
    )
    uvicorn.run(
        "npcface.serve.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=None,
        log_level=level,
        access_log=False,  # our own access line carries the request id
        timeout_keep_alive=KEEP_ALIVE_S,
    )
    return 0
