"""Tracking and identification in video against ground truth, and speed as x real time.

    python bench/video.py --data ../shared/data/lfw accuracy [--preset fast] [--videos 6]
    flock /work/bench.lock python bench/video.py --data ../shared/data/lfw speed

The videos are composed from LFW photos (:mod:`npcface.eval.videoset`; the seed and every
parameter are below, so a rerun makes the same videos): people with at least
``MIN_PHOTOS`` photos; ``GALLERY_PHOTOS`` of each go into a gallery, up to ``SHOWN_PHOTOS``
others are shown in the video, ordered by head yaw (the person turns through them, one photo
per ``PHOTO_SECONDS``). Each video has ``PEOPLE`` people who enter at random times from
either side, cross the frame (their paths cross, and a later one passes in front of an
earlier one: occlusions), grow or shrink (towards or away from the camera) and leave.
Encoded with H.264 (libx264, crf 20) through PyAV, then decoded by :mod:`npcface.video`
like any file.

``accuracy``: ID switches and fragmentations per 100 ground-truth track-minutes, IDF1
(:mod:`npcface.eval.tracking`), the share of tracks whose final identity is right (a track's
truth is the person it overlaps in most of its frames; a track resumed after it ended
counts once, with its last identity), and for comparison the share of
per-frame identifications that are right (each detected face embedded and searched alone).

``speed``: one video per size (1280x720, 1920x1080) at 30 fps, the full loop (decode,
detect every frame, track, embed, identify) for each preset, as x real time; beside it the
decoding alone (the peer measured in the same run) and where the time goes.
"""

from __future__ import annotations

import argparse
import collections
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from npcface import FaceRecognizer, Gallery, load_image
from npcface.eval.tracking import tracking_scores
from npcface.eval.videoset import Actor, Scene
from npcface.quality import head_pose
from npcface.video import VideoAnalyzer, open_source

SEED = 26
MIN_PHOTOS = 10
GALLERY_PHOTOS = 3
SHOWN_PHOTOS = 6
PHOTO_SECONDS = 1.5
PEOPLE = 3
SECONDS = 15.0
FPS = 30.0
FACE_HEIGHT = (0.16, 0.34)  # of the frame's height, at enter / leave (random within)
ACCURACY_SIZE = (1280, 720)
SPEED_SIZES = ((1280, 720), (1920, 1080))
SPEED_SECONDS = 10.0


def people(lfw: Path, rng: random.Random, n: int) -> list[tuple[str, list[Path]]]:
    names = sorted(
        d.name for d in (lfw / "images").iterdir() if len(list(d.glob("*.jpg"))) >= MIN_PHOTOS
    )
    chosen = rng.sample(names, n)
    return [(name, sorted((lfw / "images" / name).glob("*.jpg"))) for name in chosen]


def cast(rec: FaceRecognizer, lfw: Path, n_people: int, rng: random.Random):
    """Gallery photos and video photos (with face boxes, by yaw) of ``n_people`` people."""
    out = []
    for name, paths in people(lfw, rng, n_people):
        paths = paths[:]
        rng.shuffle(paths)
        gallery = paths[:GALLERY_PHOTOS]
        shown = []
        for p in paths[GALLERY_PHOTOS:]:
            img = load_image(p)
            faces = rec.detect(img)
            if not faces:
                continue
            face = min(faces, key=lambda f: abs((f.box[0] + f.box[2]) / 2 - img.shape[1] / 2))
            shown.append((head_pose(face.landmarks)[0], img, tuple(float(v) for v in face.box)))
            if len(shown) == SHOWN_PHOTOS:
                break
        shown.sort(key=lambda s: s[0])  # turning from one side to the other
        out.append((name, gallery, shown))
    return out


