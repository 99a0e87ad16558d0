"""Bulk enrolment on Ray Data: the local engine's job, spread over a Ray cluster's CPUs.

* Image paths (from :func:`~npcface.enroll.list_images`: a folder tree or a CSV) become a
  Ray dataset; an actor pool reads, hashes, decodes, detects, aligns and embeds them with
  :meth:`~npcface.FaceRecognizer.embed_many`, the model loaded once per actor.
* This process is the one writer: results stream back and are committed to the gallery
  (any backend) in batches with ``add_many``, content hash included.
* Resumable as the local engine: files whose content hash is in the gallery are skipped by
  the actors before decoding; re-running the same command continues where it stopped.
* Per-file failures (unreadable, no face, several faces, duplicates) go to the same CSV
  report as the local engine's; a tqdm bar shows images/s.

The same call runs on a local Ray (started on this machine, see :func:`start_ray`) and,
unchanged, against a cluster (``address="ray://head:10001"`` or ``"auto"``): every node must
have npcface (and the model files, in ``NPCFACE_HOME``) installed and see the image paths at
the same place (a shared file system).
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GalleryError, InvalidArgumentError, MissingExtraError, NpcfaceError
from .local import (
    BatchWriter,
    EnrollItem,
    EnrollSummary,
    Ledger,
    default_report,
    empty_counts,
    summarize,
)
from .worker import BatchEmbedder, known_prefixes, recognizer_recipe

log = logging.getLogger(__name__)

RAY_START_TIMEOUT_ENV = "NPCFACE_RAY_START_TIMEOUT"
"""Environment variable: seconds each of Ray's start-up waits may take (default
:data:`RAY_START_TIMEOUT_S`)."""

RAY_START_TIMEOUT_S = 180
"""Ray's own start-up waits (for the GCS to publish its port, for the raylet) give up after
30 s; on a busy 2-core machine a local Ray took longer and failed its first two starts
("Timed out waiting for file .../gcs_server_port", "The current node timed out during
startup"). The waits that Ray lets one set get this much instead, and a failed start is
tried once more (the node's registration wait is fixed at 30 s in Ray 2.60)."""

_RAY_WAIT_SETTINGS = ("RAY_gcs_server_port_wait_time_s", "RAY_raylet_start_wait_time_s")
"""Ray's start-up waits, in seconds, read from the environment by the processes it starts."""


class _EmbedActor(BatchEmbedder):
    """One per actor: the workers' job (:class:`~npcface.enroll.worker.BatchEmbedder`) on
    a batch of Ray Data rows."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            "path": batch["path"],
            "identity": batch["identity"],
            **self.embed_paths([str(p) for p in batch["path"]]),
        }


def enroll_images_ray(
    gallery: Any,
    recognizer: Any,
    items: Iterable[EnrollItem],
    *,
    address: str | None = None,
    actors: int | None = None,
    cpus_per_actor: float = 1.0,
    batch_size: int = 32,
    report: str | os.PathLike[str] | None = None,
    progress: bool = True,
    on_commit: Callable[[list[int], list[EnrollItem], list[str]], None] | None = None,
) -> EnrollSummary:
    """Enroll many images into ``gallery`` with a Ray Data actor pool, resumably.

    Args:
        gallery: an open, writable gallery (local or Milvus) for the recogniser's model.
        recognizer: the :class:`~npcface.FaceRecognizer` to embed with; each actor builds
            its own copy from its settings (:func:`recognizer_recipe`).
        items: images and identities (see :func:`~npcface.enroll.list_images`).
        address: Ray cluster to use (``"auto"``, ``"ray://head:10001"``); ``None`` joins
            the Ray already initialised in this process, else ``RAY_ADDRESS``, else starts a
            local one (:func:`start_ray`; stopped again at the end).
        actors: embedding actors (default: the cluster's CPUs / ``cpus_per_actor``).
        cpus_per_actor: CPUs reserved by each actor (also its inference threads).
        batch_size: images per actor call, and templates per gallery commit.
        report: CSV of per-file failures (default: next to the gallery, as the local engine).
        progress: show a tqdm progress bar (images/s).
        on_commit: called after each committed batch with (template ids, items, hashes).

    Returns:
        Counts of enrolled, skipped and failed images (same meaning as the local engine's).

    Raises:
        GalleryError: bad arguments, or another model's gallery.
        MissingExtraError: Ray Data is not installed.
        NpcfaceError: Ray cannot be started or joined (see :func:`start_ray`).
    """
    try:
        import ray
    except ImportError:
        raise MissingExtraError("the Ray enrolment engine", "ray", "ray[data]") from None
    items = list(items)
    if batch_size < 1:
        raise GalleryError(f"batch_size must be >= 1, got {batch_size}")
    if cpus_per_actor <= 0:
        raise GalleryError(f"cpus_per_actor must be > 0, got {cpus_per_actor}")
    gallery.check_model(recognizer.info.name, recognizer.info.embedding_size)
    recipe = recognizer_recipe(recognizer)
    report_path = Path(report) if report is not None else default_report(gallery)
    t0 = time.monotonic()
    known = gallery.content_hashes()
    prefixes = known_prefixes(known)
    started = False
    if not ray.is_initialized():
        start_ray(address)
        started = True
    elif address is not None:
        log.warning("Ray is already initialised in this process; address %r ignored", address)
    counts = empty_counts()
    try:
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        pool = actors or max(1, int(cpus // cpus_per_actor))
        if not items:
            return summarize(0, counts, t0, report_path, "Ray engine: ")
        from ray.data import ActorPoolStrategy, DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        # results in input order: of byte-identical files the first listed is enrolled and
        # the later ones are its duplicates, as with the local engine (deterministic)
        ctx.execution_options.preserve_order = True
        ds = ray.data.from_items(
            [{"path": it.path, "identity": it.identity} for it in items],
            override_num_blocks=min(-(-len(items) // batch_size), 1000),  # >= 1 batch each
        ).map_batches(
            _EmbedActor,
            batch_size=batch_size,
            batch_format="numpy",
            compute=ActorPoolStrategy(size=pool),
            num_cpus=cpus_per_actor,
            fn_constructor_kwargs={
                "recipe": recipe,
                "prefixes": prefixes,
                "threads": max(1, int(cpus_per_actor)),
            },
        )
        log.info("Ray engine: %d images, %d actors over %.0f CPUs", len(items), pool, cpus)
        _write(gallery, ds, items, known, batch_size, report_path, progress, on_commit, counts)
    finally:
        if started:
            ray.shutdown()
    gallery.save()
    return summarize(len(items), counts, t0, report_path, "Ray engine: ")


def start_ray(address: str | None = None, **init_kwargs: Any) -> None:
    """``ray.init`` that survives a busy machine. Starting a local Ray (``address`` None and
    no ``RAY_ADDRESS``), Ray's start-up waits get ``$NPCFACE_RAY_START_TIMEOUT`` seconds
    (default :data:`RAY_START_TIMEOUT_S`; a wait set in the environment already is kept), and
    a start that fails is tried once more. Joining a cluster is tried once.

    Args:
        address: a cluster to join (``"auto"``, ``"ray://head:10001"``); None starts a local
            Ray unless ``RAY_ADDRESS`` names one.
        init_kwargs: more ``ray.init`` arguments (``num_cpus``, ...).

    Raises:
        NpcfaceError: Ray did not start (twice) or the cluster cannot be reached; one line,
            naming the setting to change.
        MissingExtraError: Ray is not installed.
    """
    try:
        import ray
    except ImportError:
        raise MissingExtraError("the Ray enrolment engine", "ray", "ray[data]") from None
    kwargs = {"include_dashboard": False, "log_to_driver": False, **init_kwargs}
    target = address or os.environ.get("RAY_ADDRESS")
    if target:
        try:
            ray.init(address=address, **kwargs)
        except Exception as exc:  # Ray raises Exception, RuntimeError, ConnectionError
            ray.shutdown()
            raise NpcfaceError(f"cannot join the Ray cluster at {target}: {_line(exc)}") from exc
        return
    timeout = _start_timeout()
    waits = {k: str(timeout) for k in _RAY_WAIT_SETTINGS if k not in os.environ}
    for attempt in (1, 2):
        try:
            with _environment(waits):  # Ray's processes read them when they start
                ray.init(**kwargs)
            return
        except Exception as exc:  # Ray raises Exception, RuntimeError, ConnectionError
            ray.shutdown()
            if attempt == 2:
                used = ", ".join(
                    f"{k}={os.environ.get(k, waits.get(k))}" for k in _RAY_WAIT_SETTINGS
                )
                raise NpcfaceError(
                    f"a local Ray did not start, twice (last: {_line(exc)}); its start-up "
                    f"waits were {used} (seconds): on a busy machine give them more with "
                    f"{RAY_START_TIMEOUT_ENV}=SECONDS (a RAY_ wait set in the environment "
                    "wins), or start Ray yourself (ray start --head) and pass --address auto"
                ) from exc
            log.warning("a local Ray did not start (%s); trying once more", _line(exc))


def _line(exc: BaseException) -> str:
    """The first line of an exception's message (Ray's can run to many)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _start_timeout() -> int:
    text = os.environ.get(RAY_START_TIMEOUT_ENV)
    if text is None:
        return RAY_START_TIMEOUT_S
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 1:
        raise InvalidArgumentError(
            f"{RAY_START_TIMEOUT_ENV} must be a whole number of seconds >= 1, got {text!r}"
        )
    return value


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block (for the processes started
    in it), then remove them again."""
    os.environ.update(values)
    try:
        yield
    finally:
        for key in values:
            os.environ.pop(key, None)


def _write(
    gallery: Any,
    ds: Any,
    items: list[EnrollItem],
    known: set[str],
    batch_size: int,
    report_path: Path,
    progress: bool,
    on_commit: Callable[[list[int], list[EnrollItem], list[str]], None] | None,
    counts: dict[str, int],
) -> None:
    """The one writer: stream the actors' rows back in input order, commit faces in batches,
    report failures (the local engine's :class:`~npcface.enroll.local.Ledger`)."""
    from tqdm import tqdm

    report_path.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(items), unit="img", disable=not progress, smoothing=0.05)
    with open(report_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "identity", "kind", "reason"])
        ledger = Ledger(known, writer, fh, counts)
        sink = BatchWriter(gallery, batch_size, counts, on_commit)
        try:
            for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
                rows = zip(
                    batch["path"],
                    batch["identity"],
                    batch["digest"],
                    batch["status"],
                    batch["reason"],
                    batch["embedding"],
                    strict=True,
                )
                for path, identity, digest, status, reason, emb in rows:
                    item = EnrollItem(str(path), str(identity))
                    sink.take(ledger, item, str(digest), str(status), str(reason), emb)
                fh.flush()
                bar.update(len(batch["path"]))
                bar.set_postfix(counts, refresh=False)
            sink.commit()
        except KeyboardInterrupt:
            log.warning("interrupted: committing the faces already embedded")
            sink.commit()
            raise
        finally:
            bar.close()
