"""Ctrl-C and SIGTERM that come while a command sets up, counted and handed on.

``flock run``, ``flock serve`` and ``flock mcp`` open the board and build the flock before their
event loop takes the signals. Python's own handlers would end the process in that window: exit 130
with nothing said on Ctrl-C, and on SIGTERM (``kill``, systemd, ``docker stop``) no exit code of its
own and no cleanup. While an :class:`EarlySignals` block is open they are only counted; the
command replays them as soon as its loop takes the signals, so it stops the way it stops at any
other moment: with its summary, its board closed.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

__all__ = ["STOP_SIGNALS", "EarlySignals"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""The signals that stop a command: Ctrl-C, and SIGTERM (``kill``, systemd), which stops it alike."""


class EarlySignals:
    """``with EarlySignals() as early:`` counts :data:`STOP_SIGNALS` in ``early.count`` until the
    block ends or :meth:`release` is called, whichever comes first; then Python's handlers are
    back. Outside the main thread (where handlers cannot be set) it counts nothing."""

    def __init__(self) -> None:
        self.count = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> EarlySignals:
        if threading.current_thread() is not threading.main_thread():
            return self  # only the main thread may set handlers (the loop's own need it too)
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._counted)
        return self

    def _counted(self, signum: int, frame: Any) -> None:
        self.count += 1

    def release(self) -> int:
        """Give the signals back to the handlers there were before (the caller installs its own
        right after); returns how many came meanwhile. Idempotent."""
        previous, self._previous = self._previous, {}
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        return self.count

    def __exit__(self, *exc: object) -> None:
        self.release()
