"""Optional: embed the crops of concurrent requests together (``npcface serve --batch-ms``).

Off by default. Each request still detects and aligns on its own (the library's
:meth:`~npcface.FaceRecognizer.crop_many`); the aligned crops that arrive within a short
window go to :meth:`~npcface.FaceRecognizer.embed_crops` as one batch. Whether that pays
depends on the engine and the machine: ``bench/serve_load.py --batch-ms`` measures it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class CropBatcher:
    """Collects crops from many threads and embeds them in batches. Thread-safe.

    Args:
        recognizer: the :class:`~npcface.FaceRecognizer` whose ``embed_crops`` runs.
        window_s: how long the first crop of a batch waits for company.
        max_batch: most crops per batch.
    """

    def __init__(self, recognizer: Any, window_s: float, max_batch: int = 64) -> None:
        self.recognizer = recognizer
        self.window_s = window_s
        self.max_batch = max_batch
        self._queue: queue.Queue[tuple[np.ndarray, Future] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="npcface-batcher", daemon=True)
        self._thread.start()

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """Unit-norm (N, d) embeddings of (N, S, S, 3) uint8 BGR crops, batched with others."""
        fut: Future = Future()
        self._queue.put((crops, fut))
        return fut.result()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            items = [first]
            n = len(first[0])
            deadline = time.perf_counter() + self.window_s
            while n < self.max_batch:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                try:
                    item = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                items.append(item)
                n += len(item[0])
            try:
                embs = self.recognizer.embed_crops(np.concatenate([c for c, _ in items]))
            except BaseException as exc:  # noqa: BLE001 - handed to every waiting request
                for _, fut in items:
                    fut.set_exception(exc)
                continue
            start = 0
            for crops, fut in items:
                fut.set_result(embs[start : start + len(crops)])
                start += len(crops)
