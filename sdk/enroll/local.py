"""Bulk enrolment: a folder (one sub-folder per identity) or a CSV of ``path,identity``.

* Worker processes (one per CPU, one inference thread each) run the whole pipeline on
  batches of files: read, hash (SHA-256 of the bytes), decode, detect, align, embed
  (:class:`~npcface.enroll.worker.BatchEmbedder`, the Ray engine's actors' job too). On 2
  cores they enrolled 1.14x (accurate preset) to 1.43x (fast) the photos/s of one process
  with two inference threads (``bench/enroll_engines.py``; their start-up included).
* This process is the one writer: results come back in input order and each batch is
  committed to the gallery in one transaction; a template is acknowledged (``on_commit``)
  only once it is durable.
* Resumable: files whose content hash is already in the gallery are skipped, so re-running
  the same command after an interruption (even SIGKILL) continues where it stopped.
* Per-file failures (unreadable, no face, ...) go to a CSV report and never stop the run.
* The index is saved every ``save_interval`` seconds and at the end; after a crash the
  gallery catches the index up from the database when it is reopened.
"""

from __future__ import annotations

import csv
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

from ..errors import GalleryError
from ..image import IMAGE_SUFFIXES
from .worker import BatchEmbedder, known_prefixes, recognizer_recipe

log = logging.getLogger(__name__)

SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini", "icon\r"})
"""File names (lower case) that operating systems drop into photo folders; ignored, as are
hidden files and folders (names starting with a dot: .DS_Store, ._IMG_0001.JPG, .git)."""
REPORT_NAME = "enroll-report.csv"
CHUNKS_PER_WORKER = 2
"""Tasks (of ``batch_size`` files) in flight per worker process: one running, one queued,
so that no worker waits for the writer while memory stays bounded."""


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
Row = tuple[EnrollItem, str, str, str, np.ndarray]
"""One file's outcome from a worker: (item, content hash, status, reason, embedding); see
:meth:`~npcface.enroll.worker.BatchEmbedder.embed_paths`."""

_embedder: BatchEmbedder | None = None


def _start_worker(recipe: dict[str, Any], prefixes: np.ndarray, threads: int) -> None:
    global _embedder
    _embedder = BatchEmbedder(recipe, prefixes, threads)


def _work(paths: list[str]) -> dict[str, np.ndarray]:
    assert _embedder is not None, "the worker was not started"
    return _embedder.embed_paths(paths)


def _rows(items: Sequence[EnrollItem], out: dict[str, np.ndarray]) -> Iterator[Row]:
    yield from zip(
        items, out["digest"], out["status"], out["reason"], out["embedding"], strict=True
    )


def _in_process(items: Sequence[EnrollItem], embedder: BatchEmbedder, chunk: int) -> Iterator[Row]:
    """Rows of every item, in input order, computed in this process."""
    for start in range(0, len(items), chunk):
        part = items[start : start + chunk]
        yield from _rows(part, embedder.embed_paths([it.path for it in part]))


def _in_workers(
    items: Sequence[EnrollItem],
    workers: int,
    recipe: dict[str, Any],
    prefixes: np.ndarray,
    chunk: int,
) -> Iterator[Row]:
    """Rows of every item, in input order, computed by ``workers`` processes running the
    pipeline with one inference thread each; at most :data:`CHUNKS_PER_WORKER` chunks of
    ``chunk`` files in flight per worker."""
    ctx = multiprocessing.get_context("spawn")  # no fork: the parent runs ONNX/OpenMP threads
    parts = [items[i : i + chunk] for i in range(0, len(items), chunk)]
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=ctx,
        initializer=_start_worker,
        initargs=(recipe, prefixes, 1),
    ) as pool:
        window: deque[tuple[Sequence[EnrollItem], Future]] = deque()
        todo = iter(parts)
        try:
            for part in todo:
                window.append((part, pool.submit(_work, [it.path for it in part])))
                if len(window) >= workers * CHUNKS_PER_WORKER:
                    break
            while window:
                part, future = window.popleft()
                try:
                    out = future.result()
                except BrokenProcessPool as exc:
                    raise GalleryError(
                        "an enrolment worker process died (or could not load the models); "
                        "when enroll_images runs from a script, guard the script's entry point "
                        "with `if __name__ == '__main__':` (workers are spawned and import it), "
                        "or pass workers=0"
                    ) from exc
                nxt = next(todo, None)
                if nxt is not None:
                    window.append((nxt, pool.submit(_work, [it.path for it in nxt])))
                yield from _rows(part, out)
        finally:
            for _, future in window:
                future.cancel()