def scene(actors_cast, size, seconds: float, rng: random.Random, seed: int) -> Scene:
    actors = []
    for k, (name, _, shown) in enumerate(actors_cast):
        enter = rng.uniform(0, seconds * 0.35)
        leave = min(seconds, enter + rng.uniform(seconds * 0.45, seconds * 0.65))
        left = k % 2 == 0
        y0, y1 = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7)
        x0, x1 = (0.1, 0.9) if left else (0.9, 0.1)
        s0, s1 = rng.uniform(*FACE_HEIGHT), rng.uniform(*FACE_HEIGHT)
        actors.append(
            Actor(
                name,
                tuple(s[1] for s in shown),
                tuple(s[2] for s in shown),
                enter,
                leave,
                (x0, y0),
                (x1, y1),
                (s0, s1),
                PHOTO_SECONDS,
            )
        )
    return Scene(actors, size[0], size[1], FPS, seconds, seed=seed)


def make_gallery(rec: FaceRecognizer, folder: Path, everyone) -> Gallery:
    g = Gallery.create(str(folder), dim=rec.info.embedding_size, model=rec.info.name)
    from npcface.errors import NpcfaceError

    for name, gallery_photos, _ in everyone:
        for photo in gallery_photos:  # a photo below the enrolment gate is left out
            try:
                rec.enroll(g, name, [photo])
            except NpcfaceError as exc:
                print(f"not enrolled: {exc}")
    return g


