"""``npcface verify`` and ``npcface detect``."""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .presets import DEFAULT_PRESET, get_preset


def register(sub: Any) -> None:
    v = sub.add_parser(
        "verify",
        help="are two images the same person? exit 0 yes, 1 no, 2 error",
        description="Compare the faces of two images. Exit status: 0 same person, "
        "1 different people, 2 error (message on stderr).",
    )
    v.add_argument("image1")
    v.add_argument("image2")
    v.add_argument(
        "--threshold", type=float, default=None, help="cosine threshold (higher = stricter)"
    )
    v.add_argument(
        "--far", type=float, default=None, help="use the threshold calibrated for this FAR"
    )
    add_model_args(v)
    v.add_argument("--json", action="store_true", help="print the result as JSON")
    v.set_defaults(func=_verify)

    d = sub.add_parser("detect", help="list the faces in an image (box, landmarks, score)")
    d.add_argument("image")
    d.add_argument("--detector", default=None, help="default: the accurate preset's")
    d.add_argument("--score-threshold", type=float, default=None)
    d.add_argument("--providers", default=None)
    d.add_argument("--json", action="store_true")
    d.add_argument("--draw", metavar="OUT.png", help="write the image with boxes and landmarks")
    d.set_defaults(func=_detect)


def add_model_args(
    p: argparse.ArgumentParser, *, policy: str | None = None, recognizer: bool = True
) -> None:
    """The options that choose and tune the pipeline, shared by every command that runs it
    (the one parser of a :class:`~npcface.config.RecognizerConfig`: read it back with
    :func:`config_from_args`).

    Unset options take the preset's value (``--preset``, default ``accurate``)."""
    p.add_argument("--preset", default=DEFAULT_PRESET, help="accurate (default) or fast")
    p.add_argument("--detector", default=None, help="yunet or retinaface (default: preset's)")
    if recognizer:
        p.add_argument(
            "--recognizer",
            default=None,
            help="registry name or exported .onnx (default: the preset's)",
        )
    default = policy or "the preset's"
    p.add_argument(
        "--policy", default=policy, help=f"center, largest, best_score or single ({default})"
    )
    flip = p.add_mutually_exclusive_group()
    flip.add_argument(
        "--flip", dest="flip", action="store_true", default=None, help="flip-fused embeddings"
    )
    flip.add_argument("--no-flip", dest="flip", action="store_false", help="no flip fusion")
    p.add_argument(
        "--det-min-side",
        type=int,
        default=None,
        help="upscale smaller images to this side for detection (more precise landmarks)",
    )
    p.add_argument("--providers", default=None, help="cpu, cuda, tensorrt (default: auto)")
    p.add_argument(
        "--backend",
        default="auto",
        help="recogniser engine: auto, onnxruntime, openvino, opencv, tensorrt (default auto)",
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads per model (all)")
    p.add_argument(
        "--max-pixels", type=int, default=None, help="largest image in pixels (default 64 M)"
    )


def image_args(inputs: Sequence[str]) -> list[str]:
    """The images a command line names: files as given; folders expanded to every image
    (by suffix, :data:`~npcface.image.IMAGE_SUFFIXES`) below them, sorted, hidden files and
    folders left out; ``.csv`` files read (first column, an optional ``path`` header,
    ``#`` comments; relative paths are against the CSV's folder).

    Raises:
        InvalidArgumentError: a CSV row without a path, or a name that does not exist.
    """
    from .errors import InvalidArgumentError
    from .image import IMAGE_SUFFIXES

    out: list[str] = []
    for name in inputs:
        item = Path(name)
        if item.is_dir():
            out.extend(
                str(f)
                for f in sorted(item.rglob("*"))
                if f.suffix.lower() in IMAGE_SUFFIXES
                and f.is_file()
                and not any(part.startswith(".") for part in f.relative_to(item).parts)
            )
        elif item.suffix.lower() == ".csv" and item.is_file():
            out.extend(_csv_paths(item))
        elif item.exists():
            out.append(name)
        else:
            raise InvalidArgumentError(f"{name}: no such file or folder")
    return out


def _csv_paths(path: Path) -> list[str]:
    from .errors import InvalidArgumentError

    out = []
    with open(path, newline="", encoding="utf-8") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            first = row[0].strip() if row else ""
            blank = not any(c.strip() for c in row)
            if blank or first.startswith("#") or (lineno == 1 and first.lower() == "path"):
                continue
            if not first:
                raise InvalidArgumentError(f"{path}:{lineno}: no path in the first column")
            p = Path(first)
            out.append(str(p if p.is_absolute() else path.parent / p))
    return out


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~npcface.config.RecognizerConfig` that :func:`add_model_args`'s options
    describe (checked: an unknown name is an error here).

    Raises:
        InvalidArgumentError: an option the configuration refuses.
    """
    from .config import RecognizerConfig

    min_side = getattr(args, "det_min_side", None)
    return RecognizerConfig(
        preset=getattr(args, "preset", DEFAULT_PRESET),
        detector=getattr(args, "detector", None),
        detector_options={"min_side": min_side} if min_side else {},
        recognizer=getattr(args, "recognizer", None),
        face_policy=getattr(args, "policy", None),
        flip=getattr(args, "flip", None),
        providers=getattr(args, "providers", None),
        backend=getattr(args, "backend", "auto"),
        threads=getattr(args, "threads", None),
        max_pixels=getattr(args, "max_pixels", None),
    )


def recognizer_from_args(args: argparse.Namespace) -> Any:
    """The :class:`FaceRecognizer` of :func:`config_from_args` (nothing loaded yet)."""
    from .recognizer import FaceRecognizer

    return FaceRecognizer.from_config(config_from_args(args))


def _verify(args: argparse.Namespace) -> int:
    rec = recognizer_from_args(args)
    rec.prefetch_detector()  # beside the recogniser's start-up, which verify needs first
    result = rec.verify(args.image1, args.image2, threshold=args.threshold, far=args.far)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        verdict = "same person" if result.verified else "different people"
        print(
            f"{verdict}: similarity {result.similarity:.4f} "
            f"(threshold {result.threshold:.4f}, model {result.model})"
        )
    return 0 if result.verified else 1


def _detect(args: argparse.Namespace) -> int:
    from .detect import get_detector
    from .image import load_image

    opts = {"providers": args.providers}
    if args.score_threshold is not None:
        opts["score_threshold"] = args.score_threshold
    img = load_image(args.image)
    name = args.detector or get_preset(DEFAULT_PRESET).detector
    faces = get_detector(name, **opts).detect(img)
    if args.json:
        print(json.dumps([f.to_dict() for f in faces], indent=2))
    else:
        print(f"{len(faces)} face(s) in {args.image}")
        for i, f in enumerate(faces):
            x1, y1, x2, y2 = (round(float(v)) for v in f.box)
            print(f"  {i}: box ({x1}, {y1}, {x2}, {y2}) score {f.score:.3f}")
    if args.draw:
        from .draw import draw_faces, save_image

        save_image(args.draw, draw_faces(img, faces))
    return 0
