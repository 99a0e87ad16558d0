"""What following a writer costs a read-only gallery, per search.

A reader checks ``PRAGMA data_version`` and pins one SQLite read transaction at every call;
after a writer's commit it also catches its index up. This measures, in one process and
interleaved round by round (the machine is shared, so only the ratios mean something):

* ``writer``: single-query searches on the writer's own Gallery object (no check);
* ``reader``: the same searches on a read-only Gallery of the same directory, nothing
  changed meanwhile (the check alone);
* ``reader+commit``: the writer commits one new identity before each reader search (check
  plus catch-up of one template);
* ``reader+refresh``: the writer commits one new identity, the reader calls ``refresh()``
  and then searches (what callers had to do before readers followed by themselves).

Data: ``--n`` identities, one unit vector each; queries are stored vectors.

On a heavily loaded machine the two commit modes come out *faster* per search than plain
back-to-back searches (x0.4-0.5 at load 35-50): the writer's fsync waits let the process
sleep, and the scheduler favours processes that sleep. Compare ``writer`` with ``reader``
there; the commit modes only on an idle machine.

    python bench/gallery_reader_overhead.py --n 20000 --dim 128
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from npcface.gallery import Gallery


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=300, help="searches per round and mode")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((args.n + args.rounds * args.queries * 2, args.dim))
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        w = Gallery.create(os.path.join(tmp, "g"), args.dim)
        w.add_many([f"p{i}" for i in range(args.n)], vecs[: args.n])
        w.save()
        r = Gallery.open(os.path.join(tmp, "g"), readonly=True)
        fresh = iter(range(args.n, len(vecs)))
        times: dict[str, list[float]] = {
            "writer": [],
            "reader": [],
            "reader+commit": [],
            "reader+refresh": [],
        }
        for _ in range(args.rounds):
            qs = vecs[rng.integers(args.n, size=args.queries)]
            for mode in times:
                t = 0.0
                for q in qs:
                    if mode in ("reader+commit", "reader+refresh"):
                        i = next(fresh)
                        w.add(f"p{i}", vecs[i])
                    t0 = time.perf_counter()
                    if mode == "reader+refresh":
                        r.refresh()
                    (w if mode == "writer" else r).search(q, k=5)
                    t += time.perf_counter() - t0
                times[mode].append(t / len(qs))
        assert [m.identity for m in r.search(vecs[args.n], k=1)[0]] == [f"p{args.n}"]
        r.close()
        w.close()
    base = float(np.median(times["writer"]))
    print(f"load average {os.getloadavg()[0]:.1f}; {args.n} identities x {args.dim} dims")
    for mode, ts in times.items():
        med = float(np.median(ts))
        print(
            f"{mode:>15}: {med * 1e3:7.3f} ms/search (median of {len(ts)} rounds), x{med / base:.2f}"
        )


if __name__ == "__main__":
    main()
