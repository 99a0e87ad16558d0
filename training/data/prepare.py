"""``npcface train prepare``: detect and align raw photos into training crops with the SDK.

Training crops come from the SDK's one pipeline (:meth:`npcface.FaceRecognizer.crop_many`)
built from a :class:`~npcface.config.RecognizerConfig`: by default the inference default
(the ``accurate`` preset's detector, face policy and aligner), so a model is trained on the
crops the default pipeline makes at inference time. The report names the pipeline, and a
resumed run refuses another pipeline than the one that began it.

Input: ``RAW_DIR/<identity>/<photo>``. Output: ``OUT_DIR/<identity>/<photo stem>.jpg``
(BGR JPEG, ``size`` x ``size``), plus

- ``prepare_manifest.jsonl``: one line per photo processed (status, number of faces,
  landmarks of the face used). A re-run skips every photo already in it: preparation is
  resumable after an interruption, and a finished run is a no-op.
- ``prepare_report.json``: counts and the lists of photos with no face or several faces.

Photos with several faces keep the face the configuration's face policy picks
(``multiple="keep"``), or are skipped (``multiple="skip"``). Photos with no face are
skipped, or (``no_face="mean"``, for evaluation sets that must keep every image) aligned
with the mean landmarks of the data set's detected faces, relative to the photo size.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from npcface.fsutil import atomic_write_bytes

from ..errors import DataError
from .base import IMAGE_EXTENSIONS
from .folder import scan_folder

__all__ = ["PrepareReport", "list_raw_images", "prepare_dataset"]

log = logging.getLogger(__name__)

MANIFEST = "prepare_manifest.jsonl"
REPORT = "prepare_report.json"
JPEG_QUALITY = 95
MULTIPLE_CHOICES = ("keep", "skip", "largest", "center", "best_score")
"""``keep`` the face the configuration's policy picks, ``skip`` the photo, or a face policy
that overrides the configuration's."""
CONFIG = "prepare_config.json"
NO_FACE_CHOICES = ("skip", "mean")


@dataclass
class PrepareReport:
    """Outcome of :func:`prepare_dataset` over every photo of ``raw_dir`` (this run and
    earlier runs of the same output folder).

    Attributes:
        total: photos found under ``raw_dir/<identity>/``.
        written: crops on disk.
        no_face: photos where the detector found no face.
        multiple: photos with several faces (kept with ``multiple`` policy, or skipped).
        errors: photos that could not be read.
        fallback: no-face photos aligned with the mean landmarks (``no_face="mean"``).
        resumed: photos skipped because an earlier run had processed them.
        identities: identity folders with at least one crop.
        pipeline: the configuration that made the crops, in words
            (:meth:`~npcface.config.RecognizerConfig.describe`).
        no_face_files, multiple_files, error_files: relative paths.
    """

    raw_dir: str
    out_dir: str
    size: int
    total: int = 0
    written: int = 0
    no_face: int = 0
    multiple: int = 0
    errors: int = 0
    fallback: int = 0
    resumed: int = 0
    identities: int = 0
    multiple_policy: str = "center"
    no_face_policy: str = "skip"
    pipeline: str = ""
    no_face_files: list[str] = field(default_factory=list)
    multiple_files: list[str] = field(default_factory=list)
    error_files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        kept = (
            "kept (" + self.multiple_policy + ")" if self.multiple_policy != "skip" else "skipped"
        )
        nf = "skipped" if self.no_face_policy == "skip" else f"{self.fallback} mean-aligned"
        return (
            f"{self.raw_dir}: {self.total} photos, {self.written} crops of {self.size}x{self.size} "
            f"in {self.identities} identities -> {self.out_dir}\n"
            f"  no face: {self.no_face} ({nf}); several faces: {self.multiple} ({kept}); "
            f"unreadable: {self.errors}; already done before this run: {self.resumed}\n"
            f"  pipeline: {self.pipeline}\n"
            f"  lists: {Path(self.out_dir) / REPORT}"
        )


def list_raw_images(raw_dir: str | Path) -> list[str]:
    """Relative paths ``<identity>/<photo>`` of the images under ``raw_dir``, sorted.

    Hidden files and folders (``.ipynb_checkpoints``, macOS ``._photo.jpg``; see
    :func:`~npcface.training.data.base.is_hidden`) and identity folders without photos are
    left out, with one warning line per kind (the same scan as training's folder data set).
    """
    scan = scan_folder(raw_dir)
    return [str(p.relative_to(scan.root).as_posix()) for p in scan.paths]


