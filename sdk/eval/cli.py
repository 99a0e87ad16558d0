"""``npcface eval``: verification (``lfw``, ``pairs``) and identification (``lfw-identify``)."""

from __future__ import annotations

import argparse
import json
from typing import Any


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
    p.add_argument("--detector", default="yunet")
    p.add_argument("--recognizer", default="sface", help="registry name or exported .onnx")
    p.add_argument("--flip", action="store_true", help="flip-fused embeddings")
    p.add_argument(
        "--det-min-side",
        type=int,
        default=None,
        help="upscale smaller images to this side for detection (more precise landmarks)",
    )
    p.add_argument("--policy", default="center", help="face policy (default: center)")
    p.add_argument("--providers", default=None, help="cpu, cuda, tensorrt (default: auto)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-progress", action="store_true")


def _recognizer(args: argparse.Namespace) -> Any:
    from ..recognizer import FaceRecognizer

    return FaceRecognizer(
        detector=args.detector,
        recognizer=args.recognizer,
        providers=args.providers,
        flip=args.flip,
        face_policy=args.policy,
        detector_options={"min_side": args.det_min_side} if args.det_min_side else None,
    )


def _run_lfw(args: argparse.Namespace) -> int:
    from .lfw import run_lfw_verification

    report = run_lfw_verification(
        _recognizer(args),
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

    report = run_lfw_identify(args.data, _recognizer(args), progress=not args.no_progress)
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
