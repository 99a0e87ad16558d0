"""Bulk enrolment on Ray actors: the local engine's job, spread over a Ray cluster's CPUs.

* Image paths (from :func:`~npcface.enroll.list_images`: a folder tree or a CSV) go in
  batches to a pool of Ray actors (spread over the nodes), each running the local engine's
  worker (:class:`~npcface.enroll.worker.BatchEmbedder`: read, hash, decode, detect, align,
  embed) with its own recogniser, loaded once. A batch goes to whichever actor has room
  (at most :data:`~npcface.enroll.local.CHUNKS_PER_WORKER` in flight each).
* This process is the one writer (the local engine's, :func:`~npcface.enroll.local.
  write_rows`): results come back in input order and are committed to the gallery (any
  backend) in batches with ``add_many``, content hash included.
* An actor that dies (its node lost, its process killed) is dropped and its batches go to
  the others; the run fails with a typed error only when no actor is left.
* Resumable as the local engine: files whose content hash is in the gallery are skipped by
  the actors before decoding; re-running the same command continues where it stopped.
* Per-file failures (unreadable, no face, several faces, duplicates) go to the same CSV
  report as the local engine's; a tqdm bar shows images/s.

Ray Core actors rather than a Ray Data pipeline: on 2 cores the same actors driven through
Ray Data's streaming executor enrolled 0.73-0.93x the local engine's photos/s, its executor
and helper actors (stats, autoscaling coordinator) competing for the cores; driven directly
they match it: 1.02-1.04x over 4,000 photos and 0.90-0.92x over 2,000 (their start-up
weighs more) with the fast preset, 1.00x with the accurate one (``bench/enroll_engines.py``).

The same call runs on a local Ray (started on this machine, see :func:`start_ray`) and,
unchanged, against a cluster (``address="ray://head:10001"`` or ``"auto"``): every node must
have npcface (and the model files, in ``NPCFACE_HOME``) installed and see the image paths at
the same place (a shared file system).
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GalleryError, InvalidArgumentError, MissingExtraError, NpcfaceError
from .local import (
    CHUNKS_PER_WORKER,
    EnrollItem,
    EnrollSummary,
    Row,
    _rows,
    default_report,
    empty_counts,
    summarize,
    write_rows,
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


ACTOR_START_TIMEOUT_S = 600
"""Seconds the engine waits, with no actor alive, for one to start (a cluster adding a node,
models loading) before it gives up with a typed error."""


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
    save_interval: float = 120.0,
    on_commit: Callable[[list[int], list[EnrollItem], list[str]], None] | None = None,
) -> EnrollSummary:
    """Enroll many images into ``gallery`` with a pool of Ray actors, resumably.

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
        save_interval: seconds between index saves (as the local engine's).
        on_commit: called after each committed batch with (template ids, items, hashes).

    Returns:
        Counts of enrolled, skipped and failed images (same meaning as the local engine's).

    Raises:
        GalleryError: bad arguments, or another model's gallery.
        MissingExtraError: Ray is not installed.
        NpcfaceError: Ray cannot be started or joined (see :func:`start_ray`), or no actor
            is left (every one failed to start or died; the templates committed before stay).
    """
    try:
        import ray
    except ImportError:
        raise MissingExtraError("the Ray enrolment engine", "ray", "ray") from None
    items = list(items)
    if batch_size < 1:
        raise GalleryError(f"batch_size must be >= 1, got {batch_size}")
    if cpus_per_actor <= 0:
        raise GalleryError(f"cpus_per_actor must be > 0, got {cpus_per_actor}")
    if actors is not None and actors < 1:
        raise GalleryError(f"actors must be >= 1, got {actors}")
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
    try:
        if not items:
            return summarize(0, empty_counts(), t0, report_path, "Ray engine: ")
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        pool = actors or max(1, int(cpus // cpus_per_actor))
        log.info("Ray engine: %d images, %d actors over %.0f CPUs", len(items), pool, cpus)
        rows = _on_actors(items, pool, cpus_per_actor, recipe, prefixes, batch_size)
        with contextlib.closing(rows):  # its actors go when the writer stops, whatever why
            counts = write_rows(
                gallery,
                rows,
                total=len(items),
                known=known,
                here=BatchEmbedder.of(recognizer, prefixes),
                report=report_path,
                batch_size=batch_size,
                progress=progress,
                save_interval=save_interval,
                on_commit=on_commit,
            )
    finally:
        if started:
            ray.shutdown()
    return summarize(len(items), counts, t0, report_path, "Ray engine: ")


def _on_actors(
    items: Sequence[EnrollItem],
    pool: int,
    cpus_per_actor: float,
    recipe: dict[str, Any],
    prefixes: np.ndarray,
    chunk: int,
) -> Iterator[Row]:
    """Rows of every item, in input order, computed by ``pool`` Ray actors (each a
    :class:`BatchEmbedder` with ``int(cpus_per_actor)`` inference threads, spread over the
    cluster's nodes). A chunk goes to the started actor with the fewest in flight (at most
    :data:`CHUNKS_PER_WORKER` each); chunks are taken no further than the actors' window
    ahead of the oldest one not yet returned, so memory stays bounded. A dead actor's chunks
    go back to the front of the queue.

    Raises:
        NpcfaceError: no actor is alive and none started within
            :data:`ACTOR_START_TIMEOUT_S` (the last actor error named).
    """
    import ray
    from ray.exceptions import ObjectLostError, RayActorError, RayTaskError

    parts = [items[i : i + chunk] for i in range(0, len(items), chunk)]
    actor_class = ray.remote(BatchEmbedder).options(
        num_cpus=cpus_per_actor, scheduling_strategy="SPREAD", max_restarts=0
    )
    shared = ray.put(prefixes)
    threads = max(1, int(cpus_per_actor))
    everyone = [actor_class.remote(recipe, shared, threads) for _ in range(pool)]
    starting = {a.__ray_ready__.remote(): a for a in everyone}
    load: dict[Any, int] = {}  # started, live actors -> chunks in flight
    flying: dict[Any, tuple[int, Any]] = {}  # task ref -> (chunk index, actor)
    queue = list(range(len(parts)))  # a heap of chunk indices waiting for an actor
    done: dict[int, dict[str, np.ndarray]] = {}
    horizon = pool * CHUNKS_PER_WORKER * 2  # chunks taken ahead of the oldest pending one
    last_error = "no actor started"
    idle_since = time.monotonic()
    nxt = 0
    try:
        while nxt < len(parts):
            for actor in sorted(load, key=load.__getitem__):
                while load[actor] < CHUNKS_PER_WORKER and queue and queue[0] < nxt + horizon:
                    i = heapq.heappop(queue)
                    flying[actor.embed_paths.remote([it.path for it in parts[i]])] = (i, actor)
                    load[actor] += 1
            if load:
                idle_since = time.monotonic()
            elif not starting or time.monotonic() - idle_since > ACTOR_START_TIMEOUT_S:
                raise NpcfaceError(
                    f"Ray engine: no enrolment actor is alive ({pool} started; last error: "
                    f"{last_error}); the templates committed so far stay, re-run to go on"
                )
            if load and not flying:  # live actors, yet nothing to give them: a lost chunk
                raise AssertionError(f"Ray engine: chunk {nxt} was lost")
            ready, _ = ray.wait([*starting, *flying], num_returns=1, timeout=10.0)
            for ref in ready:
                if ref in starting:
                    actor = starting.pop(ref)
                    try:
                        ray.get(ref)
                        load[actor] = 0
                    except RayActorError as exc:
                        last_error = _actor_error(exc)
                        log.warning("Ray engine: an actor did not start: %s", last_error)
                    continue
                i, actor = flying.pop(ref)
                try:
                    done[i] = ray.get(ref)
                    if actor in load:  # not dropped meanwhile (a later chunk of it failed)
                        load[actor] -= 1
                except (RayActorError, ObjectLostError) as exc:
                    # its node or process went away: the chunk goes to another actor
                    last_error = _actor_error(exc)
                    heapq.heappush(queue, i)
                    if actor in load:
                        log.warning("Ray engine: an actor died (%s); going on", last_error)
                        del load[actor]
                        ray.kill(actor)
                except RayTaskError as exc:  # a bug in the worker, not a bad file
                    raise NpcfaceError(f"Ray engine: an actor failed: {_line(exc)}") from exc
            while nxt in done:
                yield from _rows(parts[nxt], done.pop(nxt))
                nxt += 1
    finally:
        for actor in everyone:
            ray.kill(actor)


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
        raise MissingExtraError("the Ray enrolment engine", "ray", "ray") from None
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


def _actor_error(exc: BaseException) -> str:
    """What killed an actor, in one line: Ray's first sentence (``The actor died because of
    an error raised in its creation task``) and, when a traceback follows, its last line
    (the exception raised, e.g. the model file not found)."""
    text = _ANSI.sub("", getattr(exc, "error_msg", None) or str(exc))
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    first = lines[0].split(",")[0]
    return first if len(lines) == 1 else f"{first}: {lines[-1]}"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


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
