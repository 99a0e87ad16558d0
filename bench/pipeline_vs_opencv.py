"""Our pipeline vs OpenCV's own FaceDetectorYN + FaceRecognizerSF, same weights, same images.

    python bench/pipeline_vs_opencv.py --data ../shared/data/lfw [--limit N]
        [--preset accurate|fast] [--batch B] [--stages] [--recognizer NAME]

Both run in one process, alternating which goes first, so that load on the machine hits
both alike. Ours is ``FaceRecognizer(preset=...)`` as shipped: with ``--batch 1`` (default)
``embed(photo)`` one photo at a time; with ``--batch B`` (throughput) B photos are decoded,
detected and aligned, then their crops embedded in one call, as bulk enrolment does, while
OpenCV (which has no batch API) runs the same B photos one by one. Prints per-photo time of
each (decode + detect + align + embed), their ratio, and each one's 10-fold LFW accuracy
(pairs.txt; with --limit, pairs whose images were all processed). OpenCV uses the "center"
face choice, as the presets do, so the comparison is of the pipelines.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
from tqdm import tqdm

from npcface import FaceRecognizer
from npcface.eval import evaluate_verification, read_lfw_pairs
from npcface.modelprep import drop_dangling_inputs
from npcface.models import get_model_spec, original_file


class OpenCVPipeline:
    """OpenCV's reference pipeline, as its samples use it."""

    def __init__(self) -> None:
        det_path = original_file(get_model_spec("yunet"))
        rec_model = onnx.load(str(original_file(get_model_spec("sface"))))
        # OpenCV 5 refuses the shipped file's 29 dangling graph inputs, like ONNX Runtime.
        drop_dangling_inputs(rec_model)
        self._tmp = tempfile.TemporaryDirectory()
        rec_path = str(Path(self._tmp.name) / "sface.onnx")
        onnx.save(rec_model, rec_path)
        self.det = cv2.FaceDetectorYN.create(str(det_path), "", (320, 320), 0.6, 0.3, 5000)
        self.rec = cv2.FaceRecognizerSF.create(rec_path, "")

    def embed(self, path: Path, stages: dict[str, float] | None = None) -> np.ndarray | None:
        t0 = time.perf_counter()
        img = cv2.imread(str(path))
        h, w = img.shape[:2]
        t1 = time.perf_counter()
        self.det.setInputSize((w, h))
        _, faces = self.det.detect(img)
        t2 = time.perf_counter()
        if faces is None:
            return None
        centres = (faces[:, 0] + faces[:, 2] / 2 - w / 2) ** 2 + (
            faces[:, 1] + faces[:, 3] / 2 - h / 2
        ) ** 2
        areas = faces[:, 2] * faces[:, 3]
        centres[areas < 0.25 * areas.max()] = np.inf
        face = faces[int(np.argmin(centres))]
        crop = self.rec.alignCrop(img, face)
        t3 = time.perf_counter()
        feat = self.rec.feature(crop).ravel()
        if stages is not None:
            t4 = time.perf_counter()
            for stage, dt in zip(
                ("decode", "detect", "align", "embed"),
                (t1 - t0, t2 - t1, t3 - t2, t4 - t3),
                strict=True,
            ):
                stages[stage] = stages.get(stage, 0.0) + dt
        return feat / np.linalg.norm(feat)


class OurPipeline:
    def __init__(self, preset: str, recognizer: str | None = None) -> None:
        self.rec = FaceRecognizer(preset=preset, recognizer=recognizer)
        _ = self.rec.embedder, self.rec.detector  # load models before timing

    def embed(self, path: Path, stages: dict[str, float] | None = None) -> np.ndarray | None:
        # the public pipeline, one image (embed_many of one = represent + its error as a value)
        return self.rec.embed_many([path], timings=stages)[0].embedding

    def embed_batch(
        self, paths: list[Path], stages: dict[str, float] | None = None
    ) -> list[np.ndarray | None]:
        # crops batched across photos
        return [r.embedding for r in self.rec.embed_many(paths, timings=stages)]


