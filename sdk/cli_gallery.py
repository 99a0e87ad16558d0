"""``npcface enroll``, ``npcface identify`` and ``npcface gallery create|info|list|remove|rebuild|compact``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .cli_sdk import add_model_args, image_args, recognizer_from_args
from .errors import NpcfaceError
from .results import failure_kind

GALLERY_HELP = (
    "gallery folder, or milvus://HOST:PORT/NAME (Milvus server) or "
    "milvus-lite:///ABSOLUTE/PATH/FILE.db (embedded Milvus Lite)"
)


def register(sub: Any) -> None:
    e = sub.add_parser(
        "enroll",
        help="bulk-enroll a folder (one sub-folder per identity) or a CSV of path,identity",
        description="Enroll images into a gallery (created if missing). Resumable: files "
        "already enrolled (same content) are skipped. Per-file failures go to a CSV report.",
    )
    e.add_argument("gallery", metavar="GALLERY", help=GALLERY_HELP)
    e.add_argument("images", metavar="IMAGES", help="folder of identity sub-folders, or a CSV")
    e.add_argument(
        "--engine",
        default="local",
        choices=("local", "ray"),
        help="local: pipeline processes + this process; ray: a pool of Ray actors "
        "(pip install 'npcface[ray]')",
    )
    e.add_argument(
        "--address",
        default=None,
        help="--engine ray: Ray cluster address (auto, ray://HEAD:10001); default: "
        "RAY_ADDRESS, else a local Ray",
    )
    e.add_argument(
        "--actors", type=int, default=None, help="--engine ray: embedding actors (default: CPUs)"
    )
    e.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes running the pipeline (default: one per CPU; 0: this process)",
    )
    e.add_argument("--batch-size", type=int, default=32, help="faces embedded per batch")
    e.add_argument(
        "--report", default=None, help="failure report (default GALLERY/enroll-report.csv)"
    )
    e.add_argument(
        "--index",
        default="auto",
        help="index for a new gallery: auto, a FAISS factory string (local) or a Milvus "
        "index such as HNSW:M=32,efConstruction=200 (Milvus)",
    )
    e.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "float16"),
        help="vector storage of a new gallery",
    )
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_model_args(e)
    e.add_argument(
        "--min-quality",
        type=float,
        default=None,
        help="refuse faces below this overall quality, 0..1 (default: the recogniser's, 0.25)",
    )
    e.set_defaults(func=_enroll)

    i = sub.add_parser(
        "identify",
        help="who is this? search a gallery for the face of each probe image",
        description="Search a gallery for the face of each probe image (chosen by the face "
        "policy). PROBE: image files, folders (every image below them) or CSV files (first "
        "column: the path, relative to the CSV's folder); the models load once for all. A "
        "match needs a similarity at or above the threshold calibrated for --far (default "
        "1e-3, as verify) or --threshold. Output: per probe its matches, best first (--json: "
        "one JSON object per line). Exit status: 0 every probe matched, 1 some probe had no "
        "match, 2 error (a probe unreadable or without a face: the others are still "
        "reported; or bad arguments).",
    )
    i.add_argument("gallery", metavar="GALLERY", help=GALLERY_HELP)
    i.add_argument("probes", nargs="+", metavar="PROBE", help="image, folder or CSV of paths")
    i.add_argument("--top-k", type=int, default=5, help="matches listed per probe (default 5)")
    rule = i.add_mutually_exclusive_group()
    rule.add_argument(
        "--far",
        type=float,
        default=None,
        help="false-accept rate whose calibrated threshold decides a match (default 1e-3)",
    )
    rule.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="cosine similarity a match needs (-1 lists the top k whatever their similarity)",
    )
    i.add_argument("--json", action="store_true", help="one JSON object per probe and line")
    add_model_args(i)
    i.set_defaults(func=_identify)

    g = sub.add_parser("gallery", help="create, inspect and maintain galleries")
    gsub = g.add_subparsers(dest="gallery_command", metavar="ACTION")
    gsub.required = True

    c = gsub.add_parser("create", help="create an empty gallery")
    c.add_argument("path", metavar="GALLERY")
    c.add_argument("--dim", type=int, required=True, help="embedding dimension (SFace: 128)")
    c.add_argument("--metric", default="cosine", choices=("cosine", "ip"))
    c.add_argument(
        "--index",
        default="auto",
        help="auto, or a FAISS factory string e.g. 'PQ64x4fs' (compressed)",
    )
    c.add_argument("--dtype", default="float32", choices=("float32", "float16"))
    c.add_argument("--model", default=None, help="name of the embedding model (checked on use)")
    c.set_defaults(func=_create)

    n = gsub.add_parser("info", help="settings and size of a gallery")
    n.add_argument("path", metavar="GALLERY")
    n.add_argument("--check", action="store_true", help="also compare index and database (O(n))")
    n.add_argument("--json", action="store_true")
    n.set_defaults(func=_info)

    ls = gsub.add_parser("list", help="enrolled identities and their template counts")
    ls.add_argument("path", metavar="GALLERY")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_list)

    r = gsub.add_parser("remove", help="delete identities and all their templates")
    r.add_argument("path", metavar="GALLERY")
    r.add_argument("identities", nargs="+", metavar="IDENTITY")
    r.set_defaults(func=_remove)

    b = gsub.add_parser("rebuild", help="rebuild the index from the database")
    b.add_argument("path", metavar="GALLERY")
    b.add_argument("--index", default=None, help="switch to auto or another FAISS factory string")
    b.set_defaults(func=_rebuild)

    k = gsub.add_parser(
        "compact", help="drop deleted templates from the index, shrink the database"
    )
    k.add_argument("path", metavar="GALLERY")
    k.add_argument("--no-vacuum", action="store_true", help="do not rewrite the database file")
    k.set_defaults(func=_compact)


def _enroll(args: argparse.Namespace) -> int:
    from .enroll import enroll_images, list_images
    from .gallery import Gallery

    items = list_images(args.images)
    rec = recognizer_from_args(args)
    if args.min_quality is not None:
        rec.enroll_quality = args.min_quality
    if Gallery.exists(args.gallery):
        gallery = Gallery.open(args.gallery)
    else:
        gallery = Gallery.create(
            args.gallery,
            dim=rec.info.embedding_size,
            index=args.index,
            dtype=args.dtype,
            model=rec.info.name,
        )
    with gallery:
        if args.engine == "ray":
            from .enroll.ray_engine import enroll_images_ray

            summary = enroll_images_ray(
                gallery,
                rec,
                items,
                address=args.address,
                actors=args.actors,
                batch_size=args.batch_size,
                report=args.report,
                progress=not args.no_progress,
            )
        else:
            summary = enroll_images(
                gallery,
                rec,
                items,
                workers=args.workers,
                batch_size=args.batch_size,
                report=args.report,
                progress=not args.no_progress,
            )
        info = gallery.info()
    if args.json:
        print(json.dumps({**summary.to_dict(), "gallery": info.to_dict()}, indent=2))
    else:
        print(
            f"enrolled {summary.enrolled}, skipped {summary.skipped} (already enrolled), "
            f"failed {summary.failed} ({summary.low_quality} below the quality gate) of "
            f"{summary.total} images in {summary.seconds:.1f} s "
            f"({summary.images_per_second:.1f} images/s)"
        )
        print(
            f"gallery {info.path}: {info.identities} identities, {info.templates} templates, index {info.factory}"
        )
        if summary.failed:
            print(f"failures: {summary.report}")
    return 0


def _identify(args: argparse.Namespace) -> int:
    from .errors import InvalidArgumentError
    from .eval.calibrate import DEFAULT_FAR
    from .gallery import Gallery

    probes = image_args(args.probes)
    if not probes:
        raise InvalidArgumentError("no probe images in " + ", ".join(args.probes))
    rec = recognizer_from_args(args)
    rec.prefetch_detector()  # beside the recogniser's start-up
    # the library's identify contract: --threshold, or the one calibrated for --far (FAR
    # 1e-3, the calibrated default, when neither is given); never both
    far = DEFAULT_FAR if args.threshold is None and args.far is None else args.far
    threshold = rec.decision_threshold(args.threshold, far)
    if far is None:
        rule = f"threshold {threshold:g}"
    else:
        rule = f"FAR {_far_text(far)} (threshold {threshold:.4f})"
    status = {"matched": 0, "unmatched": 0, "failed": 0}
    with Gallery.open(args.gallery, readonly=True) as gallery:
        for probe in probes:
            line: dict[str, Any] = {"probe": probe}
            try:
                matches = rec.identify(gallery, probe, k=args.top_k, threshold=threshold)
            except NpcfaceError as exc:
                kind = failure_kind(exc)
                if kind == "error":  # not about this probe (the gallery, the model): stop
                    raise
                status["failed"] += 1
                line.update(error=kind, message=str(exc))
                if args.json:
                    print(json.dumps(line), flush=True)
                else:
                    print(f"npcface identify: error: {exc}", file=sys.stderr, flush=True)
                continue
            status["matched" if matches else "unmatched"] += 1
            if args.json:
                line.update(matches=[_match_dict(m) for m in matches], threshold=threshold, far=far)
                print(json.dumps(line), flush=True)
            else:
                _print_matches(probe if len(probes) > 1 else None, matches, rule)
    if status["failed"]:
        return 2
    return 1 if status["unmatched"] else 0


def _far_text(far: float) -> str:
    """A false-accept rate as people write it: 1e-3, 2.5e-4."""
    mantissa, exponent = f"{far:e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def _match_dict(m: Any) -> dict[str, Any]:
    return {
        "identity": m.identity,
        "similarity": round(m.similarity, 6),
        "template_id": m.template_id,
        "metadata": m.metadata,
    }


def _print_matches(probe: str | None, matches: list[Any], rule: str) -> None:
    """A probe's matches as lines; with several probes each line starts with the probe."""
    head = f"{probe}: " if probe is not None else ""
    if not matches:
        print(f"{head}no match at {rule}", flush=True)
        return
    for rank, m in enumerate(matches, 1):
        print(f"{head}{rank:>3}  {m.similarity:.4f}  {m.identity}", flush=True)