def run_accuracy(args: argparse.Namespace) -> None:
    rng = random.Random(SEED)
    rec = FaceRecognizer(preset=args.preset)
    work = Path(tempfile.mkdtemp(prefix="npcface-video-bench-"))
    everyone = cast(rec, args.data, PEOPLE * args.videos, rng)
    g = make_gallery(rec, work / "gallery", everyone)
    thr = rec.decision_threshold()
    totals = collections.Counter()
    track_minutes = 0.0
    idf1s = []
    for v in range(args.videos):
        group = everyone[v * PEOPLE : (v + 1) * PEOPLE]
        sc = scene(group, ACCURACY_SIZE, SECONDS, rng, SEED + v)
        if args.only and v not in args.only:  # drawn all the same: the set stays the same
            continue
        path = work / f"video{v}.mp4"
        truth = sc.write(path)
        gt = collections.defaultdict(list)
        for t in truth:
            gt[t.frame].append((t.actor, t.box))
        track_minutes += len(truth) / FPS / 60
        pred = collections.defaultdict(list)
        per_frame_right = per_frame_total = 0
        analyzer = VideoAnalyzer(rec, g)
        ended = []
        faces_of: dict[int, list] = {}
        events_of: dict[int, list] = collections.defaultdict(list)
        with open_source(path) as src:
            for r in analyzer.run(src):
                ended += [e for e in r.events if e.kind == "ended"]
                if r.frame is not None:
                    events_of[r.frame.index] += r.events
                if r.frame is None:
                    continue
                for f in r.faces:
                    pred[r.frame.index].append((f.track_id, tuple(map(float, f.face.box))))
                if r.faces:  # per-frame identification, for comparison
                    crops = rec.align(r.frame.image, [f.face for f in r.faces])
                    embs = rec.embed_crops(crops)
                    found = g.search(embs, k=1)
                    faces_of[r.frame.index] = [
                        (f.track_id, m[0].identity if m and m[0].similarity >= thr else None)
                        for f, m in zip(r.faces, found, strict=True)
                    ]
        s = tracking_scores(gt, pred)
        idf1s.append(s.idf1)
        switches = s.switches
        for f, actor, before, after in switches:
            print(f"  switch: frame {f}, {sc.actors[actor].identity}: track {before} -> {after}")
        if args.dump:
            dump(args.dump, v, sc, gt, pred, events_of, switches)
        mm_switches = motmetrics_switches(gt, pred)
        if mm_switches is not None and mm_switches != s.id_switches:
            print(f"  py-motmetrics counts {mm_switches} switches, this bench {s.id_switches}")
        votes = collections.defaultdict(collections.Counter)
        for frame, actor, track in s.matches:
            votes[track][actor] += 1
            ident = dict(faces_of.get(frame, []))
            per_frame_total += 1
            per_frame_right += ident.get(track) == sc.actors[actor].identity
        final = {e.track_id: e for e in ended}  # a resumed track ends again: its last
        ended = list(final.values())
        right = sum(
            1
            for e in ended
            if e.track_id in votes
            and e.identity == sc.actors[votes[e.track_id].most_common(1)[0][0]].identity
        )
        judged = sum(1 for e in ended if e.track_id in votes)
        totals.update(
            gt_boxes=s.gt_boxes,
            idtp=s.idtp,
            pred_boxes=s.pred_boxes,
            switches=s.id_switches,
            frags=s.fragmentations,
            tracks=judged,
            unmatched_tracks=len(ended) - judged,
            right=right,
            pf_right=per_frame_right,
            pf_total=per_frame_total,
            matched=len(s.matches),
            relinked=analyzer.relinked,
        )
        print(
            f"video {v}: {len(truth)} truth boxes, IDF1 {s.idf1:.3f}, switches "
            f"{s.id_switches}, fragmentations {s.fragmentations}, tracks right {right}/{judged}"
            f" (+{len(ended) - judged} unmatched), per-frame right {per_frame_right}/"
            f"{per_frame_total}, relinked {analyzer.relinked}, speed "
            f"{analyzer.summary().speed:.2f}x",
            flush=True,
        )
    g.close()
    t = totals
    track_minutes = track_minutes or 1e-9
    idf1 = 2 * t["idtp"] / (t["gt_boxes"] + t["pred_boxes"])
    print(f"\npreset {args.preset}, {args.videos} videos of {SECONDS:.0f} s at {ACCURACY_SIZE}")
    print(f"ground-truth track-minutes: {track_minutes:.2f}")
    print(f"IDF1 (all videos' boxes): {idf1:.4f}; recall {t['matched'] / t['gt_boxes']:.4f}")
    print(
        f"ID switches: {t['switches']} ({100 * t['switches'] / track_minutes:.2f} per 100 "
        f"track-minutes); fragmentations: {t['frags']} "
        f"({100 * t['frags'] / track_minutes:.2f} per 100 track-minutes)"
    )
    print(
        f"tracks identified right: {t['right']}/{t['tracks']} = {t['right'] / t['tracks']:.4f}"
        f" (tracks matching no truth: {t['unmatched_tracks']})"
    )
    print(
        f"per-frame identification right: {t['pf_right']}/{t['pf_total']} = "
        f"{t['pf_right'] / t['pf_total']:.4f}"
    )
    print(f"new tracker ids relinked to a lost or ended track: {t['relinked']}")


def motmetrics_switches(gt, pred) -> int | None:
    """ID switches by py-motmetrics (the independent count; None if not installed)."""
    try:
        import motmetrics as mm
    except ImportError:
        return None
    from npcface.eval.tracking import iou_matrix

    acc = mm.MOTAccumulator(auto_id=False)
    for f in sorted(set(gt) | set(pred)):
        g, p = gt.get(f, []), pred.get(f, [])
        d = 1.0 - iou_matrix(
            np.array([b for _, b in g]).reshape(-1, 4), np.array([b for _, b in p]).reshape(-1, 4)
        )
        d[d > 0.5] = np.nan
        acc.update([k for k, _ in g], [k for k, _ in p], d, frameid=f)
    return int(mm.metrics.create().compute(acc, metrics=["num_switches"]).num_switches.iloc[0])


