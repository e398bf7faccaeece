"""The client's messages, read from stdin on the event loop.

The SDK reads stdin in a worker thread, and a thread blocked in ``readline`` cannot be cancelled:
Ctrl-C or SIGTERM would wait for the client's next line before the flock could stop. A pipe (how
every MCP client starts a server), a socket or a terminal is read on the event loop instead, where
cancelling is immediate; what the loop cannot watch (a file, ``/dev/null``: both end at once)
falls back to the SDK's reader.

:func:`claimed_stdio` holds the process's standard descriptors for the session: the client's
stdin and stdout are read and written through private duplicates only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["LINE_LIMIT", "PipeLines", "claimed_stdio", "open_stdin"]

LINE_LIMIT = 64 * 1024 * 1024
"""The longest message line accepted (asyncio's default of 64 KiB is below a large payload)."""


class PipeLines:
    """Lines of text from a pipe, as ``async for line in ...`` (what the SDK's transport reads)."""

    def __init__(self, reader: asyncio.StreamReader, transport: asyncio.BaseTransport, fd: int) -> None:
        self._reader = reader
        self._transport = transport
        self._fd = fd

    def __aiter__(self) -> PipeLines:
        return self

    async def __anext__(self) -> str:
        line = await self._reader.readline()
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8", errors="replace")

    def close(self) -> None:
        """Stop reading (the descriptor read is a duplicate of ``fd``'s: ``fd`` stays open)."""
        self._transport.close()
        # Non-blocking mode belongs to the open file, shared with stdin (and, on a terminal,
        # with the shell that gets it back): leave it as it was found.
        with contextlib.suppress(OSError):
            os.set_blocking(self._fd, True)


@contextlib.contextmanager
def claimed_stdio() -> Iterator[tuple[int, int]]:
    """For the whole session, fd 0 reads the null device and fd 1 writes to stderr; yields
    private duplicates of the client's stdin and stdout (the wire).

    The SDK claims the two descriptors only while its transport runs, but the flock runs longer:
    work left on a durable board starts before the transport, runs in flight finish after it. An
    agent's ``print`` then, or a child process inheriting stdin (``subprocess.run`` does), must
    neither write into the protocol stream nor read the client's messages.
    """
    with contextlib.suppress(ValueError, OSError):
        sys.stdout.flush()
    wire_in, wire_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(null, 0)
        os.dup2(2, 1)
    finally:
        os.close(null)
    try:
        yield wire_in, wire_out
    finally:
        with contextlib.suppress(ValueError, OSError):
            sys.stdout.flush()  # what was printed while serving goes to stderr, as it was written
        os.dup2(wire_out, 1)
        os.dup2(wire_in, 0)
        os.close(wire_in)
        os.close(wire_out)


async def open_stdin(fd: int) -> PipeLines | None:
    """The client's stdin (``fd``) as :class:`PipeLines` when the event loop can watch it (a
    pipe, a socket, a terminal), else None (the SDK's reader thread reads it)."""
    import stat

    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return None
    # a terminal, but no other device: epoll refuses /dev/null, and only when the loop first
    # polls it (the failure would not reach the except below, and the read would never end)
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or os.isatty(fd)):
        return None
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    pipe: Any = os.fdopen(os.dup(fd), "rb", buffering=0)
    try:
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    except (OSError, ValueError):  # a device the loop cannot watch (/dev/null): it ends at once anyway
        pipe.close()
        with contextlib.suppress(OSError):
            os.set_blocking(fd, True)
        return None
    return PipeLines(reader, transport, fd)
