"""``npcface eval``: verification (``lfw``, ``pairs``) and identification (``lfw-identify``)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..cli_sdk import add_model_args, recognizer_from_args


def register(sub: Any) -> None:
    p = sub.add_parser("eval", help="evaluate the pipeline on a protocol (LFW pairs, 1:N)")
    ev = p.add_subparsers(dest="protocol", metavar="PROTOCOL")
    ev.required = True

    lfw = ev.add_parser("lfw", help="LFW pairs.txt, 10-fold accuracy, ROC, TAR@FAR")
    _common(lfw)
    lfw.add_argument("--pairs", default="pairs.txt", help="pairs file inside --data")
    lfw.add_argument("--plot", metavar="ROC.png", help="write the ROC curve as a PNG")
    lfw.set_defaults(func=_run_lfw)

    ident = ev.add_parser("lfw-identify", help="1:N on LFW: rank-1/5, TPIR@FPIR")
    _common(ident)
    ident.set_defaults(func=_run_lfw_identify)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="LFW folder (with images/ and pairs.txt)")
    add_model_args(p, policy="center")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-progress", action="store_true")


def _run_lfw(args: argparse.Namespace) -> int:
    from .lfw import run_lfw_verification

    report = run_lfw_verification(
        recognizer_from_args(args),
        args.data,
        pairs_file=args.pairs,
        policy=args.policy,
        progress=not args.no_progress,
        plot=args.plot,
    )
    _print(report, args.json)
    return 0


def _run_lfw_identify(args: argparse.Namespace) -> int:
    from .identify import run_lfw_identify

    report = run_lfw_identify(args.data, recognizer_from_args(args), progress=not args.no_progress)
    _print(report, args.json)
    return 0


def _print(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2))
        return
    for key, value in report.items():
        if isinstance(value, list) and len(value) > 5:
            value = f"[{len(value)} items]"
        print(f"{key}: {value}")