def accuracy(pairs, feats: dict[Path, np.ndarray | None]) -> tuple[float, float, int]:
    usable = [p for p in pairs if p.path1 in feats and p.path2 in feats]
    scores = np.array(
        [
            -1.0
            if feats[p.path1] is None or feats[p.path2] is None
            else float(feats[p.path1] @ feats[p.path2])
            for p in usable
        ]
    )
    labels = np.array([p.same for p in usable])
    folds = np.array([p.fold for p in usable])
    rep = evaluate_verification(scores, labels, folds, fars=(1e-3,))
    return rep.accuracy_mean, rep.accuracy_std, len(usable)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/lfw")
    ap.add_argument("--limit", type=int, default=None, help="first N images only")
    ap.add_argument("--preset", default="accurate", help="our preset (accurate, fast)")
    ap.add_argument("--batch", type=int, default=1, help="photos per embedding call (ours)")
    ap.add_argument("--recognizer", default=None, help="override the preset's recogniser")
    ap.add_argument(
        "--stages", action="store_true", help="also print ms/photo per stage of each pipeline"
    )
    args = ap.parse_args()

    pairs = read_lfw_pairs(args.data)
    paths = sorted({p.path1 for p in pairs} | {p.path2 for p in pairs})[: args.limit]
    ours, ref = OurPipeline(args.preset, args.recognizer), OpenCVPipeline()
    t_ours = t_ref = 0.0
    st_ours: dict[str, float] | None = {} if args.stages else None
    st_ref: dict[str, float] | None = {} if args.stages else None
    f_ours: dict[Path, np.ndarray | None] = {}
    f_ref: dict[Path, np.ndarray | None] = {}
    groups = [paths[i : i + args.batch] for i in range(0, len(paths), args.batch)]
    for i, group in enumerate(tqdm(groups, unit="group", mininterval=30)):
        for who in ("ours", "ref") if i % 2 == 0 else ("ref", "ours"):
            t0 = time.perf_counter()
            if who == "ours":
                if args.batch > 1:
                    embs = ours.embed_batch(group, st_ours)
                else:
                    embs = [ours.embed(group[0], st_ours)]
                f_ours.update(zip(group, embs, strict=True))
                t_ours += time.perf_counter() - t0
            else:
                f_ref.update((p, ref.embed(p, st_ref)) for p in group)
                t_ref += time.perf_counter() - t0
    n = len(paths)
    a_ours, s_ours, np_ours = accuracy(pairs, f_ours)
    a_ref, s_ref, _ = accuracy(pairs, f_ref)
    miss_ours = sum(v is None for v in f_ours.values())
    miss_ref = sum(v is None for v in f_ref.values())
    engine = ours.rec.embedder.runner.backend
    print(f"images: {n}, pairs evaluated: {np_ours}")
    print(f"{'pipeline':<44} {'ms/image':>9} {'LFW acc':>15} {'no face':>8}")
    det = ours.rec.detector.name
    model = ours.rec.info.name
    label = f"npcface {args.preset} ({det}, {model}, flip={ours.rec.flip}, {engine}, batch {args.batch})"
    print(
        f"{label:<44} {1000 * t_ours / n:9.2f} "
        f"{100 * a_ours:8.2f} +-{100 * s_ours:4.2f} {miss_ours:8d}"
    )
    print(
        f"{'OpenCV FaceDetectorYN + FaceRecognizerSF':<44} {1000 * t_ref / n:9.2f} "
        f"{100 * a_ref:8.2f} +-{100 * s_ref:4.2f} {miss_ref:8d}"
    )
    print(f"time ratio npcface / OpenCV: {t_ours / t_ref:.3f}")
    if st_ours is not None and st_ref is not None:
        print("ms/photo per stage (the rest of each total is Python between the stages):")
        for name, st, total in (("npcface", st_ours, t_ours), ("OpenCV", st_ref, t_ref)):
            parts = "  ".join(f"{k} {1000 * v / n:.2f}" for k, v in st.items())
            other = 1000 * (total - sum(st.values())) / n
            print(f"  {name:<8} {parts}  other {other:.2f}")


if __name__ == "__main__":
    main()
