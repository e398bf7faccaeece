"""The trace writer: hands a flock's records to its ingest process, off the event loop.

The event loop only appends to a deque. Every ``interval`` seconds a thread takes what is queued,
flattens it into plain tuples and sends it as one frame to ``python -m flock_cli.tracing.ingest``,
which does the expensive part (rows, JSON, DuckDB) in a process of its own: on the benchmark
machine that keeps tracing within 1.5x of an untraced pipeline, where doing the same work on a
thread of the flock's process (sharing its GIL) cost about 1.9x (bench/results/tracing.md).

Nothing here raises into the runtime: problems (the store cannot be written, the ingest process
died, a record could not be encoded) are kept in ``problems`` for whoever closes the tracer to
report. Nothing is lost to a busy store: the ingest process spools what the store cannot take yet
(``spool.py``), and frames it was given but never acknowledged (it crashed, or was killed when it
did not finish in time) are spooled here, as are frames no ingest process could be given. Only
when the spool cannot be written either are records dropped (past ``max_pending`` the oldest),
and the drop is reported. After a quiet spell the thread ends and the ingest process is let go
(it writes or spools what it holds and exits), so an idle flock, or one never shut down, holds
neither.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import marshal
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
from typing import Any

from flock_cli.tracing import spool
from flock_cli.tracing.duck import check_trace_path, unusable
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
    """A marker in the queue: set once everything queued before it is written (or given up on,
    in which case ``lost`` is set too)."""

    __slots__ = ("done", "lost", "seq")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.lost = False
        self.seq = 0


class _IngestProcess:
    """One ``python -m flock_cli.tracing.ingest`` process, its stderr, and the thread reading its
    answers. ``last_sent`` is the sequence number of the last frame it was given; ``unacked`` the
    frames it was given and has not acknowledged yet (kept to be spooled should it die: it
    acknowledges a frame within seconds, once written or spooled, so they are few)."""

    def __init__(self, path: Path, on_answer: Callable[[_IngestProcess, dict[str, Any]], None]) -> None:
        root = str(Path(__file__).resolve().parents[2])  # the folder holding the flock_cli package
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115  # open for the process's whole life
        try:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "flock_cli.tracing.ingest", str(path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self.stderr,
                env=env,
                start_new_session=True,  # a Ctrl-C meant for the flock must not cut its traces short
            )
        except OSError:
            self.stderr.close()
            raise
        self.last_sent = 0
        self.unacked: list[tuple[int, bytes]] = []
        self.gone = False  # its answers ended: frames for it are spooled instead (guarded by lock)
        self.lock = threading.Lock()
        self.answered = threading.Event()  # set when its answers end (it exited)
        self.settled = threading.Event()  # ... and once what it left unacknowledged is spooled
        self.detached = False  # it handed everything off to a drain process, which writes the store
        self._on_answer = on_answer
        threading.Thread(target=self._read_answers, name="flock-trace-acks", daemon=True).start()

    def send(self, seq: int, frame: bytes) -> None:
        """Write one frame (OSError when the process is gone)."""
        assert self.popen.stdin is not None
        with self.lock:
            if self.gone:
                raise BrokenPipeError("the trace ingest process has ended")
            self.unacked.append((seq, frame))
        try:
            self.popen.stdin.write(frame)
            self.popen.stdin.flush()
        except OSError:
            with self.lock:
                self.unacked = [sent for sent in self.unacked if sent[0] != seq]
            raise
        self.last_sent = seq

    def acknowledged(self, seq: int) -> None:
        """Frames up to ``seq`` are written (or spooled): no need to keep them."""
        with self.lock:
            self.unacked = [sent for sent in self.unacked if sent[0] > seq]

    def take_unacked(self) -> list[bytes]:
        """Once its answers ended: the frames it never acknowledged, oldest first."""
        with self.lock:
            self.gone = True
            frames, self.unacked = [frame for _, frame in self.unacked], []
        return frames

    def end_input(self) -> None:
        """End of input: the process writes what it holds and exits."""
        if self.popen.stdin is not None:
            # OSError: it is gone already; whoever waits for it reports how it ended.
            with contextlib.suppress(OSError):
                self.popen.stdin.close()

    def finish(self, timeout: float) -> list[str]:
        """Wait for the process to end (killing it after ``timeout``); what went wrong, if anything.
        (A process that hands its records off, ``detached``, exits right after saying so: a drain
        process of its own writes them.)"""
        problems = []
        try:
            self.popen.wait(max(0.0, timeout))
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            problems.append(f"trace ingest did not finish within {timeout:g} s; some traces were not written")
        self.settled.wait(5)  # its unacknowledged frames spooled before the flock's process may exit
        problems.extend(self.exit_problems())
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self.stderr.close()
        return problems

    def exit_problems(self) -> list[str]:
        """How the process ended, when that was not cleanly."""
        code = self.popen.poll()
        if code in (None, 0):
            return []
        detail = ""
        with contextlib.suppress(ValueError):  # stderr closed already
            self.stderr.seek(0)
            lines = self.stderr.read().decode(errors="replace").strip().splitlines()
            detail = f": {lines[-1]}" if lines else ""
        return [f"the trace ingest process exited with status {code}{detail}"]

    def _read_answers(self) -> None:
        assert self.popen.stdout is not None
        try:
            for line in self.popen.stdout:
                message = json.loads(line)
                if message.get("detached"):
                    self.detached = True
                self._on_answer(self, message)
        finally:
            self.answered.set()
            try:
                self._on_answer(self, {"ended": True})
            finally:
                self.settled.set()


class TraceWriter:
    """Sends trace records to an ingest process writing ``path``.

    Args:
        path: the DuckDB file (created with its parent folder when missing).
        interval: seconds between frames. Short, so that records leave the flock's process young:
            objects that survive a few garbage collections make every full collection longer.
        max_pending: records one frame may hold (the oldest beyond it are dropped, reported).
        snapshot: called on the writer thread before each frame while the flock is busy; returns
            a status record or None.
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
        self.path = path.absolute()  # the flock's process may change directory before the first write
        self.interval = interval
        self.max_pending = max_pending
        self.snapshot = snapshot
        self.dropped = 0
        self._queue: deque[Record | _Flush | bytes] = deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._stopping = False
        self._problems: list[str] = []
        self._thread: threading.Thread | None = None
        self._process: _IngestProcess | None = None
        self._retired: list[_IngestProcess] = []  # let go after a quiet spell, maybe still writing
        self._finished: list[_IngestProcess] = []  # the processes close() waited for
        self._sent = 0  # sequence number of the last frame sent
        self._acked = 0  # ... and of the last one an ingest process has written
        self._acks = threading.Condition()  # guards _acked, _waiting and dropped
        self._waiting: list[_Flush] = []
        self._closed = False
        self.unusable_store: str | None = None  # why the store could not be opened at close, if so
        _LIVE.add(self)

    # -- the flock's side ------------------------------------------------------------------------

    def put(self, record: Record | _Flush) -> None:
        """Queue a record (called on the event loop; never blocks)."""
        queued: Record | _Flush | bytes = record
        if type(record) is tuple:  # a finished span, already flat
            with contextlib.suppress(ValueError):  # marshal refuses it: the thread makes it plain
                # As bytes it is invisible to the garbage collector while it waits: queued tuples
                # survived into the old generation and lengthened every full collection.
                queued = marshal.dumps(record)
        self._queue.append(queued)
        if self._thread is None:
            self._start()

    @property
    def handed_off(self) -> bool:
        """Whether the close handed the last records off: spooled, and written into the store
        by the ingest process after the flock went on (readers wait for them)."""
        return any(p.detached for p in self._finished)

    @property
    def problems(self) -> list[str]:
        """What went wrong while writing, oldest first."""
        problems = list(self._problems)
        if self.dropped:
            problems.append(f"{self.dropped} trace records were dropped: the store could not take them")
        return problems

    def flush(self, timeout: float = 10.0) -> bool:
        """Write everything queued so far (or spool it, when another process holds the store);
        False when that took longer than ``timeout`` or some of it was lost (``problems`` says
        why)."""
        dropped = self.dropped
        marker = _Flush()
        self.put(marker)
        self._wake.set()
        return marker.done.wait(timeout) and not marker.lost and self.dropped == dropped

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued, let the ingest process write it (up to ``timeout`` seconds), stop."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._stopping = True
            thread = self._thread
        _LIVE.discard(self)
        if thread is not None:
            self._wake.set()
            thread.join(timeout)
        elif self._queue:
            self._send_queued()
        with self._lock:
            if self._process is not None:
                self._retire(self._process)
                self._process = None
            retired, self._retired = self._retired, []
        for process in retired:
            self._finished.append(process)  # a hand-off (``detached``) is not a problem to report
            for problem in process.finish(deadline - time.monotonic()):
                self._problem(problem)
        self._release_waiting(lost=True)
        self._closed = True
        if not self.handed_off and (waiting := spool.count_waiting(self.path)):
            # Not lost, but not in the store yet: whoever reads the problems should know why, and
            # a store that cannot be opened at all (damaged) is not one another process holds.
            self.unusable_store = unusable(self.path) if self.path.exists() else None
            if self.unusable_store is not None:
                self._problem(
                    f"{waiting} trace batches are waiting in {spool.spool_dir(self.path)}:"
                    f" {self.unusable_store}; move it aside and the next flock run writes them into"
                    " a new store"
                )
            else:
                self._problem(
                    f"{spool.notice(self.path, waiting)} (by the next flock run, flock trace or flock top)"
                )

    # -- the thread ------------------------------------------------------------------------------

    def _start(self) -> None:
        # The thread starts with the first record and ends after a quiet spell, so a flock that
        # is never used, or never shut down, leaves no thread behind.
        with self._lock:
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(target=self._run, name="flock-trace-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        try:
            self._work()
        except Exception as exc:  # a bug here must cost traces, never the flock: report it
            self._problem(f"the trace writer failed: {type(exc).__name__}: {exc}")
            with self._lock:
                self._thread = None
            self._discard_queued()

    def _work(self) -> None:
        last_snapshot = last_activity = time.monotonic()
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            stopping = self._stopping
            now = time.monotonic()
            if self._queue:  # the flock's own records; the status snapshots below do not count
                last_activity = now
            if self.snapshot is not None and not stopping and now - last_snapshot >= _SNAPSHOT_EVERY:
                last_snapshot = now
                if now - last_activity < _QUIET_SECONDS:
                    self._add_snapshot()
            if self._queue:
                self._send_queued(urgent=stopping)
            if stopping or (now - last_activity >= _QUIET_SECONDS and self._leave()):
                return

    def _leave(self) -> bool:
        """End the thread after a quiet spell, unless something arrived meanwhile; the ingest
        process is let go too (the next record starts a new one)."""
        with self._lock:
            if self._queue or self._stopping:
                return False
            self._thread = None
            if self._process is not None:
                self._retire(self._process)
                self._process = None
            return True

    def _retire(self, process: _IngestProcess) -> None:
        process.end_input()
        self._retired.append(process)

    def _add_snapshot(self) -> None:
        try:
            record = self.snapshot() if self.snapshot is not None else None
        except Exception as exc:  # a snapshot is a nicety; its failure must not stop the traces
            self._problem(f"status snapshot failed: {type(exc).__name__}: {exc}")
            return
        if record is not None:
            self._queue.append(record)

    def _discard_queued(self) -> None:
        markers = []
        dropped = 0
        while self._queue:
            item = self._queue.popleft()
            if isinstance(item, _Flush):
                item.lost = True
                markers.append(item)
            else:
                dropped += 1
        self._drop(dropped)
        for marker in markers:
            marker.done.set()

    def _send_queued(self, *, urgent: bool = False) -> None:
        records: list[Record | bytes] = []
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
            self._drop(excess)
        urgent = urgent or bool(markers)
        frame = b""
        if records or (markers and self._process is not None):
            try:
                frame = encode_frame(self._sent + 1, flatten(records), urgent=urgent)
            except Exception as exc:  # one bad record must not stop the others: drop its batch
                self._problem(f"trace records could not be encoded: {type(exc).__name__}: {exc}")
                self._drop(len(records))
        process = self._live_process() if frame else None
        handed = False  # the frame went to an ingest process
        if process is not None:
            try:
                process.send(self._sent + 1, frame)
                self._sent += 1
                handed = True
            except OSError:
                for problem in process.exit_problems():
                    self._problem(problem)
        spooled_here = bool(frame) and not handed and bool(records)
        if spooled_here:
            self._spool([frame], len(records))
        with self._lock:
            answering = [
                p for p in (self._process, *self._retired) if p is not None and not p.answered.is_set()
            ]
        with self._acks:
            for marker in markers:
                marker.seq = self._sent
                if spooled_here:  # kept for a later writer, but not written: flush says so
                    marker.lost = True
                    marker.done.set()
                elif self._acked >= marker.seq:
                    marker.done.set()
                elif any(p.last_sent >= marker.seq for p in answering):
                    self._waiting.append(marker)
                else:  # what it waits for went to a process that ended without writing it
                    marker.lost = True
                    marker.done.set()
        self._reap_retired()

    # -- the ingest processes --------------------------------------------------------------------

    def _live_process(self) -> _IngestProcess | None:
        process = self._process
        if process is not None:
            return process if process.popen.poll() is None else None
        try:
            self._process = _IngestProcess(self.path, self._on_answer)
        except OSError as exc:
            self._problem(f"could not start the trace ingest process: {exc}")
            return None
        return self._process

    def _reap_retired(self) -> None:
        """Report how let-go ingest processes ended, once they have."""
        with self._lock:
            ended = [p for p in self._retired if p.popen.poll() is not None and p.answered.is_set()]
            self._retired = [p for p in self._retired if p not in ended]
        for process in ended:
            for problem in process.finish(0):
                self._problem(problem)

    def _on_answer(self, process: _IngestProcess, message: dict[str, Any]) -> None:
        """An answer from an ingest process (on its reader thread)."""
        if "problem" in message:
            self._problem(str(message["problem"]))
        if "ack" in message:
            process.acknowledged(int(message["ack"]))
            with self._acks:
                self.dropped += int(message.get("dropped", 0))  # its drops since its last ack
                self._acked = max(self._acked, int(message["ack"]))
                done = [m for m in self._waiting if m.seq <= self._acked]
                self._waiting = [m for m in self._waiting if m.seq > self._acked]
            for marker in done:
                marker.done.set()
        if message.get("ended"):
            # Whatever it was given and did not acknowledge, it will not write now: the spool
            # takes it (a frame it wrote but died before acknowledging is then written twice;
            # losing frames it never wrote would be worse).
            unacked = process.take_unacked()
            if unacked:
                self._spool(unacked, 0)
            self._release_waiting(lost=True, up_to=process.last_sent)  # spooled is not written

    def _release_waiting(self, *, lost: bool, up_to: int | None = None) -> None:
        with self._acks:
            released = [m for m in self._waiting if up_to is None or m.seq <= up_to]
            self._waiting = [m for m in self._waiting if m not in released]
        for marker in released:
            marker.lost = lost and marker.seq > self._acked
            marker.done.set()

    def _spool(self, frames: list[bytes], records: int) -> bool:
        """Hand frames no ingest process will write to the store's spool; False (and ``records``
        dropped) when it cannot be written."""
        try:
            spool.write_frames(self.path, frames)
        except OSError as exc:
            self._problem(f"trace batches could not be spooled to {spool.spool_dir(self.path)}: {exc}")
            self._drop(records)
            return False
        return True

    def _drop(self, count: int) -> None:
        if count:
            with self._acks:
                self.dropped += count

    def _problem(self, message: str) -> None:
        if message not in self._problems:
            self._problems.append(message)
