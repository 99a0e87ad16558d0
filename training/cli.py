"""``npcface train``: ``run CONFIG`` trains, ``prepare RAW_DIR OUT_DIR`` makes aligned crops.

This module must not import torch at module level: the ``npcface`` CLI imports it to build
its parser even when the training extra is not installed. The commands import torch when
they run and raise :class:`~npcface.errors.MissingExtraError` when it is missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys

from npcface.cli_sdk import add_model_args
from npcface.errors import MissingExtraError

__all__ = ["register"]


def _require_torch() -> None:
    if importlib.util.find_spec("torch") is None:
        raise MissingExtraError("npcface train", "train", "torch")


def _cmd_run(args: argparse.Namespace) -> int:
    _require_torch()
    from .config import load_config
    from .train import train

    cfg = load_config(args.config, args.set)
    if args.output:
        cfg.output = args.output
    bar = not args.no_progress and sys.stderr.isatty()
    if not args.no_progress and not bar:
        show_progress_lines()
    result = train(cfg, resume=args.resume, progress=bar)
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun only rank 0 reports
    for line in result.data_notes:
        print(f"data: {line}")
    if result.resume_changes:
        changed = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in result.resume_changes.items())
        print(f"resumed with changed settings (applied): {changed}")
    if result.losses:
        print(
            f"trained to step {result.step}: last loss {result.losses[-1][1]:.4f}, "
            f"{result.images_per_second:.1f} images/s"
        )
    if result.verification is not None:
        v = result.verification
        print(f"verification accuracy {100 * v.accuracy:.2f}% +- {100 * v.std:.2f}")
    print(f"output: {result.output}")
    return 0


def show_progress_lines() -> None:
    """Let training's progress lines (``npcface.training`` at INFO: step, loss, lr, images/s,
    ETA) through at the CLI's default verbosity, where no progress bar can be drawn (not a
    terminal: a log file, a job scheduler)."""
    logger = logging.getLogger("npcface.training")
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)


def _cmd_prepare(args: argparse.Namespace) -> int:
    _require_torch()
    from dataclasses import replace

    from npcface.cli_sdk import config_from_args

    from .data.prepare import prepare_dataset

    config = config_from_args(args)
    if args.min_score is not None:
        options = {**config.detector_options, "score_threshold": args.min_score}
        config = replace(config, detector_options=options)
    report = prepare_dataset(
        args.raw_dir,
        args.out_dir,
        size=args.size,
        workers=args.workers,
        config=config,
        multiple=args.multiple,
        no_face=args.no_face,
        progress=not args.quiet,
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.summary())
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` command group to the ``npcface`` parser."""
    train = subparsers.add_parser(
        "train",
        help="train embedding models (needs npcface[train])",
        description="Train face embedding models with NPCFace and baseline heads.",
    )
    sub = train.add_subparsers(dest="train_command", metavar="SUBCOMMAND")
    sub.required = True

    run = sub.add_parser(
        "run",
        help="train from a YAML job config",
        description="Train from a YAML job config (see configs/). Works under torchrun.",
    )
    run.add_argument("config", metavar="CONFIG", help="YAML job config")
    run.add_argument("--resume", metavar="CKPT", help="checkpoint folder, rank file or 'latest'")
    run.add_argument("--output", help="output folder (default: work_dirs/<config name>)")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set optim.lr=0.05 (repeatable)",
    )
    run.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress (default: a bar on a terminal, else a line every log.every_steps)",
    )
    run.set_defaults(func=_cmd_run)

    prep = sub.add_parser(
        "prepare",
        help="detect and align raw photos into training crops",
        description=(
            "Detect and align RAW_DIR/<identity>/<photo> with the SDK's pipeline (by "
            "default the inference default, --preset accurate, so train and inference crops "
            "match) into OUT_DIR/<identity>/<photo>.jpg crops; resumable; reports photos "
            "with no face or several faces and the pipeline."
        ),
    )
    prep.add_argument("raw_dir", metavar="RAW_DIR")
    prep.add_argument("out_dir", metavar="OUT_DIR")
    prep.add_argument("--size", type=int, default=120, help="crop side in pixels (default 120)")
    prep.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    prep.add_argument(
        "--multiple",
        choices=("keep", "skip"),
        default="keep",
        help="photos with several faces: keep the face the face policy picks (default; "
        "--policy, the preset's 'center' by default) or skip the photo",
    )
    prep.add_argument(
        "--no-face",
        choices=("skip", "mean"),
        default="skip",
        help="photos with no face: skip (default) or align them with the mean landmarks of "
        "the detected faces (evaluation sets that must keep every photo)",
    )
    add_model_args(prep, recognizer=False)
    prep.add_argument("--min-score", type=float, default=None, help="detector score threshold")
    prep.add_argument("--quiet", action="store_true", help="no progress bar")
    prep.add_argument("--json", action="store_true", help="print the report as JSON")
    prep.set_defaults(func=_cmd_prepare)
