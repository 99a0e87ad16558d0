"""Bulk enrolment: a folder (one sub-folder per identity) or a CSV of ``path,identity``.

* Files are read, hashed (SHA-256 of the bytes) and decoded in worker processes.
* Faces go through the recogniser's one pipeline (:meth:`~npcface.FaceRecognizer.embed_many`)
  in this process, crops embedded in batches, and each batch is committed to the gallery in one transaction: a template is acknowledged (``on_commit``)
  only once it is durable.
* Resumable: files whose content hash is already in the gallery are skipped, so re-running
  the same command after an interruption (even SIGKILL) continues where it stopped.
* Per-file failures (unreadable, no face, ...) go to a CSV report and never stop the run.
* The index is saved every ``save_interval`` seconds and at the end; after a crash the
  gallery catches the index up from the database when it is reopened.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GalleryError, ImageError
from ..image import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, load_image

log = logging.getLogger(__name__)

SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini", "icon\r"})
"""File names (lower case) that operating systems drop into photo folders; ignored, as are
hidden files and folders (names starting with a dot: .DS_Store, ._IMG_0001.JPG, .git)."""
REPORT_NAME = "enroll-report.csv"
IN_FLIGHT_PER_WORKER = 8
"""Decoded images waiting per worker: bounds memory while keeping workers busy."""


@dataclass(frozen=True)
class EnrollItem:
    """One image to enroll: its path and the identity it belongs to."""

    path: str
    identity: str


@dataclass(frozen=True)
class EnrollSummary:
    """Outcome of a bulk enrolment.

    Attributes:
        total: images listed.
        enrolled: templates added by this run.
        skipped: images already in the gallery (same content hash) or repeated in the input.
        failed: images that gave no template (see the report).
        low_quality: of those, faces refused by the quality gate (report kind
            ``low_quality``; the recogniser's ``enroll_quality``).
        seconds: wall time.
        report: path of the CSV report of failures.
    """

    total: int
    enrolled: int
    skipped: int
    failed: int
    seconds: float
    report: str | None
    low_quality: int = 0

    @property
    def images_per_second(self) -> float:
        return self.total / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["images_per_second"] = round(self.images_per_second, 2)
        return d


def default_report(gallery: Any) -> Path:
    """Where the failure report goes by default: in a local gallery's folder, else in the
    gallery's ``report_dir`` (next to a Milvus Lite file; the working directory for a
    server)."""
    base = getattr(gallery, "report_dir", None)
    return Path(base if base is not None else gallery.path) / REPORT_NAME


# ------------------------------------------------------------------- listing
def list_images(source: str | os.PathLike[str]) -> list[EnrollItem]:
    """The images to enroll from a folder or a CSV file.

    Args:
        source: a directory with one sub-directory per identity (the sub-directory's name is
            the identity; every file anywhere below it belongs to it, whatever its suffix:
            files that do not decode are reported by :func:`enroll_images` with the reason,
            never skipped silently; only hidden files and folders (names starting with a dot,
            such as .DS_Store and macOS ``._`` files) and :data:`SYSTEM_FILES` are ignored,
            and their number is logged), or a ``.csv`` file with rows ``path,identity`` (an
            optional header row ``path,identity``; relative paths are relative to the CSV's
            directory).

    Returns:
        Items sorted by identity then path (deterministic order, so resumed runs agree).

    Raises:
        GalleryError: the source does not exist or is malformed.
    """
    src = Path(source)
    if src.is_dir():
        items = []
        loose = ignored = 0
        for child in sorted(src.iterdir()):
            if _ignored(child.name):
                ignored += child.is_file()
            elif child.is_dir():
                for f in sorted(child.rglob("*")):
                    if not f.is_file():
                        continue
                    if any(_ignored(part) for part in f.relative_to(child).parts):
                        ignored += 1
                    else:
                        items.append(EnrollItem(str(f), child.name))
            elif child.suffix.lower() in IMAGE_SUFFIXES:
                loose += 1
        if ignored:
            log.info(
                "%s: %d hidden or system files ignored (.DS_Store, ._*, Thumbs.db)", src, ignored
            )
        if loose:
            log.warning(
                "%s: %d images directly in the folder are ignored (put each identity's images "
                "in a sub-folder named after it)",
                src,
                loose,
            )
        return items
    if src.is_file():
        return _read_csv(src)
    raise GalleryError(f"{src}: no such folder or CSV file")


def _ignored(name: str) -> bool:
    return name.startswith(".") or name.lower() in SYSTEM_FILES


def _read_csv(path: Path) -> list[EnrollItem]:
    items = []
    with open(path, newline="", encoding="utf-8") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
                continue
            if lineno == 1 and [c.strip().lower() for c in row[:2]] == ["path", "identity"]:
                continue
            if len(row) < 2 or not row[0].strip() or not row[1].strip():
                raise GalleryError(f"{path}:{lineno}: expected 'path,identity', got {row!r}")
            p = Path(row[0].strip())
            if not p.is_absolute():
                p = path.parent / p
            items.append(EnrollItem(str(p), row[1].strip()))
    return items


# ------------------------------------------------------------------- workers
_known_prefixes = np.zeros(0, dtype=np.uint64)
_max_pixels = DEFAULT_MAX_PIXELS


def _init_worker(prefixes: np.ndarray, max_pixels: int | None = None) -> None:
    global _known_prefixes, _max_pixels
    _known_prefixes = prefixes
    _max_pixels = max_pixels or DEFAULT_MAX_PIXELS  # the recogniser's limit, the one limit
    try:  # one decoding thread per worker process
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover
        pass


def _prefix(digest: str) -> np.uint64:
    return np.uint64(int(digest[:16], 16))


def _load(item: EnrollItem, skip_known: bool = True) -> tuple[str, EnrollItem, str | None, Any]:
    """Read, hash and decode one file: (status, item, sha256, image or message).

    ``status`` is ``ok``, ``known`` (hash probably enrolled: not decoded) or ``unreadable``.
    """
    try:
        data = Path(item.path).read_bytes()
    except OSError as exc:
        return "unreadable", item, None, f"{item.path}: cannot read: {exc.strerror or exc}"
    digest = hashlib.sha256(data).hexdigest()
    if skip_known and _known_prefixes.size:
        pos = np.searchsorted(_known_prefixes, _prefix(digest))
        if pos < _known_prefixes.size and _known_prefixes[pos] == _prefix(digest):
            return "known", item, digest, None
    try:
        image = load_image(data, max_pixels=_max_pixels)
    except ImageError as exc:
        reason = str(exc).split(": ", 1)[-1]
        return "unreadable", item, digest, f"{item.path}: {reason}"
    return "ok", item, digest, image


def _decoded(
    items: Sequence[EnrollItem], workers: int, prefixes: np.ndarray, max_pixels: int | None = None
) -> Iterator[tuple[str, EnrollItem, str | None, Any]]:
    """Decoded items in input order; at most ``workers * IN_FLIGHT_PER_WORKER`` in flight."""
    _init_worker(prefixes, max_pixels)  # here too: a re-read in this process uses the limit
    if workers <= 0:
        for item in items:
            yield _load(item)
        return
    ctx = multiprocessing.get_context("spawn")  # no fork: the parent runs ONNX/OpenMP threads
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(prefixes, max_pixels),
    ) as pool:
        window: deque[Future] = deque()
        it = iter(items)
        for item in it:
            window.append(pool.submit(_load, item))
            if len(window) >= workers * IN_FLIGHT_PER_WORKER:
                break
        while window:
            try:
                result = window.popleft().result()
            except BrokenProcessPool as exc:
                raise GalleryError(
                    "an image-decoding worker process died; when enroll_images runs from a "
                    "script, guard the script's entry point with `if __name__ == '__main__':` "
                    "(workers are spawned and import it), or pass workers=0"
                ) from exc
            nxt = next(it, None)
            if nxt is not None:
                window.append(pool.submit(_load, nxt))
            yield result


# --------------------------------------------------------------------- enrol
def empty_counts() -> dict[str, int]:
    """The per-run counts of a bulk enrolment, all zero."""
    return {"enrolled": 0, "skipped": 0, "failed": 0, "low_quality": 0}


class Ledger:
    """Per-file bookkeeping of a bulk enrolment, shared by every engine: the counts and the
    failure report. Files must be presented in input order (the local engine decodes in
    order; the Ray engine streams its results back in order): of byte-identical files the
    first one listed is enrolled and the later ones are reported as its duplicates, whatever
    happens to the first one afterwards (no face, low quality), as with the local engine.

    Attributes:
        counts: ``enrolled``, ``skipped``, ``failed``, ``low_quality`` (the dict given, so
            that an engine's progress and summary read the ledger's own counts).
    """

    def __init__(
        self, known: set[str], writer: Any, fh: Any, counts: dict[str, int] | None = None
    ) -> None:
        self.known = known
        self.seen: dict[str, str] = {}
        self.counts = empty_counts() if counts is None else counts
        self._writer = writer
        self._fh = fh

    def admit(self, item: EnrollItem, digest: str) -> bool:
        """Whether a readable file with this content hash is new; counts it as skipped (in
        the gallery already) or reports it as a duplicate of an earlier file otherwise."""
        if digest in self.known:
            self.counts["skipped"] += 1
            return False
        first = self.seen.get(digest)
        if first is not None:
            self.counts["skipped"] += 1
            self._writer.writerow([item.path, item.identity, "duplicate", f"same as {first}"])
            return False
        self.seen[digest] = item.path
        return True

    def fail(self, item: EnrollItem, kind: str, reason: str) -> None:
        """Count and report a file that gave no template."""
        self.counts["failed"] += 1
        self.counts["low_quality"] += kind == "low_quality"
        self._writer.writerow([item.path, item.identity, kind, reason])
        self._fh.flush()


def add_batch(
    gallery: Any,
    rows: Sequence[tuple[EnrollItem, str, np.ndarray]],
    on_commit: Callable[[list[int], list[EnrollItem], list[str]], None] | None = None,
) -> int:
    """Commit (item, content hash, embedding) rows to ``gallery`` in one transaction, then
    tell ``on_commit``; the number of templates added. Shared by every enrolment engine."""
    items = [it for it, _, _ in rows]
    digests = [d for _, d, _ in rows]
    ids = gallery.add_many(
        [it.identity for it in items],
        np.stack([e for _, _, e in rows]),
        sources=[it.path for it in items],
        content_hashes=digests,
    )
    if on_commit is not None:
        on_commit(ids, items, digests)
    return len(ids)


def enroll_images(
    gallery: Any,
    recognizer: Any,
    items: Iterable[EnrollItem],
    *,
    workers: int | None = None,
    batch_size: int = 32,
    report: str | os.PathLike[str] | None = None,
    progress: bool = True,
    save_interval: float = 120.0,
    on_commit: Callable[[list[int], list[EnrollItem], list[str]], None] | None = None,
) -> EnrollSummary:
    """Enroll many images into ``gallery``, resumably.

    Args:
        gallery: an open, writable gallery for the recogniser's model.
        recognizer: the :class:`~npcface.FaceRecognizer` to embed with.
        items: images and identities (see :func:`list_images`).
        workers: decoding processes (default: min(4, CPUs); 0 decodes in this process).
        batch_size: faces embedded and committed together.
        report: CSV file for per-file failures (default ``GALLERY/enroll-report.csv``).
        progress: show a tqdm progress bar (images/s).
        save_interval: seconds between index saves (at least 10x the last save's duration,
            so saving a large index never takes more than ~10% of the run).
        on_commit: called after each committed batch with (template ids, items, hashes).

    Returns:
        Counts of enrolled, skipped and failed images.
    """
    items = list(items)
    if batch_size < 1:
        raise GalleryError(f"batch_size must be >= 1, got {batch_size}")
    gallery.check_model(recognizer.info.name, recognizer.info.embedding_size)
    workers = min(4, os.cpu_count() or 1) if workers is None else int(workers)
    report_path = Path(report) if report is not None else default_report(gallery)
    known = gallery.content_hashes()
    prefixes = np.unique(np.array([_prefix(h) for h in known], dtype=np.uint64))
    batch: list[tuple[EnrollItem, str, np.ndarray]] = []
    t0 = last_save = time.monotonic()
    save_cost = 0.0

    from tqdm import tqdm

    bar = tqdm(total=len(items), unit="img", disable=not progress, smoothing=0.05)

    def commit() -> None:
        """Embed the decoded batch through the one pipeline; commit its faces, report the rest."""
        nonlocal last_save, save_cost
        if not batch:
            return
        results = recognizer.embed_many(
            [img for _, _, img in batch],
            names=[it.path for it, _, _ in batch],
            aligned_arrays=False,  # photos, decoded by the workers: always detect and align
            min_quality=getattr(recognizer, "enroll_quality", None),
        )
        done = [(it, d, r.embedding) for (it, d, _), r in zip(batch, results, strict=True) if r.ok]
        for (it, _, _), r in zip(batch, results, strict=True):
            if not r.ok:
                ledger.fail(it, r.kind, str(r.error))
        batch.clear()
        if not done:
            return
        counts["enrolled"] += add_batch(gallery, done, on_commit)
        if time.monotonic() - last_save >= max(save_interval, 10 * save_cost):
            started = time.monotonic()
            gallery.save()
            last_save = time.monotonic()
            save_cost = last_save - started  # large indexes: keep saving under ~10% of the time

    report_path.parent.mkdir(parents=True, exist_ok=True)
    with open(report_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "identity", "kind", "reason"])
        ledger = Ledger(known, writer, fh)
        counts = ledger.counts

        try:
            for status, item, digest, payload in _decoded(
                items, workers, prefixes, getattr(recognizer, "max_pixels", None)
            ):
                bar.update(1)
                if status == "known":
                    if digest in known:
                        counts["skipped"] += 1
                        continue
                    status, item, digest, payload = _load(item, skip_known=False)
                if status == "unreadable":
                    ledger.fail(item, "unreadable", str(payload))
                    continue
                if not ledger.admit(item, str(digest)):
                    continue
                batch.append((item, digest, payload))
                if len(batch) >= batch_size:
                    commit()
                    bar.set_postfix(counts, refresh=False)
            commit()
        except KeyboardInterrupt:
            log.warning("interrupted: committing the faces already embedded")
            commit()
            gallery.save()
            raise
        finally:
            bar.set_postfix(counts, refresh=False)
            bar.close()
    gallery.save()
    return summarize(len(items), counts, t0, report_path)


def summarize(
    total: int, counts: dict[str, int], t0: float, report: Path, engine: str = ""
) -> EnrollSummary:
    """The :class:`EnrollSummary` of a run that started at ``t0`` (``time.monotonic()``),
    logged in one line. Shared by every enrolment engine."""
    summary = EnrollSummary(
        total=total,
        enrolled=counts["enrolled"],
        skipped=counts["skipped"],
        failed=counts["failed"],
        seconds=time.monotonic() - t0,
        report=str(report),
        low_quality=counts["low_quality"],
    )
    log.info(
        "%senrolled %d, skipped %d, failed %d of %d images in %.1f s",
        engine,
        summary.enrolled,
        summary.skipped,
        summary.failed,
        summary.total,
        summary.seconds,
    )
    return summary
