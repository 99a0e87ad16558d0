"""``npcface cluster PHOTOS... --out DIR [--into GALLERY]``: group the faces of a photo
collection into people."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from .cli_sdk import add_model_args, image_args, recognizer_from_args

FLUSH_FACES = 256
"""Faces stored per write (one SQLite transaction each)."""


def register(sub: Any) -> None:
    c = sub.add_parser(
        "cluster",
        help="group the faces of a photo collection into people (no labels needed)",
        description="Detect every face of every photo, group the faces into people and "
        "write DIR/faces.csv (one row per face), DIR/groups/<group>/ (links to the photos) "
        "and DIR/index.html (a contact sheet: one row of thumbnails per group). The "
        "collection is kept in DIR/groups.db (or next to --into's gallery): running again "
        "adds only new photos and places their faces without regrouping the others; "
        "corrections made through npcface.cluster.FaceGroups (name, merge, split, move, "
        "not this person) are honoured. Faces in no group (alone, or below --min-quality) "
        "are listed as such.",
    )
    c.add_argument("photos", nargs="+", metavar="PHOTOS", help="folders, image files or CSVs")
    c.add_argument("--out", required=True, metavar="DIR", help="folder of the results")
    c.add_argument(
        "--into",
        metavar="GALLERY",
        default=None,
        help="keep the collection and its corrections next to this local gallery (created "
        "when missing): named groups are enrolled into it",
    )
    c.add_argument(
        "--min-quality",
        type=float,
        default=None,
        help="faces of lower overall quality (0..1) are not grouped (default: the "
        "recogniser's enrolment gate, 0.25)",
    )
    c.add_argument(
        "--recluster",
        action="store_true",
        help="group every face again (default: place only the new faces)",
    )
    c.add_argument("--no-links", action="store_true", help="no groups/ folder of links")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_model_args(c)
    c.set_defaults(func=_cluster)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cluster(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .cluster import FaceGroups
    from .cluster.photos import FaceRows
    from .cluster.report import write_report
    from .errors import InvalidArgumentError, NpcfaceError
    from .gallery import Gallery

    t0 = time.perf_counter()
    paths = image_args(args.photos)
    if not paths:
        raise InvalidArgumentError(f"no images in {' '.join(args.photos)}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(f"--out {out} is not a folder")
    rec = recognizer_from_args(args)
    model, dim = rec.info.name, rec.info.embedding_size
    min_quality = rec.config.enroll_quality if args.min_quality is None else args.min_quality
    gallery = None
    if args.into is not None:
        if "://" in args.into:
            raise InvalidArgumentError("--into needs a local gallery folder", input="into")
        if Gallery.exists(args.into):
            gallery = Gallery.open(args.into)
            gallery.check_model(model, dim)
        else:
            gallery = Gallery.create(args.into, dim=dim, model=model)
        folder = Path(args.into)
    else:
        out.mkdir(parents=True, exist_ok=True)
        folder = out
    counts = {"photos": len(paths), "known": 0, "no_face": 0, "failed": 0, "new_faces": 0}
    failures: list[tuple[str, str]] = []
    try:
        with FaceGroups.open(folder, dim=dim, model=model, min_quality=min_quality) as fg:
            known = {k.split(":", 1)[0] for k in fg.known_keys()}
            rows = FaceRows()

            bar = tqdm(paths, unit="photo", desc="faces", disable=args.no_progress or None)
            for path in bar:
                digest = _sha256(path)
                if digest in known:
                    counts["known"] += 1
                    continue
                try:
                    img = rec.load(path)
                    embs, faces = rec.represent_all(img)
                except NpcfaceError as exc:
                    counts["failed"] += 1
                    failures.append((path, str(exc)))
                    continue
                if not faces:
                    counts["no_face"] += 1
                    continue
                known.add(digest)
                rows.add_photo(img, embs, faces, digest, str(Path(path).resolve()))
                counts["new_faces"] += len(faces)
                if len(rows) >= FLUSH_FACES:
                    rows.add_to(fg)
            rows.add_to(fg)
            bar.close()
            result = fg.recluster() if args.recluster else fg.update()
            report = write_report(fg, out, links=not args.no_links)
    finally:
        if gallery is not None:
            gallery.close()
    s = result.summary()
    summary = {
        **counts,
        "faces": s["faces"],
        "groups": s["groups"],
        "grouped": s["grouped"],
        "ungrouped": s["noise"],
        "low_quality": s["low_quality"],
        "largest": s["largest"],
        "thresholds": s["thresholds"],
        "collection": str(folder / "groups.db"),
        "csv": str(report.csv),
        "html": str(report.html),
        "seconds": round(time.perf_counter() - t0, 1),
        "failures": [{"photo": p, "error": e} for p, e in failures],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(
        f"{counts['photos']} photos: {counts['new_faces']} new faces; {counts['known']} "
        f"already in the collection, {counts['no_face']} without a face, {counts['failed']} "
        f"unreadable"
    )
    print(
        f"{s['faces']} faces: {s['groups']} groups ({s['grouped']} faces, largest "
        f"{s['largest']}), {s['noise']} in no group ({s['low_quality']} below quality "
        f"{min_quality:g}); {summary['seconds']} s"
    )
    print(f"wrote {report.csv}, {report.html}" + ("" if args.no_links else f", {report.folders}/"))
    print(f"collection: {summary['collection']}")
    for p, e in failures[:10]:
        print(f"  unreadable: {p}: {e}", file=sys.stderr)
    return 0
