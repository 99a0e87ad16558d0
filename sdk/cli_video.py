"""``npcface video``: faces in a video file, stream or camera, tracked and identified."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

from .cli_sdk import add_model_args, recognizer_from_args


def register(sub: Any) -> None:
    v = sub.add_parser(
        "video",
        help="track and identify the faces of a video file, stream or camera",
        description="Follow every face of a video file, a stream (rtsp://, http://, ...) or a "
        "camera (its index) from frame to frame, one track per person; identify each track "
        "against a gallery (again when better faces arrive); list where a person appears "
        "(--find). Files show progress; streams print events as they happen (Ctrl-C stops). "
        "Exit status: 0 done (with --find: the person was found), 1 --find found nobody, "
        "2 error.",
    )
    v.add_argument("source", metavar="SRC", help="video file, stream URL or camera index")
    v.add_argument("--gallery", default=None, help="identify tracks against this gallery")
    v.add_argument("--out", metavar="EVENTS.jsonl", help="write every event as a JSON line")
    v.add_argument("--crops", action="store_true", help="with --out: each ended track's best crop")
    v.add_argument("--draw", metavar="OUT.mp4", help="write the video with boxes, ids and names")
    v.add_argument(
        "--find",
        metavar="PHOTO",
        action="append",
        default=[],
        help="list the time ranges where the person of PHOTO appears (repeatable)",
    )
    v.add_argument("--every", type=int, default=1, help="detect on every N-th frame (1)")
    v.add_argument("--threshold", type=float, default=None, help="cosine threshold of a match")
    v.add_argument("--far", type=float, default=None, help="the threshold calibrated for this FAR")
    v.add_argument(
        "--lost-after", type=float, default=1.0, help="seconds before an unseen track ends (1)"
    )
    v.add_argument("--buffer", type=int, default=4, help="frames a live source holds (4)")
    v.add_argument(
        "--listen",
        action="store_true",
        help="receive a stream pushed to SRC (rtsp://HOST:PORT/PATH) instead of connecting",
    )
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    v.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_model_args(v)
    v.set_defaults(func=_video)


def _clock(t: float) -> str:
    m, s = divmod(max(t, 0.0), 60)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:05.2f}" if h else f"{m:02d}:{s:05.2f}"


def _say(event: Any) -> str:
    if event.kind == "started":
        again = " again (found within the relink window)" if event.resumed else ""
        return f"[{_clock(event.time)}] track {event.track_id} started{again}"
    if event.kind == "identified":
        far = f", FAR {event.far:g}" if event.far is not None else ""
        return (
            f"[{_clock(event.time)}] track {event.track_id} is {event.identity} "
            f"(similarity {event.similarity:.3f}{far})"
        )
    who = event.identity or "unknown"
    return (
        f"[{_clock(event.end)}] track {event.track_id} ended: {who}, "
        f"{_clock(event.start)}-{_clock(event.end)}"
    )


def _video(args: argparse.Namespace) -> int:
    from .errors import InvalidArgumentError
    from .video.analyze import VideoAnalyzer
    from .video.find import appearances_by_identity, find_person
    from .video.source import open_source

    if args.crops and not args.out:
        raise InvalidArgumentError("--crops needs --out", input="crops")
    rec = recognizer_from_args(args)
    rec.prefetch_detector()
    probes = {photo: rec.embed(photo) for photo in args.find}
    with contextlib.ExitStack() as stack:
        gallery = None
        if args.gallery:
            from .gallery import Gallery

            gallery = stack.enter_context(Gallery.open(args.gallery, readonly=True))
        options = {"rtsp_flags": "listen"} if args.listen else None
        source = stack.enter_context(open_source(args.source, buffer=args.buffer, options=options))
        analyzer = VideoAnalyzer(
            rec,
            gallery,
            every=args.every,
            threshold=args.threshold,
            far=args.far,
            lost_after=args.lost_after,
        )
        threshold = rec.decision_threshold(args.threshold, args.far) if probes else None
        out = stack.enter_context(open(args.out, "w", encoding="utf-8")) if args.out else None
        writer = None
        if args.draw:
            from .video.draw import VideoWriter, annotate

            writer = stack.enter_context(VideoWriter(args.draw, source.fps or 30.0))
        bar = None
        if not source.live and not args.no_progress and sys.stderr.isatty():
            from tqdm import tqdm

            bar = stack.enter_context(
                tqdm(total=source.frame_count, unit="frame", desc=str(args.source), leave=False)
            )
        ended = []
        try:
            for result in analyzer.run(source):
                if bar is not None and result.frame is not None:
                    bar.update(1)
                if writer is not None and result.frame is not None:
                    writer.write(annotate(result.frame.image, result.faces))
                for event in result.events:
                    if event.kind == "ended":
                        ended.append(event)
                    if out is not None:
                        data = (
                            event.to_dict(crop=True)
                            if event.kind == "ended" and args.crops
                            else event.to_dict()
                        )
                        out.write(json.dumps(data) + "\n")
                        if source.live:
                            out.flush()
                    if source.live and not args.json:
                        print(_say(event), flush=True)
        except KeyboardInterrupt:  # Ctrl-C ends a stream: close the open tracks, summarise
            source.close()
            for event in analyzer.finish().events:
                ended.append(event)
                if out is not None:
                    out.write(json.dumps(event.to_dict()) + "\n")
        summary = analyzer.summary()
    found = {p: find_person(ended, e, threshold, gap=args.lost_after) for p, e in probes.items()}
    people = appearances_by_identity(ended, gap=args.lost_after)
    if args.json:
        print(
            json.dumps(
                {
                    **summary.to_dict(),
                    "identities": {k: [a.to_dict() for a in v] for k, v in people.items()},
                    "found": {k: [a.to_dict() for a in v] for k, v in found.items()},
                },
                indent=2,
            )
        )
    else:
        s = summary
        print(
            f"{s.frames} frames ({s.detected_frames} with detection), {s.tracks} tracks, "
            f"{s.identified} identified, {s.dropped} frames dropped, "
            f"{s.video_seconds:.1f} s of video in {s.elapsed:.1f} s ({s.speed:.2f}x real time)"
        )
        for name, ranges in people.items():
            spans = ", ".join(f"{_clock(a.start)}-{_clock(a.end)}" for a in ranges)
            print(f"  {name}: {spans}")
        for photo, ranges in found.items():
            if not ranges:
                print(f"{photo}: not found")
            for a in ranges:
                print(
                    f"{photo}: {_clock(a.start)}-{_clock(a.end)} (tracks "
                    f"{', '.join(map(str, a.tracks))}; similarity {a.similarity:.3f})"
                )
    if probes:
        return 0 if all(found.values()) else 1
    return 0
