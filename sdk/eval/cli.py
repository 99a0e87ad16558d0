"""``npcface eval``: verification (``lfw``, ``pairs``) and identification (``lfw-identify``)."""

from __future__ import annotations

import argparse
import json
import sys
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

    pairs = ev.add_parser(
        "pairs", help="any pairs CSV (path1,path2,label[,fold]): k-fold accuracy, by yaw bin"
    )
    pairs.add_argument("pairs_csv", help="pairs file; relative paths are against --root")
    pairs.add_argument("--root", default=None, help="image folder (default: the CSV's folder)")
    pairs.add_argument("--yaw", default=None, help="path,yaw CSV: adds accuracy by |yaw| bin")
    pairs.add_argument(
        "--suite",
        default=None,
        metavar="PHOTOS.csv",
        help="the hard-pairs suite's photos.csv: TAR at FAR 1e-3/1e-4 over all its impostor "
        "pairs, per fold, and accuracy by group (yaw bin, age gap)",
    )
    pairs.add_argument(
        "--plot", metavar="GROUPS.png", help="bar chart of accuracy by yaw bin (or suite group)"
    )
    add_model_args(pairs, policy=None)
    pairs.add_argument("--json", action="store_true", help="print the report as JSON")
    pairs.add_argument("--no-progress", action="store_true")
    pairs.set_defaults(func=_run_pairs)

    pose = ev.add_parser(
        "make-pose",
        help="build the frontal-to-turned pose benchmark (pairs.csv, yaw.csv) from "
        "a folder of identity folders",
    )
    pose.add_argument("data", help="e.g. ../shared/data/celeba-subset")
    pose.add_argument("--out", required=True, help="output folder")
    pose.add_argument("--per-identity", type=int, default=3, help="genuine pairs per identity")
    pose.add_argument("--no-progress", action="store_true")
    pose.set_defaults(func=_run_make_pose)

    hard = ev.add_parser(
        "make-hard",
        help="build the hard-pairs suite (frontal-to-turned + young-to-adult pairs, 10 folds "
        "by identity) into pairs.csv, photos.csv, yaw.csv",
    )
    hard.add_argument("data", help="folder holding celeba-subset/ and lag/ (../shared/data)")
    hard.add_argument("--out", required=True, help="output folder")
    hard.add_argument("--pose", default="celeba-subset", help="pose part's sub-folder")
    hard.add_argument("--age", default="lag", help="age part's sub-folder (young_* files)")
    hard.add_argument("--folds", type=int, default=10, help="folds by identity")
    hard.add_argument("--no-progress", action="store_true")
    hard.set_defaults(func=_run_make_hard)

    cal = sub.add_parser(
        "calibrate",
        help="cosine thresholds at FAR 1e-2..1e-6 on all image pairs of a folder of "
        "identities; stored in the model's ONNX metadata",
        description="Embed every image of a folder of identities (about 0.1 s per image on "
        "2 CPU cores: LFW's 13,233 take 20-30 minutes; --limit takes a sample; the estimate "
        "for this machine is printed after the first batch) and calibrate cosine thresholds "
        "on all image pairs. A FAR needs at least 10/FAR impostor pairs: FARs with fewer are "
        "reported as unsupported and get no threshold; without enough pairs for FAR 1e-3 "
        "(the default threshold) nothing is written.",
    )
    cal.add_argument("model", help="an npcface .onnx file (or a registry name: print only)")
    cal.add_argument("--data", required=True, help="identity folders, e.g. ../shared/data/lfw")
    cal.add_argument("--out", default=None, help="write a copy here instead of in place")
    cal.add_argument("--dry-run", action="store_true", help="print, write nothing")
    cal.add_argument("--limit", type=int, default=None, help="a random sample of at most N images")
    cal.add_argument("--seed", type=int, default=0, help="the sample's seed (default 0)")
    add_model_args(cal, policy=None, recognizer=False)
    cal.add_argument("--json", action="store_true")
    cal.add_argument("--no-progress", action="store_true")
    cal.set_defaults(func=_run_calibrate)


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


def _run_pairs(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .hard import read_suite
    from .pairs import read_pairs_csv
    from .pose import read_yaws
    from .verify import run_pair_verification

    root = args.root or str(Path(args.pairs_csv).parent)
    pairs = read_pairs_csv(args.pairs_csv, root=root)
    yaws = read_yaws(args.yaw, root=root) if args.yaw else None
    suite = read_suite(args.suite, root=root) if args.suite else None
    report = run_pair_verification(
        recognizer_from_args(args),
        pairs,
        yaws=yaws,
        suite=suite,
        policy=args.policy,
        progress=not args.no_progress,
        plot=args.plot,
    )
    _print(report, args.json)
    return 0


def _run_make_pose(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .pose import build_pose_pairs

    bench = build_pose_pairs(
        args.data, args.out, per_identity=args.per_identity, progress=not args.no_progress
    )
    _print({k: str(v) for k, v in asdict(bench).items()}, False)
    return 0


def _run_make_hard(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .hard import build_hard_pairs

    suite = build_hard_pairs(
        args.data,
        args.out,
        pose=args.pose,
        age=args.age,
        folds=args.folds,
        progress=not args.no_progress,
    )
    _print({k: str(v) for k, v in asdict(suite).items()}, False)
    return 0


def _run_calibrate(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .calibrate import calibrate, write_thresholds

    args.recognizer = args.model
    rec = recognizer_from_args(args)

    def estimate(images: int, seconds: float) -> None:
        from tqdm import tqdm

        tqdm.write(
            f"calibrate: embedding {images:,} images, about {_duration(seconds)} here"
            + ("" if args.limit else " (--limit N embeds a sample)"),
            file=sys.stderr,
        )

    result = calibrate(
        rec,
        args.data,
        progress=not args.no_progress,
        limit=args.limit,
        seed=args.seed,
        on_estimate=estimate,
    )
    report: dict[str, Any] = asdict(result)
    if not args.dry_run and str(args.model).endswith(".onnx"):
        report["written"] = str(write_thresholds(args.model, result, out=args.out))
    _print(report, args.json)
    return 0


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _print(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2))
        return
    for key, value in report.items():
        if isinstance(value, list) and len(value) > 5:
            value = f"[{len(value)} items]"
        print(f"{key}: {value}")