def _out_path(out_dir: Path, rel: str) -> Path:
    ident, name = rel.split("/", 1)
    return out_dir / ident / (Path(name).stem + ".jpg")


def _write_crop(path: Path, crop: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise DataError(f"cannot encode the crop for {path}")
    atomic_write_bytes(path, data.tobytes(), durable=False)


# ---------------------------------------------------------------------- worker side

_WORKER: dict[str, Any] = {}


def _init_worker(config: dict[str, Any]) -> None:
    from npcface import FaceRecognizer
    from npcface.config import RecognizerConfig

    cv2.setNumThreads(1)
    _WORKER["recognizer"] = FaceRecognizer.from_config(RecognizerConfig.from_dict(config))


def _process(task: tuple[str, str, str, int, str]) -> dict[str, Any]:
    from npcface.errors import NpcfaceError
    from npcface.image import load_image

    raw_dir, out_dir, rel, size, multiple = task
    entry: dict[str, Any] = {"src": rel, "faces": 0}
    try:
        image = load_image(str(Path(raw_dir) / rel))
    except (NpcfaceError, OSError) as exc:
        entry.update(status="error", error=str(exc))
        return entry
    rec = _WORKER["recognizer"]
    policy = "single" if multiple == "skip" else rec.face_policy
    r = rec.crop_many([image], policy, size, [rel], aligned_arrays=False)[0]
    h, w = image.shape[:2]
    entry.update(faces=r.faces_found, shape=[h, w])
    if r.faces_found == 0:
        entry["status"] = "no_face"
        return entry
    entry["status"] = "ok" if r.faces_found == 1 else "multiple"
    if not r.ok:
        if r.kind != "multiple_faces":
            entry.update(status="error", error=str(r.error))
        return entry
    _write_crop(_out_path(Path(out_dir), rel), r.crop)
    entry.update(
        written=True,
        score=round(float(r.face.score), 4),
        landmarks=[[round(float(x) / w, 5), round(float(y) / h, 5)] for x, y in r.face.landmarks],
    )
    return entry


# ---------------------------------------------------------------------- driver


def _read_manifest(path: Path) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return done
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interruption: that photo is processed again
            done[entry["src"]] = entry
    return done


def prepare_dataset(
    raw_dir: str | Path,
    out_dir: str | Path,
    *,
    size: int = 120,
    workers: int = 2,
    config: Any = None,
    multiple: str = "keep",
    no_face: str = "skip",
    progress: bool = True,
    limit: int | None = None,
    only: set[str] | None = None,
) -> PrepareReport:
    """Detect, align and write a crop for every photo of ``raw_dir/<identity>/``.

    Args:
        raw_dir: folder of identity folders of raw photos.
        out_dir: where crops, the manifest and the report go.
        size: crop side (the paper: 120).
        workers: worker processes (each runs its own single-threaded detector).
        config: the pipeline (:class:`~npcface.config.RecognizerConfig`); default the
            inference default, so train and inference crops match.
        multiple: several faces: ``keep`` the face the configuration's policy picks,
            ``skip`` the photo, or a face policy name that overrides the configuration's.
        no_face: ``skip`` or ``mean`` (align with the mean landmarks of detected faces).
        progress: show a progress bar.
        limit: only the first ``limit`` photos (quick checks).
        only: only these ``<identity>/<photo>`` relative paths (e.g. the images a pairs
            protocol uses).

    Returns:
        The :class:`PrepareReport` (also written to ``out_dir/prepare_report.json``).

    Raises:
        DataError: bad choices, no photos, or ``out_dir`` begun with another pipeline.
    """
    from dataclasses import replace

    from npcface.config import RecognizerConfig

    if multiple not in MULTIPLE_CHOICES:
        raise DataError(f"multiple must be one of {MULTIPLE_CHOICES}, not {multiple!r}")
    config = (config or RecognizerConfig()).resolved()
    if multiple not in ("keep", "skip"):
        config = replace(config, face_policy=multiple)
    config = replace(config, threads=1)  # one single-threaded pipeline per worker
    if no_face not in NO_FACE_CHOICES:
        raise DataError(f"no_face must be one of {NO_FACE_CHOICES}, not {no_face!r}")
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    photos = list_raw_images(raw_dir)
    if only is not None:
        photos = [p for p in photos if p in only]
    if limit is not None:
        photos = photos[:limit]
    if not photos:
        raise DataError(f"no photos under {raw_dir}/<identity>/ (extensions {IMAGE_EXTENSIONS})")
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_config(out_dir / CONFIG, config.to_dict())
    manifest_path = out_dir / MANIFEST
    done = _read_manifest(manifest_path)
    todo = [p for p in photos if p not in done]
    resumed = len(photos) - len(todo)
    if resumed:
        log.info("%d of %d photos already processed; resuming", resumed, len(photos))

    tasks = [(str(raw_dir), str(out_dir), rel, size, multiple) for rel in todo]
    with manifest_path.open("a", encoding="utf-8") as manifest:
        if tasks:
            results = _run(tasks, workers, config.to_dict(), progress)
            for entry in results:
                manifest.write(json.dumps(entry) + "\n")
                manifest.flush()
                done[entry["src"]] = entry
        entries = [done[p] for p in photos]
        if no_face == "mean":
            _mean_fallback(raw_dir, out_dir, entries, size, manifest)

    counts = Counter(e["status"] for e in entries)
    written = [e for e in entries if e.get("written")]
    report = PrepareReport(
        raw_dir=str(raw_dir),
        out_dir=str(out_dir),
        size=size,
        total=len(photos),
        written=len(written),
        no_face=counts["no_face"],
        multiple=counts["multiple"],
        errors=counts["error"],
        fallback=sum(1 for e in entries if e.get("fallback")),
        resumed=resumed,
        identities=len({e["src"].split("/", 1)[0] for e in written}),
        multiple_policy="skip" if multiple == "skip" else str(config.face_policy),
        pipeline=config.describe(),
        no_face_policy=no_face,
        no_face_files=[e["src"] for e in entries if e["status"] == "no_face"],
        multiple_files=[e["src"] for e in entries if e["status"] == "multiple"],
        error_files=[e["src"] for e in entries if e["status"] == "error"],
    )
    (out_dir / REPORT).write_text(json.dumps(report.to_dict(), indent=1), encoding="utf-8")
    return report


def _check_config(path: Path, config: dict[str, Any]) -> None:
    """Record the pipeline of a new preparation; refuse to resume one begun with another."""
    if path.is_file():
        before = json.loads(path.read_text(encoding="utf-8"))
        if before != config:
            changed = sorted(k for k in set(before) | set(config) if before.get(k) != config.get(k))
            raise DataError(
                f"{path.parent} was prepared with another pipeline ({', '.join(changed)} "
                "differ); prepare into a new folder, or delete it to start again"
            )
        return
    path.write_text(json.dumps(config, indent=1, sort_keys=True), encoding="utf-8")


def _run(tasks, workers: int, config: dict[str, Any], progress: bool):
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), unit="photo", disable=not progress, desc="prepare")
    try:
        if workers <= 1:
            _init_worker(config)
            for t in tasks:
                yield _process(t)
                bar.update()
            return
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers, _init_worker, (config,)) as pool:
            for entry in pool.imap_unordered(_process, tasks, chunksize=4):
                yield entry
                bar.update()
    finally:
        bar.close()


def _mean_fallback(raw_dir: Path, out_dir: Path, entries: list[dict], size: int, manifest) -> None:
    """Align no-face photos with the mean relative landmarks of the detected faces."""
    from npcface.align import align_faces
    from npcface.image import load_image

    marks = [e["landmarks"] for e in entries if e.get("landmarks") and not e.get("fallback")]
    pending = [e for e in entries if e["status"] == "no_face" and not e.get("written")]
    if not pending:
        return
    if not marks:
        log.warning("no detected face to take mean landmarks from; %d photos skipped", len(pending))
        return
    mean = np.mean(np.asarray(marks, dtype=np.float64), axis=0)  # (5, 2), relative
    for e in pending:
        image = load_image(str(raw_dir / e["src"]))
        h, w = image.shape[:2]
        crop = align_faces(image, mean * [w, h], size)[0]
        _write_crop(_out_path(out_dir, e["src"]), crop)
        e.update(written=True, fallback=True)
        manifest.write(json.dumps(e) + "\n")
    manifest.flush()
