"""The ``npcface`` command line. It calls the public API and prints; nothing else prints.

Subcommand groups live next to the code they drive and register themselves here through a
``register(subparsers)`` function; modules that need torch must not import it at module level.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from .errors import NpcfaceError

# (module, attribute) of every register(subparsers) hook, in help order.
_GROUPS = (
    ("npcface.cli_sdk", "register"),
    ("npcface.cli_gallery", "register"),
    ("npcface.eval.cli", "register"),
    ("npcface.serve.cli", "register"),
    ("npcface.training.cli", "register"),
    ("npcface.export.cli", "register"),
    ("npcface.cli_bench", "register"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="npcface",
        description="Face detection, verification, identification, training and export.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module_name, attr in _GROUPS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue  # that part is not written yet
            raise
        getattr(module, attr)(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point. Exit codes: 0 success (for ``verify``: same person), 1 negative answer, 2 error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except NpcfaceError as exc:
        print(f"npcface {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