def pipeline_workers(recognizer: Any, workers: int | None) -> tuple[int, str | None]:
    """How many worker processes run the pipeline: ``workers`` (default: one per CPU), or
    0 with the reason when the recogniser cannot be rebuilt from its configuration."""
    n = (os.cpu_count() or 1) if workers is None else int(workers)
    if n < 0:
        raise GalleryError(f"workers must be >= 0, got {workers}")
    if n == 0:
        return 0, None
    try:
        recognizer_recipe(recognizer)
    except GalleryError as exc:
        return 0, str(exc)
    return n, None


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
        workers: processes running the whole pipeline (read, hash, decode, detect, align,
            embed), each with its own copy of the recogniser built from its configuration
            and one inference thread (default: one per CPU; 0: everything in this process
            with the recogniser given, whose threads are its own). A recogniser built with
            a detector or embedder object runs in this process whatever ``workers`` says.
            With a GPU provider each worker loads its own models on the GPU (not run here).
        batch_size: files per worker task, faces embedded together and committed together.
        report: CSV file for per-file failures (default ``GALLERY/enroll-report.csv``).
        progress: show a tqdm progress bar (images/s).
        save_interval: seconds between index saves (at least 10x the last save's duration,
            so saving a large index never takes more than ~10% of the run).
        on_commit: called after each committed batch with (template ids, items, hashes).

    Returns:
        Counts of enrolled, skipped and failed images.

    Raises:
        GalleryError: bad arguments, the gallery refuses the recogniser's model, or a
            worker process died.
    """
    items = list(items)
    if batch_size < 1:
        raise GalleryError(f"batch_size must be >= 1, got {batch_size}")
    gallery.check_model(recognizer.info.name, recognizer.info.embedding_size)
    n_workers, why_here = pipeline_workers(recognizer, workers)
    if why_here and workers:
        log.info("enrolling in this process: %s", why_here)
    report_path = Path(report) if report is not None else default_report(gallery)
    known = gallery.content_hashes()
    prefixes = known_prefixes(known)
    t0 = time.monotonic()

    here = BatchEmbedder.of(recognizer, prefixes)
    if n_workers:
        rows = _in_workers(items, n_workers, recognizer_recipe(recognizer), prefixes, batch_size)
    else:
        rows = _in_process(items, here, batch_size)
    counts = write_rows(
        gallery,
        rows,
        total=len(items),
        known=known,
        here=here,
        report=report_path,
        batch_size=batch_size,
        progress=progress,
        save_interval=save_interval,
        on_commit=on_commit,
    )
    return summarize(len(items), counts, t0, report_path)


def write_rows(
    gallery: Any,
    rows: Iterable[Row],
    *,
    total: int,
    known: set[str],
    here: BatchEmbedder,
    report: Path,
    batch_size: int,
    progress: bool,
    save_interval: float | None,
    on_commit: Callable[[list[int], list[EnrollItem], list[str]], None] | None,
) -> dict[str, int]:
    """The one writer of every engine: books the workers' rows (in input order) in a
    :class:`Ledger`, commits faces in batches (:class:`BatchWriter`), writes the failure
    report, shows progress, and saves the gallery at the end. An interruption
    (KeyboardInterrupt) commits and saves what was embedded before it goes on.

    Args:
        rows: (item, content hash, status, reason, embedding) of every listed file, in order.
        total: files listed (the progress bar's length).
        known: content hashes in the gallery before the run.
        here: a :class:`~npcface.enroll.worker.BatchEmbedder` in this process, for the rare
            file whose 64-bit hash prefix collided with a known one (never embedded by the
            workers; its model loads only then).
        report: CSV file for per-file failures.

    Returns:
        The run's counts (``enrolled``, ``skipped``, ``failed``, ``low_quality``).
    """
    from tqdm import tqdm

    bar = tqdm(total=total, unit="img", disable=not progress, smoothing=0.05)
    report.parent.mkdir(parents=True, exist_ok=True)
    with open(report, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "identity", "kind", "reason"])
        ledger = Ledger(known, writer, fh)
        counts = ledger.counts
        sink = BatchWriter(gallery, batch_size, counts, on_commit, save_interval)
        try:
            for item, digest, status, reason, emb in rows:
                bar.update(1)
                if status == "known" and digest not in known:
                    # a 64-bit prefix collision, never embedded: embed it here
                    ((_, digest, status, reason, emb),) = _rows(
                        [item], here.embed_paths([item.path], check_known=False)
                    )
                sink.take(ledger, item, str(digest), str(status), str(reason), emb)
                if sink.committed:
                    bar.set_postfix(counts, refresh=False)
            sink.commit()
        except KeyboardInterrupt:
            log.warning("interrupted: committing the faces already embedded")
            sink.commit()
            gallery.save()
            raise
        finally:
            bar.set_postfix(counts, refresh=False)
            bar.close()
    gallery.save()
    return counts


class BatchWriter:
    """The one writer of every engine: takes the workers' rows in input order, books them
    in the :class:`Ledger`, commits faces to the gallery in batches of ``batch_size``
    (:func:`add_batch`) and saves the index every ``save_interval`` seconds (at least 10x
    the last save's duration)."""

    def __init__(
        self,
        gallery: Any,
        batch_size: int,
        counts: dict[str, int],
        on_commit: Callable[[list[int], list[EnrollItem], list[str]], None] | None,
        save_interval: float | None = None,
    ) -> None:
        self.gallery = gallery
        self.batch_size = batch_size
        self.counts = counts
        self.on_commit = on_commit
        self.save_interval = save_interval
        self.pending: list[tuple[EnrollItem, str, np.ndarray]] = []
        self.committed = False
        self._last_save = time.monotonic()
        self._save_cost = 0.0

    def take(
        self, ledger: Ledger, item: EnrollItem, digest: str, status: str, reason: str, emb: Any
    ) -> None:
        """Book one file's row; commit when a batch is full (:attr:`committed` says so)."""
        self.committed = False
        if status == "unreadable":
            ledger.fail(item, status, reason)
        elif status == "known" and digest not in ledger.known:
            ledger.fail(item, "error", "hash prefix collision; re-run")
        elif not ledger.admit(item, digest):
            pass  # in the gallery already, or a later copy of an earlier file
        elif status != "ok":  # no face, several faces, low quality, ...
            ledger.fail(item, status, reason)
        else:
            self.pending.append((item, digest, np.asarray(emb, dtype=np.float32)))
        if len(self.pending) >= self.batch_size:
            self.commit()

    def commit(self) -> None:
        """Commit the pending faces in one transaction; save the index when it is time."""
        if not self.pending:
            return
        self.counts["enrolled"] += add_batch(self.gallery, self.pending, self.on_commit)
        self.pending.clear()
        self.committed = True
        if self.save_interval is None:
            return
        if time.monotonic() - self._last_save >= max(self.save_interval, 10 * self._save_cost):
            started = time.monotonic()
            self.gallery.save()
            self._last_save = time.monotonic()
            self._save_cost = self._last_save - started


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
