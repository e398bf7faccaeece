"""The trace writer: hands a flock's records to its ingest process, off the event loop.

The event loop only appends to a deque. Every ``interval`` seconds a thread takes what is queued,
flattens it into plain tuples and sends it as one frame to ``python -m flock_cli.tracing.ingest``,
which does the expensive part (rows, JSON, DuckDB) in a process of its own: on the benchmark
machine that keeps tracing within 1.5x of an untraced pipeline, where doing the same work on a
thread of the flock's process (sharing its GIL) cost about 1.9x (bench/results/tracing.md).

Nothing here raises into the runtime: problems (the store cannot be written, the ingest process
died) are kept in ``problems`` for whoever closes the tracer to report. Memory stays bounded: past
``max_pending`` records the oldest are dropped, and the drop is reported too.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import flock_cli
from flock_cli.tracing.duck import check_trace_path
from flock_cli.tracing.frames import encode_frame, flatten
from flock_cli.tracing.records import Record, StatusRecord

__all__ = ["TraceWriter"]

_QUIET_SECONDS = 3.0  # with nothing to send for this long, the thread ends (the next record restarts it)
_SNAPSHOT_EVERY = 0.5  # seconds between status snapshots while the flock works
_LIVE: weakref.WeakSet[TraceWriter] = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    """Write what flocks that were never shut down still hold, before the interpreter goes."""
    for writer in list(_LIVE):
        writer.close(timeout=10.0)


class _Flush:
    """A marker in the queue: set once everything queued before it is written."""

    __slots__ = ("done", "seq")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.seq = 0


class TraceWriter:
    """Sends trace records to an ingest process writing ``path``.

    Args:
        path: the DuckDB file (created with its parent folder when missing).
        interval: seconds between frames. Short, so that records leave the flock's process young:
            objects that survive a few garbage collections make every full collection longer.
        max_pending: records kept while the ingest process is not there to take them.
        snapshot: called on the writer thread before each frame; returns a status record or None.
    """

    def __init__(
        self,
        path: Path,
        *,
        interval: float = 0.05,
        max_pending: int = 500_000,
        snapshot: Callable[[], StatusRecord | None] | None = None,
    ) -> None:
        check_trace_path(path)
        self.path = path
        self.interval = interval
        self.max_pending = max_pending
        self.snapshot = snapshot
        self.dropped = 0
        self._queue: deque[Record | _Flush] = deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._stopping = False
        self._problems: list[str] = []
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._sent = 0  # sequence number of the last frame sent
        self._acked = 0  # ... and of the last one the ingest process has written
        self._acks = threading.Condition()
        self._waiting: list[_Flush] = []
        _LIVE.add(self)

    # -- the flock's side ------------------------------------------------------------------------

    def put(self, record: Record | _Flush) -> None:
        """Queue a record (called on the event loop; never blocks)."""
        self._queue.append(record)
        if self._thread is None:
            self._start()

    @property
    def problems(self) -> list[str]:
        """What went wrong while writing, oldest first."""
        problems = list(self._problems)
        if self.dropped:
            problems.append(f"{self.dropped} trace records were dropped: the store could not take them")
        return problems

    def flush(self, timeout: float = 10.0) -> bool:
        """Write everything queued so far; False when that took longer than ``timeout``."""
        marker = _Flush()
        self.put(marker)
        self._wake.set()
        return marker.done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued, let the ingest process write it (up to ``timeout`` seconds), stop."""
        with self._lock:
            self._stopping = True
            thread = self._thread
        _LIVE.discard(self)
        if thread is not None:
            self._wake.set()
            thread.join(timeout)
        elif self._queue:
            self._send_queued()
        process = self._process
        if process is not None:
            if process.stdin is not None:
                # End of input: the ingest process writes what it holds. OSError: it is gone
                # already, and the wait below reports how it ended.
                with contextlib.suppress(OSError):
                    process.stdin.close()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                self._problem(
                    f"trace ingest did not finish within {timeout:g} s; some traces were not written"
                )
            self._reader_done.wait(5)
            self._check_exit(process)
            if process.stdout is not None:
                process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        for marker in self._waiting:
            marker.done.set()

    # -- the thread ------------------------------------------------------------------------------

    def _start(self) -> None:
        # The thread starts with the first record and ends after a quiet spell, so a flock that
        # is never used, or never shut down, leaves no thread behind.
        with self._lock:
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(target=self._run, name="flock-trace-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        last_snapshot = last_activity = time.monotonic()
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            stopping = self._stopping
            now = time.monotonic()
            if self.snapshot is not None and not stopping and now - last_snapshot >= _SNAPSHOT_EVERY:
                last_snapshot = now
                if now - last_activity < _QUIET_SECONDS:
                    self._add_snapshot()
            if self._queue:
                last_activity = now
                self._send_queued(urgent=stopping)
            if stopping or (now - last_activity >= _QUIET_SECONDS and self._leave()):
                return

    def _leave(self) -> bool:
        """End the thread after a quiet spell, unless something arrived meanwhile."""
        with self._lock:
            if self._queue or self._stopping:
                return False
            self._thread = None
            return True

    def _add_snapshot(self) -> None:
        try:
            record = self.snapshot() if self.snapshot is not None else None
        except Exception as exc:  # a snapshot is a nicety; its failure must not stop the traces
            self._problem(f"status snapshot failed: {type(exc).__name__}: {exc}")
            return
        if record is not None:
            self._queue.append(record)

    def _send_queued(self, *, urgent: bool = False) -> None:
        records: list[Record] = []
        markers: list[_Flush] = []
        queue = self._queue
        while queue:
            item = queue.popleft()
            if isinstance(item, _Flush):
                markers.append(item)
            else:
                records.append(item)
        excess = len(records) - self.max_pending
        if excess > 0:
            del records[:excess]
            self.dropped += excess
        urgent = urgent or bool(markers)
        if (records or (markers and self._process is not None)) and self._ensure_process():
            self._sent += 1
            frame = encode_frame(self._sent, flatten(records), urgent=urgent)
            try:
                assert self._process is not None and self._process.stdin is not None
                self._process.stdin.write(frame)
                self._process.stdin.flush()
            except OSError:
                self.dropped += len(records)
                if self._process is not None:
                    self._check_exit(self._process)
        elif records:
            self.dropped += len(records)
        with self._acks:
            for marker in markers:
                marker.seq = self._sent
                if self._acked >= marker.seq or self._process is None:
                    marker.done.set()
                else:
                    self._waiting.append(marker)

    # -- the ingest process ----------------------------------------------------------------------

    def _ensure_process(self) -> bool:
        process = self._process
        if process is not None:
            return process.poll() is None
        root = str(Path(flock_cli.__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115  # open for the process's whole life
        try:
            self._process = subprocess.Popen(
                # absolute: the flock's process may change directory, the ingest process does not
                [sys.executable, "-m", "flock_cli.tracing.ingest", str(self.path.absolute())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                env=env,
                start_new_session=True,  # a Ctrl-C meant for the flock must not cut its traces short
            )
        except OSError as exc:
            self._problem(f"could not start the trace ingest process: {exc}")
            return False
        self._reader_done = threading.Event()
        threading.Thread(target=self._read_answers, name="flock-trace-acks", daemon=True).start()
        return True

    def _read_answers(self) -> None:
        process = self._process
        assert process is not None and process.stdout is not None
        try:
            for line in process.stdout:
                message: dict[str, Any] = json.loads(line)
                if "problem" in message:
                    self._problem(str(message["problem"]))
                if "ack" in message:
                    self.dropped = max(self.dropped, int(message.get("dropped", 0)))
                    with self._acks:
                        self._acked = int(message["ack"])
                        done = [m for m in self._waiting if m.seq <= self._acked]
                        self._waiting = [m for m in self._waiting if m.seq > self._acked]
                    for marker in done:
                        marker.done.set()
        finally:
            self._reader_done.set()

    def _check_exit(self, process: subprocess.Popen[bytes]) -> None:
        code = process.poll()
        if code in (None, 0):
            return
        detail = ""
        if self._stderr is not None:
            self._stderr.seek(0)
            lines = self._stderr.read().decode(errors="replace").strip().splitlines()
            detail = f": {lines[-1]}" if lines else ""
        self._problem(f"the trace ingest process exited with status {code}{detail}")

    def _problem(self, message: str) -> None:
        if message not in self._problems:
            self._problems.append(message)
