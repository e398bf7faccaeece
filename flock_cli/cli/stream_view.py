"""Streamed model text in ``flock run``: one stream shown live at a time, the others queued.

Several agents may call a model at once; their text interleaved would be unreadable. The first
stream to start is shown live (its last lines, under the progress panel); the others are kept
and shown, whole, in the order they started, each once the ones before it are complete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flock_cli.errors import printable

if TYPE_CHECKING:
    from rich.console import Console

    from flock_cli.tracing.tracer import StreamChunk

__all__ = ["StreamView"]


@dataclass
class _Stream:
    agent: str
    parts: list[str] = field(default_factory=list)
    done: bool = False

    @property
    def text(self) -> str:
        return "".join(self.parts)


class StreamView:
    """Takes :class:`~flock_cli.tracing.tracer.StreamChunk` s (``Flock.on_stream``), prints
    complete streams in order on ``console`` and renders the live one."""

    def __init__(self, console: Console, *, lines: int = 6) -> None:
        self.console = console
        self.lines = lines
        self._streams: dict[str, _Stream] = {}  # by run, in the order the streams started

    def on_chunk(self, chunk: StreamChunk) -> None:
        """Take a piece of a stream (on the event loop)."""
        stream = self._streams.get(chunk.run)
        if stream is None:
            stream = self._streams[chunk.run] = _Stream(chunk.agent)
        if chunk.text:
            stream.parts.append(chunk.text)
        stream.done = stream.done or chunk.done
        self._print_finished()

    @property
    def queued(self) -> int:
        """Streams waiting behind the live one."""
        return max(0, len(self._streams) - 1)

    def renderable(self) -> Any:
        """The live stream's last lines, or None when nothing streams."""
        from rich.text import Text

        if not self._streams:
            return None
        stream = next(iter(self._streams.values()))
        tail = stream.text.splitlines()[-self.lines :] or [""]
        text = Text(f"── {stream.agent} ", style="bold cyan")
        if self.queued:
            text.append(f"({self.queued} more waiting)", style="dim")
        text.append("\n" + "\n".join(tail))
        return text

    def finish(self) -> None:
        """Print every stream still held, complete or not (the run is over)."""
        for stream in self._streams.values():
            stream.done = True
        self._print_finished()

    def _print_finished(self) -> None:
        while self._streams:
            run, stream = next(iter(self._streams.items()))
            if not stream.done:
                return  # the live one: the ones behind it wait
            del self._streams[run]
            self._print(stream)

    def _print(self, stream: _Stream) -> None:
        from rich.rule import Rule
        from rich.text import Text

        self.console.print(Rule(stream.agent, align="left", style="cyan"))
        self.console.print(Text(printable(stream.text.rstrip("\n"), keep="\n\t")))