def _create(args: argparse.Namespace) -> int:
    from .gallery import Gallery

    with Gallery.create(
        args.path,
        dim=args.dim,
        metric=args.metric,
        index=args.index,
        dtype=args.dtype,
        model=args.model,
    ) as g:
        print(
            f"created {g.path}: dim {g.dim}, {g.metric}, index {g.info().index_spec} ({g.factory})"
        )
    return 0


def _info(args: argparse.Namespace) -> int:
    from .gallery import Gallery

    with Gallery.open(args.path, readonly=True) as g:
        info = g.info()
        report = g.check() if args.check else None
    if args.json:
        d = info.to_dict()
        if report is not None:
            d["check"] = {
                "ok": report.ok,
                "missing": len(report.missing),
                "unexpected": len(report.unexpected),
                "duplicates": report.duplicates,
            }
        print(json.dumps(d, indent=2))
    else:
        width = max(len(k) for k in info.to_dict())
        for key, value in info.to_dict().items():
            print(f"{key:<{width}}  {value}")
        if report is not None:
            print(f"{'check':<{width}}  {'ok' if report.ok else 'INCONSISTENT'}")
    if report is not None and not report.ok:
        print(
            f"index and database disagree: run `npcface gallery rebuild {args.path}`",
            file=sys.stderr,
        )
        return 1
    return 0


def _list(args: argparse.Namespace) -> int:
    from .gallery import Gallery

    with Gallery.open(args.path, readonly=True) as g:
        rows = list(g.template_counts().items())
    if args.json:
        print(json.dumps([{"identity": n, "templates": c} for n, c in rows], indent=2))
    else:
        for name, count in rows:
            print(f"{count:>5}  {name}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    from .gallery import Gallery

    with Gallery.open(args.path) as g:
        for identity in args.identities:
            print(f"removed {identity}: {g.remove(identity)} templates")
    return 0


def _rebuild(args: argparse.Namespace) -> int:
    from .gallery import Gallery

    with Gallery.open(args.path) as g:
        g.rebuild(args.index)
        print(f"rebuilt {g.path}: index {g.factory} over {g.info().templates} templates")
    return 0


def _compact(args: argparse.Namespace) -> int:
    from .gallery import Gallery

    with Gallery.open(args.path) as g:
        print(f"compacted {g.path}: {g.compact(vacuum=not args.no_vacuum).detail}")
    return 0