def dump(folder: Path, v: int, sc: Scene, gt, pred, events_of, switches):
    """Per frame: truth (actor: box) and tracks
    (id: box) and the analyzer's events, to ``folder/video{v}.txt``."""
    from npcface.eval.tracking import iou_matrix

    folder.mkdir(parents=True, exist_ok=True)
    frames = sorted(set(gt) | set(pred))
    with open(folder / f"video{v}.txt", "w") as out:
        for f, g, a, b in switches:
            out.write(f"switch frame {f}: {sc.actors[g].identity} track {a} -> {b}\n")
        for f in frames:
            g, p = gt.get(f, []), pred.get(f, [])
            m = iou_matrix(
                np.array([b for _, b in g]).reshape(-1, 4),
                np.array([b for _, b in p]).reshape(-1, 4),
            )
            cells = []
            for i, (actor, box) in enumerate(g):
                best = f"t{p[int(np.argmax(m[i]))][0]}@{m[i].max():.2f}" if p else "-"
                cells.append(
                    f"{sc.actors[actor].identity[:12]}[{int(box[0])},{int(box[1])}]={best}"
                )
            extra = [f"t{k}[{int(b[0])},{int(b[1])}]" for k, b in p]
            ev = "; ".join(
                f"{e.kind} t{e.track_id} {getattr(e, 'identity', '') or ''}"
                f"{' resumed' if getattr(e, 'resumed', False) else ''}"
                for e in events_of.get(f, [])
            )
            out.write(f"{f}: {' | '.join(cells)} || {' '.join(extra)} {ev}\n")


def run_speed(args: argparse.Namespace) -> None:
    rng = random.Random(SEED + 1000)
    base = FaceRecognizer(preset="accurate")
    work = Path(tempfile.mkdtemp(prefix="npcface-video-speed-"))
    everyone = cast(base, args.data, PEOPLE, rng)
    videos = {}
    for size in SPEED_SIZES:
        sc = scene(everyone, size, SPEED_SECONDS, random.Random(SEED), SEED)
        path = work / f"speed{size[1]}.mp4"
        sc.write(path)
        videos[size] = path
    for preset in args.presets:
        rec = FaceRecognizer(preset=preset)
        g = make_gallery(rec, work / f"gallery-{preset}", everyone)
        for size, path in videos.items():
            t0 = time.perf_counter()
            with open_source(path) as src:
                n = sum(1 for _ in src)
            decode = n / FPS / (time.perf_counter() - t0)
            for every in args.every:
                analyzer = VideoAnalyzer(rec, g, every=every)
                with open_source(path) as src:
                    for _ in analyzer.run(src):
                        pass
                s = analyzer.summary()
                stages = ", ".join(
                    f"{k} {1000 * v / s.frames:.1f}" for k, v in analyzer.timings.items()
                )
                rest = s.elapsed - sum(analyzer.timings.values())
                print(
                    f"{preset:8s} {size[0]}x{size[1]} every {every}: {s.speed:.2f}x real time "
                    f"(decoding alone {decode:.2f}x); ms per frame: {stages}, decode and "
                    f"the rest {1000 * rest / s.frames:.1f}; tracks {s.tracks}, identified "
                    f"{s.identified}",
                    flush=True,
                )
        g.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="the LFW folder")
    sub = p.add_subparsers(dest="what", required=True)
    a = sub.add_parser("accuracy")
    a.add_argument("--preset", default="fast")
    a.add_argument("--videos", type=int, default=6)
    a.add_argument("--only", type=int, nargs="+", help="run only these videos of the set (0-based)")
    a.add_argument("--dump", type=Path, help="write frames around each switch to this folder")
    s = sub.add_parser("speed")
    s.add_argument("--presets", nargs="+", default=["fast", "accurate"])
    s.add_argument("--every", nargs="+", type=int, default=[1])
    args = p.parse_args()
    np.random.seed(SEED)
    if getattr(args, "dump", None):
        import logging

        logging.basicConfig(format="%(message)s")
        logging.getLogger("npcface.video").setLevel(logging.DEBUG)
    run_accuracy(args) if args.what == "accuracy" else run_speed(args)


if __name__ == "__main__":
    main()
