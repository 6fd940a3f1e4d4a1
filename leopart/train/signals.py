"""Interruption: SIGINT/SIGTERM are recorded so the loop can checkpoint and then exit."""

from __future__ import annotations

import signal
import threading
from typing import Any


class SignalGuard:
    """Record SIGINT/SIGTERM (in ``signum``) instead of dying, while the ``with`` block runs.

    Handlers are installed only from the main thread (Python allows no other).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


class TrainingInterrupted(SystemExit):
    """Raised after the interruption checkpoint is written (exit code 128 + signal)."""
