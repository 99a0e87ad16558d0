"""How long a removed identity's vectors stay in the files of a Milvus standalone server
(``milvus-server`` 2.3.5, pip package ``milvus``) after ``Gallery.remove`` and
``Gallery.compact``: with the server's default settings, and with the erasure settings of
``tests/milvus_server.py`` (:data:`ERASURE_CONFIG`, :data:`ERASURE_ENV`).

For each setting: a server of its own in a temporary folder; a gallery of ``--templates``
random 128-d templates in identities of ``--per-identity``, the first of which is removed;
``save()`` (a flush); then every file of the server's folder (``MilvusServer.scan``: all but
the program files; raw bytes, inside Zstandard frames and in the values of embedded Parquet
files) is scanned until the kinds of file named by ``--before-kinds`` hold every vector of
that identity (so a later "gone" means something). Then ``remove`` + ``compact()`` (timed), and
the scan is repeated every ``--interval`` seconds until no file holds any of its vectors or
``--watch`` seconds have passed. The table gives, from the moment ``compact()`` returned,
when each kind of file (insert log, rocksmq, ...) last held one, and what was left at the end.
The kept identities are checked by search at the end (each one's first template finds it).

Examples::

    python bench/milvus_erasure.py                          # default and erasure settings
    python bench/milvus_erasure.py --settings erasure --watch 300
    python bench/milvus_erasure.py --settings erasure --index "HNSW:M=16,efConstruction=200" \
        --before-kinds "insert log,index file"
    python bench/milvus_erasure.py --settings default,erasure,erasure-no-env --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from milvus_server import (  # noqa: E402 - tests/ is not a package
    ERASURE_CONFIG,
    ERASURE_ENV,
    MilvusServer,
    cosine_rows,
    why_not,
)

from npcface.gallery import Gallery  # noqa: E402

SETTINGS = {
    "default": ({}, {}),
    "erasure": (ERASURE_CONFIG, ERASURE_ENV),
    # the yaml settings alone: rocksmq looks for expired pages every 10 minutes
    "erasure-no-env": (ERASURE_CONFIG, {}),
}
DIM = 128


def kinds(hits: list) -> dict[str, int]:
    """Vectors found per kind of file."""
    per: dict[str, set[int]] = {}
    for h in hits:
        per.setdefault(h.kind.split(" (")[0], set()).add(h.vector)
    return {k: len(v) for k, v in sorted(per.items())}


def run(name: str, args: argparse.Namespace, folder: Path) -> dict:
    config, env = SETTINGS[name]
    rng = np.random.default_rng(args.seed)
    vectors = rng.standard_normal((args.templates, DIM)).astype(np.float32)
    n_ids = args.templates // args.per_identity
    names = [f"person{i:04d}" for i in range(n_ids)]
    removed = cosine_rows(vectors[: args.per_identity])
    out: dict = {
        "settings": name,
        "index": args.index,
        "templates": n_ids * args.per_identity,
        "removed": args.per_identity,
        "config": dict(config),
        "env": dict(env),
    }
    with MilvusServer(folder, config=config, env=env) as server:
        g = Gallery.create(f"milvus://{server.address}/erasure", dim=DIM, index=args.index)
        for i, who in enumerate(names):
            g.add(who, vectors[i * args.per_identity : (i + 1) * args.per_identity])
        g.save()
        t0 = time.monotonic()
        must = [k.strip() for k in args.before_kinds.split(",")]
        while True:  # the flushed segment's insert log appears within seconds
            before = kinds(server.scan(removed))
            ready = all(before.get(k) == len(removed) for k in must)
            if ready or time.monotonic() - t0 > 180:
                break
            time.sleep(2)
        out["before"] = before
        print(f"[{name}] before removal, vectors found per kind of file: {before}", flush=True)
        if not ready:
            raise SystemExit(f"[{name}] the scan does not find every vector in {must}: {before}")

        g.remove(names[0])
        t = time.monotonic()
        g.compact()
        out["compact_s"] = round(time.monotonic() - t, 1)
        start = time.monotonic()
        last_seen: dict[str, float] = {}
        timeline = []
        while True:
            elapsed = time.monotonic() - start
            now = kinds(server.scan(removed))
            timeline.append((round(elapsed, 1), now))
            print(f"[{name}] {elapsed:6.1f} s after compact(): {now or 'none left'}", flush=True)
            for kind in now:
                last_seen[kind] = round(elapsed, 1)
            if not now or elapsed > args.watch:
                break
            time.sleep(args.interval)
        out["timeline"] = timeline
        out["last_seen"] = last_seen
        out["left"] = now
        out["watched_s"] = round(elapsed, 1)
        out["all_gone_s"] = None if now else round(elapsed, 1)
        hits = g.search(vectors[args.per_identity :: args.per_identity][:20], k=1)
        out["kept_found"] = (
            all(m and m[0].identity == names[1 + j] for j, m in enumerate(hits))
            and len(g) == n_ids - 1
        )
        g.close()
    return out


def table(results: list[dict]) -> str:
    """Markdown: per setting, seconds after compact() returned by which no file of each kind
    held a removed vector (the first scan that found none)."""
    kinds_seen = sorted(
        {k for r in results for k in r["before"]} | {k for r in results for k in r["last_seen"]}
    )
    head = [
        "settings",
        "index, templates (removed)",
        "before removal: vectors found in",
        "compact() s",
        *[f"{k}: clean after s" for k in kinds_seen],
        "every file: clean after s",
        "kept identities found",
    ]
    rows = []
    for r in results:
        cells = [
            r["settings"],
            f"{r['index']}, {r['templates']} ({r['removed']})",
            ", ".join(f"{k} {n}" for k, n in r["before"].items()),
            f"{r['compact_s']:.1f}",
        ]
        for k in kinds_seen:
            if k in r["left"]:
                cells.append(f"still there at {r['watched_s']:.0f}")
            elif k in r["last_seen"]:
                cells.append(f"{_next(r, r['last_seen'][k]):.0f}")
            else:
                cells.append("0" if k in r["before"] else "-")
        cells.append(
            f"{r['all_gone_s']:.0f}"
            if r["all_gone_s"] is not None
            else f"not within {r['watched_s']:.0f}"
        )
        cells.append("yes" if r["kept_found"] else "NO")
        rows.append(cells)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c) + " |" for c in rows]
    return "\n".join(lines)


def _next(r: dict, t: float) -> float:
    """The first scan after ``t`` (when the kind was seen last): it was gone by then."""
    later = [e for e, _ in r["timeline"] if e > t]
    return later[0] if later else t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--settings", default="default,erasure", help=", ".join(SETTINGS))
    ap.add_argument("--templates", type=int, default=350)
    ap.add_argument("--per-identity", type=int, default=50)
    ap.add_argument("--watch", type=float, default=600.0, help="seconds to keep scanning")
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between scans")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--index",
        default="auto",
        help="the gallery's index: auto (FLAT here) or e.g. HNSW:M=16,efConstruction=200",
    )
    ap.add_argument(
        "--before-kinds",
        default="insert log",
        help="kinds of file that must hold every vector before the removal (comma-separated)",
    )
    ap.add_argument("--json", type=Path, help="write the results (with timelines) here")
    args = ap.parse_args()
    reason = why_not()
    if reason:
        raise SystemExit(reason)
    results = []
    for name in args.settings.split(","):
        with tempfile.TemporaryDirectory(prefix=f"milvus-erasure-{name}-") as tmp:
            results.append(run(name.strip(), args, Path(tmp)))
    print()
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
