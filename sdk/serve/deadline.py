"""A request's deadline, and the one decision that must not be split when it passes: was
its write committed or not?

:class:`~npcface.serve.middleware.RequestFrame` gives each request a :class:`Deadline`.
When it passes, the frame answers 503 ``timeout`` only if no write has claimed it;
a write (:func:`claim_write`, called by the gallery manager just before it commits) goes
ahead only if the 503 has not been sent. So an answer of 503 ``timeout`` means nothing was
written, and a write that started committing is always answered with its result.
"""

from __future__ import annotations

import contextvars
import threading
import time

from ..errors import RequestTimeoutError

_OPEN, _COMMITTING, _EXPIRED = "open", "committing", "expired"


class Deadline:
    """When a request must be answered by (monotonic seconds), and whether it wrote.

    Thread-safe: the event loop expires it, a worker thread claims it.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._state = _OPEN

    def claim(self) -> None:
        """Mark the request as committing a write.

        Raises:
            RequestTimeoutError: the deadline has passed (nothing may be written).
        """
        with self._lock:
            if self._state == _OPEN and time.monotonic() >= self.at:
                self._state = _EXPIRED
            if self._state == _EXPIRED:
                raise RequestTimeoutError(
                    f"request took longer than {self.seconds:g} s and was not committed; "
                    "retry later or send fewer or smaller images",
                )
            self._state = _COMMITTING

    def expire(self) -> bool:
        """The deadline passed: True when the request may be answered 503 (it wrote
        nothing and now never will); False when a write is committing (wait for it)."""
        with self._lock:
            if self._state == _COMMITTING:
                return False
            self._state = _EXPIRED
            return True


current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "npcface_deadline", default=None
)
"""The deadline of the request being served (``None`` outside requests)."""


def claim_write() -> None:
    """Claim the current request's deadline before a commit (no-op outside requests).

    Raises:
        RequestTimeoutError: the request was answered 503 already; do not write.
    """
    deadline = current.get()
    if deadline is not None:
        deadline.claim()
