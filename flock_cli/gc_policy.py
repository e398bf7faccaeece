"""The garbage-collection policy for a process that runs flocks.

A flock allocates many small, mostly acyclic objects per run (artifacts, envelopes, store rows,
futures) and keeps a large, long-lived heap (the modules, the board in memory, the type registry).
With Python's default thresholds (a young collection every 700 net allocations, a full one every
70,000) the collector spends most of its time re-scanning that long-lived heap: measured on the
two-stage pipeline (bench/run_path.py, 10,000 seeds), 0.65 s of garbage collection in memory and
5.7 s on SQLite, a third and more of the run.

So once per process, when the first flock starts working, :func:`tune_for_runs`:

- collects once and freezes what survives (``gc.freeze``): the start-up heap (imported modules,
  the flock's declarations) moves to the permanent generation and is never scanned again;
- raises the young generation's threshold to 50,000, so a collection comes after a few hundred
  runs rather than every few;
- collects the middle generation after 100 young collections rather than 10. Runs waiting for a
  commit survive young collections in thousands (10,000 seeds published at once on SQLite), so
  the middle generation fills with them, and one collection of it cost 340 ms in bench/run_path's
  burst, 17 µs a run (measured with ``gc.callbacks``). Fewer of them cost about 10 µs less a run on
  SQLite and 5 µs in memory; the oldest generation keeps Python's ratio (10), so cycles in
  long-lived data are still collected in a long run.

Cycles created later are still collected; only what was alive at start-up is frozen. A program
that embeds flocks and wants Python's defaults sets ``FLOCK_GC=default`` (read when the first
flock starts); ``FLOCK_GC`` takes ``tuned`` (the default) or ``default``, anything else is an
error.
"""

from __future__ import annotations

import gc
import os
import threading

from flock_cli.errors import UserError

__all__ = ["GC_ENV", "THRESHOLDS", "tune_for_runs"]

GC_ENV = "FLOCK_GC"
THRESHOLDS = (50_000, 100, 10)
"""The collector's thresholds while flocks run (Python's defaults are 700, 10, 10)."""

_lock = threading.Lock()
_applied: str | None = None


def tune_for_runs() -> str:
    """Apply the policy once per process; returns the policy in force (``tuned`` or ``default``).

    Raises :class:`~flock_cli.errors.UserError` when ``FLOCK_GC`` holds something else.
    """
    global _applied
    with _lock:
        if _applied is not None:
            return _applied
        policy = (os.environ.get(GC_ENV) or "tuned").strip().lower()
        if policy not in ("tuned", "default"):
            raise UserError(f"{GC_ENV} must be 'tuned' or 'default', got {policy!r}")
        if policy == "tuned":
            gc.collect()  # what is garbage now is not frozen with the rest
            gc.freeze()
            gc.set_threshold(*THRESHOLDS)
        _applied = policy
        return policy
