"""The enrolment workers' job, one implementation for every engine: the local engine's
processes and the Ray engine's actors each build the recogniser from its configuration,
then turn batches of image paths into content hashes and embeddings (read, hash, skip what
the gallery holds, decode, detect, align, embed through
:meth:`~npcface.FaceRecognizer.embed_many`). The writer (the calling process) does the rest:
the ledger, the gallery and the report (:mod:`npcface.enroll.local`)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GalleryError


def prefix(digest: str) -> np.uint64:
    """The first 64 bits of a hex SHA-256: what workers compare against the gallery's
    content hashes (sorted, :func:`numpy.searchsorted`)."""
    return np.uint64(int(digest[:16], 16))


def known_prefixes(hashes: set[str]) -> np.ndarray:
    """Sorted unique 64-bit prefixes of ``hashes`` (8 bytes per template for the workers)."""
    return np.unique(np.array([prefix(h) for h in hashes], dtype=np.uint64))


def recognizer_recipe(recognizer: Any) -> dict[str, Any]:
    """The recogniser's configuration as JSON (:meth:`RecognizerConfig.to_dict`, with the
    pixel limit and enrolment gate it runs with now): each worker builds its own recogniser
    from it (the recogniser itself does not travel).

    Raises:
        GalleryError: the recogniser runs a detector or embedder object, which no
            configuration can describe.
    """
    if getattr(recognizer, "_custom_detector", None) is not None:
        raise GalleryError(
            "enrolment workers rebuild the recogniser from its configuration; this one runs "
            "a detector object (give the detector by name)"
        )
    if getattr(recognizer, "_custom_embedder", False) or _embedder_replaced(recognizer):
        raise GalleryError(
            "enrolment workers rebuild the recogniser from its configuration; this one runs "
            "an embedder object (give the recogniser by name or model file)"
        )
    recipe = recognizer.config.to_dict()
    recipe["max_pixels"] = getattr(recognizer, "max_pixels", recipe.get("max_pixels"))
    recipe["enroll_quality"] = getattr(recognizer, "enroll_quality", recipe["enroll_quality"])
    return recipe


def _embedder_replaced(recognizer: Any) -> bool:
    """Whether the embedder was swapped after construction (a subclass or a test setting
    ``_embedder``): anything but the :class:`~npcface.embed.Embedder` the configuration
    builds."""
    from ..embed import Embedder

    current = getattr(recognizer, "_embedder", None)
    return current is not None and not isinstance(current, Embedder)


def embed_files(recognizer: Any, payloads: Sequence[bytes], names: Sequence[str]) -> list[Any]:
    """The one place workers call the pipeline: encoded files in, one
    :class:`~npcface.results.EmbedResult` each out (photos: always detected and aligned;
    faces under the recogniser's ``enroll_quality`` refused as ``low_quality``)."""
    if not payloads:
        return []
    return recognizer.embed_many(
        list(payloads),
        names=list(names),
        aligned_arrays=False,
        min_quality=getattr(recognizer, "enroll_quality", None),
    )


class BatchEmbedder:
    """A worker's state: its own recogniser (built once) and the gallery's hash prefixes.

    Args:
        recipe: :func:`recognizer_recipe` of the caller's recogniser.
        prefixes: :func:`known_prefixes` of the gallery's content hashes.
        threads: inference threads of this worker's models.
    """

    def __init__(self, recipe: dict[str, Any], prefixes: np.ndarray, threads: int) -> None:
        from ..config import RecognizerConfig
        from ..recognizer import FaceRecognizer

        try:  # one decoding thread: the worker is one of many
            import cv2

            cv2.setNumThreads(1)
        except ImportError:  # pragma: no cover
            pass
        config = RecognizerConfig.from_dict({**recipe, "threads": threads})
        self._use(FaceRecognizer.from_config(config), prefixes)
        _ = self.dim  # loads the recogniser's model now, in the worker's start-up

    @classmethod
    def of(cls, recognizer: Any, prefixes: np.ndarray) -> BatchEmbedder:
        """The same job with a recogniser already built (in the calling process; any
        recogniser, detector or embedder objects included). Models load on first use."""
        self = cls.__new__(cls)
        self._use(recognizer, prefixes)
        return self

    def _use(self, recognizer: Any, prefixes: np.ndarray) -> None:
        self.recognizer = recognizer
        self.prefixes = prefixes
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        """Embedding size (loads the recogniser's model)."""
        if self._dim is None:
            self._dim = int(self.recognizer.info.embedding_size)
        return self._dim

    def embed_paths(self, paths: Sequence[str], check_known: bool = True) -> dict[str, np.ndarray]:
        """Hashes and embeddings of image files, one row per path, in order.

        Args:
            paths: image files.
            check_known: skip files whose hash prefix the gallery holds (``False``: embed
                them anyway, for the writer's re-check of a prefix collision).

        Returns:
            ``digest`` (hex SHA-256, "" when unreadable), ``status`` (``ok``, ``known``:
            probably in the gallery, not decoded; ``unreadable``; or the failure's kind:
            ``no_face``, ``low_quality``, ...), ``reason`` (the message of a failure) and
            ``embedding`` ((n, d) float32, zero rows where status is not ``ok``).
        """
        n = len(paths)
        status = ["ok"] * n
        reason = [""] * n
        digests = [""] * n
        payloads: list[bytes] = []
        todo: list[int] = []
        for i, path in enumerate(paths):
            try:
                data = Path(path).read_bytes()
            except OSError as exc:
                status[i], reason[i] = "unreadable", f"{path}: cannot read: {exc.strerror or exc}"
                continue
            digests[i] = hashlib.sha256(data).hexdigest()
            if check_known and self.prefixes.size:
                pos = np.searchsorted(self.prefixes, prefix(digests[i]))
                if pos < self.prefixes.size and self.prefixes[pos] == prefix(digests[i]):
                    status[i] = "known"  # probably enrolled: the writer checks the full hash
                    continue
            payloads.append(data)
            todo.append(i)
        emb = np.zeros((n, self.dim), dtype=np.float32)
        results = embed_files(self.recognizer, payloads, [str(paths[i]) for i in todo])
        for i, r in zip(todo, results, strict=True):
            if r.ok:
                emb[i] = r.embedding
            else:
                status[i], reason[i] = r.kind, str(r.error)
        return {
            "digest": np.array(digests, dtype=object),
            "status": np.array(status, dtype=object),
            "reason": np.array(reason, dtype=object),
            "embedding": emb,
        }
