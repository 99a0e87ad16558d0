"""The ``npcface`` command line. It calls the public API and prints; nothing else prints.

Subcommand groups live next to the code they drive and register themselves here through a
``register(subparsers)`` function; modules that need torch must not import it at module level.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from .errors import NpcfaceError

# (module, attribute, commands) of every register(subparsers) hook, in help order. A command
# line naming one of the commands builds that group's parser only (importing every group
# cost about 20 ms of each start); anything else (help, a typo) builds them all.
_GROUPS = (
    ("npcface.cli_sdk", "register", ("verify", "detect")),
    ("npcface.cli_gallery", "register", ("enroll", "identify", "gallery")),
    ("npcface.cli_video", "register", ("video",)),
    ("npcface.cli_cluster", "register", ("cluster",)),
    ("npcface.eval.cli", "register", ("eval", "calibrate")),
    ("npcface.serve.cli", "register", ("serve",)),
    ("npcface.training.cli", "register", ("train",)),
    ("npcface.export.cli", "register", ("export",)),
    ("npcface.cli_bench", "register", ("bench",)),
)


def _command_of(argv: Sequence[str]) -> str | None:
    """The command word of a command line (the first argument that is not an option)."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``npcface`` parser: every command group, or only the one that has ``command``."""
    parser = argparse.ArgumentParser(
        prog="npcface",
        description="Face detection, verification, identification, training and export.",
        epilog="Exit status: 0 success (verify: the same person; identify: every probe "
        "matched), 1 a negative answer (different people; a probe without a match), 2 an "
        "error (one line on stderr), 130 interrupted.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    known = {c for *_, commands in _GROUPS for c in commands}
    for module_name, attr, commands in _GROUPS:
        if command in known and command not in commands:
            continue
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
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_of(argv))
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


FAST_EXIT = frozenset({"verify", "detect", "identify"})
"""Commands whose process ends at once when their answer is out (:func:`run`), skipping the
interpreter's teardown: with OpenVINO and ONNX Runtime loaded it took 0.13 s of a 1.1 s
``npcface verify`` (CPU: importing OpenVINO alone adds 0.1 s at exit). They hold nothing
that needs it: galleries are closed by their ``with`` blocks and output is flushed first."""


def run() -> None:
    """The console script: :func:`main`, then exit with its status (at once for
    :data:`FAST_EXIT` commands)."""
    argv = sys.argv[1:]
    code = main(argv)
    if _command_of(argv) in FAST_EXIT:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing to say
                stream.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
