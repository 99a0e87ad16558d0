"""``npcface bench``: where the time goes, stage by stage, on your own images and machine."""

from __future__ import annotations

import argparse
from typing import Any

from .cli_sdk import add_model_args


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="time decode / detect / align / quality / embed on given images",
        description="Time each pipeline stage on the given images (files or folders). "
        "For comparisons against other pipelines see bench/ in the repository.",
    )
    p.add_argument("inputs", nargs="+", help="image files, folders or CSV files of paths")
    p.add_argument("--limit", type=int, default=200, help="at most this many images")
    p.add_argument("--repeat", type=int, default=1, help="passes over the images")
    p.add_argument("--batch", type=int, default=1, help="crops per recogniser call")
    add_model_args(p)
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    from .cli_sdk import image_args, recognizer_from_args
    from .errors import NpcfaceError

    paths = image_args(args.inputs)[: args.limit]
    if not paths:
        raise NpcfaceError("no images found in " + ", ".join(args.inputs))
    rec = recognizer_from_args(args)  # the inference default unless options say else
    _ = rec.detector, rec.embedder  # load before timing
    totals = dict.fromkeys(("decode", "detect", "align", "quality", "embed"), 0.0)
    faces_found = 0
    for _ in range(args.repeat):
        results = rec.embed_many(paths, batch_size=args.batch, timings=totals)
        faces_found += sum(r.ok for r in results)
    n = len(paths) * args.repeat
    print(f"{n} images, {faces_found} with a face; recogniser on {rec.embedder.runner.backend}")
    for stage, seconds in totals.items():
        print(f"  {stage:<7} {1000 * seconds / n:8.2f} ms/image")
    print(f"  {'total':<7} {1000 * sum(totals.values()) / n:8.2f} ms/image")
    return 0
