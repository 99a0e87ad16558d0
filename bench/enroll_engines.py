"""Bulk enrolment: the Ray engine against the local engine, on the same LFW photos.

Both engines enrol the same ``--n`` LFW photos (people in name order, every photo) into a
fresh gallery each, with the same recogniser (YuNet + SFace); beside them the peer both
engines are measured against, the pipeline alone (``FaceRecognizer.embed_many`` over the
same paths in batches of ``--batch-size``: read, decode, detect, align, embed; no hashing,
no gallery; the recogniser loaded before timing, with its default threads). The runs
alternate (pipeline, local, ray, pipeline, ...) so that all see the same machine load, and
the ratios of images/s are printed with each run's figures. Both engines' times include
their workers' start-up (each worker or actor builds its own recogniser, ~1-1.5 s here).
Ray runs on a local Ray with ``--cpus`` CPUs (started once, not timed), or on
``--address``. Also checks that both galleries hold the same number of templates.

Example (the figures in ``sdk/gallery/README.md``)::

    python bench/enroll_engines.py --n 2000 --repeats 2 --preset fast
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def lfw_items(lfw: Path, n: int):
    from npcface.enroll import EnrollItem

    items = []
    for person in sorted(os.listdir(lfw / "images")):
        for photo in sorted((lfw / "images" / person).iterdir()):
            items.append(EnrollItem(str(photo), person))
            if len(items) >= n:
                return items
    return items


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="LFW photos")
    ap.add_argument("--repeats", type=int, default=1, help="alternating runs per engine")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="local Ray CPUs")
    ap.add_argument("--address", default=None, help="Ray cluster instead of a local Ray")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument(
        "--workers", type=int, default=None, help="local engine: pipeline processes (default: CPUs)"
    )
    ap.add_argument("--cpus-per-actor", type=float, default=1.0, help="Ray: CPUs per actor")
    ap.add_argument("--actors", type=int, default=None, help="Ray: actors (default CPUs/actor)")
    ap.add_argument("--preset", default="accurate", help="recogniser preset (accurate, fast)")
    ap.add_argument("--gallery", default="local", choices=("local", "milvus-lite"))
    ap.add_argument(
        "--data",
        default=os.environ.get(
            "NPCFACE_DATA", str(Path(__file__).resolve().parents[2] / "shared/data")
        ),
    )
    args = ap.parse_args(argv)

    import ray

    from npcface import FaceRecognizer
    from npcface.enroll import enroll_images
    from npcface.enroll.ray_engine import enroll_images_ray, start_ray
    from npcface.gallery import Gallery

    items = lfw_items(Path(args.data) / "lfw", args.n)
    rec = FaceRecognizer(preset=args.preset)
    dim = rec.info.embedding_size
    t0 = time.perf_counter()
    if args.address:
        start_ray(args.address)
    else:
        start_ray(num_cpus=args.cpus)
    print(f"ray.init {time.perf_counter() - t0:.1f} s (not timed below)", file=sys.stderr)
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="enroll-bench-", dir=os.environ.get("BENCH_TMP")))
    try:
        for rep in range(args.repeats):
            t0 = time.perf_counter()
            done = rec.embed_many([it.path for it in items], batch_size=args.batch_size)
            sec = time.perf_counter() - t0
            ok = sum(r.ok for r in done)
            rows.append(("pipeline", len(items) / sec, sec, ok, len(items) - ok, ok))
            print(
                f"[pipeline #{rep}] {len(items) / sec:.1f} images/s ({sec:.0f} s), "
                f"load {os.getloadavg()[0]:.1f}",
                file=sys.stderr,
                flush=True,
            )
            for engine in ("local", "ray"):
                where = (
                    str(tmp / f"{engine}{rep}")
                    if args.gallery == "local"
                    else f"milvus-lite://{tmp / f'{engine}{rep}.db'}"
                )
                with Gallery.create(where, dim, model=rec.info.name) as g:
                    if engine == "local":
                        s = enroll_images(
                            g,
                            rec,
                            items,
                            workers=args.workers,
                            batch_size=args.batch_size,
                            progress=False,
                        )
                    else:
                        s = enroll_images_ray(
                            g,
                            rec,
                            items,
                            batch_size=args.batch_size,
                            cpus_per_actor=args.cpus_per_actor,
                            actors=args.actors,
                            progress=False,
                        )
                    templates = g.info().templates
                rows.append(
                    (engine, s.images_per_second, s.seconds, s.enrolled, s.failed, templates)
                )
                print(
                    f"[{engine} #{rep}] {s.images_per_second:.1f} images/s ({s.seconds:.0f} s), "
                    f"enrolled {s.enrolled}, failed {s.failed}, load {os.getloadavg()[0]:.1f}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    local = [r[1] for r in rows if r[0] == "local"]
    rayr = [r[1] for r in rows if r[0] == "ray"]
    pipe = [r[1] for r in rows if r[0] == "pipeline"]
    print(
        f"\n{len(items)} LFW photos, preset {args.preset}, {args.cpus} CPUs, "
        f"gallery {args.gallery}, local workers {args.workers or 'default'}, "
        f"actors {args.actors or 'default'}, "
        f"batch {args.batch_size}, {args.cpus_per_actor} CPU per Ray actor, load average now {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'engine':<8} {'images/s':>9} {'seconds':>8} {'enrolled':>9} {'failed':>7} {'templates':>10}"
    )
    for engine, ips, sec, enrolled, failed, templates in rows:
        print(f"{engine:<8} {ips:>9.1f} {sec:>8.0f} {enrolled:>9} {failed:>7} {templates:>10}")
    ratio = (sum(rayr) / len(rayr)) / (sum(local) / len(local))
    print(f"ray / local images/s: {ratio:.2f}")
    print(f"local / pipeline images/s: {(sum(local) / len(local)) / (sum(pipe) / len(pipe)):.2f}")
    # the pipeline's "templates" are faces found, which the engines' quality gate may trim
    if len({r[5] for r in rows if r[0] != "pipeline"}) != 1:
        print("WARNING: the engines enrolled different numbers of templates", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
