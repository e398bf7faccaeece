"""One MCP server's connection: started on first use, shared, restarted (bounded) after it died.

The SDK's client lives in a task of its own (its transport's task group must be entered and left
in one task); calls from the flock's runs go through the session it holds. A call that finds the
connection broken (the process exited, the HTTP server went away) marks it dead: the next call
starts the server again, up to ``max_restarts`` times over the flock's life, with a warning on the
``flock_cli.mcp_tools`` logger (stderr unless logging is configured) and a trace event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flock_cli.mcp_tools.config import McpServer
from flock_cli.mcp_tools.errors import McpConfigError, McpServerError

__all__ = ["McpToolInfo", "ServerConnection", "ToolOutcome"]

log = logging.getLogger("flock_cli.mcp_tools")

RESULT_CHARS = 65536
"""Of a tool's answer, what reaches the model and the recording (the rest is cut, and said so)."""

RestartHook = Callable[[str, int, str], None]
"""Told (server, restart number, why) when a server is started again."""


@dataclass(frozen=True)
class McpToolInfo:
    """A tool an MCP server offers: its server, name, description and JSON Schema of its input."""

    server: str
    name: str
    description: str
    input_schema: dict[str, Any]

    @property
    def qualified(self) -> str:
        """``server.tool``, the name agents use and the model sees."""
        return f"{self.server}.{self.name}"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (as recorded with a run)."""
        return {"server": self.server, "name": self.name, "description": self.description,
                "input_schema": self.input_schema}  # fmt: skip


@dataclass(frozen=True)
class ToolOutcome:
    """A tool call's answer as the model sees it, and whether it is an error."""

    text: str
    is_error: bool


class ServerConnection:
    """The live connection to one declared server (see the module docstring)."""

    def __init__(self, config: McpServer) -> None:
        self.config = config
        self.restarts = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._client: Any = None
        self._tools: dict[str, McpToolInfo] = {}
        self._dead: str | None = None  # why the running connection broke
        self._started = False  # on this event loop: a later start is a restart, and counted
        self._down: str | None = None  # why it stays down: its restarts are used up
        self._config_error = False  # ... or its declaration cannot be used

    @property
    def running(self) -> bool:
        """True while a started connection has not broken or been stopped."""
        return self._task is not None and not self._task.done() and self._dead is None

    async def tools(self, on_restart: RestartHook | None = None) -> dict[str, McpToolInfo]:
        """The server's tools by name, starting the server if it is not running."""
        await self._connected(on_restart)
        return dict(self._tools)

    async def call(
        self, tool: str, arguments: dict[str, Any], on_restart: RestartHook | None = None
    ) -> ToolOutcome:
        """Call ``tool``; a timeout, a broken connection or the server's error comes back as an
        error outcome (McpServerError only when the server cannot be started at all)."""
        from mcp import MCPError

        client = await self._connected(on_restart)
        limit = self.config.timeout
        try:
            async with asyncio.timeout(limit):
                result = await client.call_tool(tool, arguments)
        except TimeoutError:
            return ToolOutcome(f"the tool {self.config.name}.{tool} did not answer within {limit:g}s", True)
        except MCPError as exc:
            if _connection_lost(exc):
                return ToolOutcome(self._broke(f"the connection was lost during the call ({exc})"), True)
            return ToolOutcome(self.config.redact(f"the server refused the call: {exc}"), True)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
            if _transport_failure(exc):  # the process exited, the HTTP server went away
                return ToolOutcome(self._broke(reason), True)
            # an answer the SDK refuses (a result not matching the tool's output schema, say):
            # this call failed, the server and the other agents' calls on it are fine
            return ToolOutcome(self.config.redact(f"the tool's answer was not usable: {reason}"), True)
        return ToolOutcome(_result_text(result), bool(result.is_error))

    async def close(self) -> None:
        """Stop the server (a subprocess is terminated) and wait for it to end."""
        if self._loop is not asyncio.get_running_loop():
            return  # started under another event loop: its tasks ended with it
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, self.config.startup_timeout)
        self._client = None

    def _broke(self, reason: str) -> str:
        reason = self.config.redact(reason)
        self._dead = reason
        self._stop.set()  # lets the connection's task unwind (and reap a subprocess)
        return f"MCP server '{self.config.name}' stopped answering: {reason}"

    async def _connected(self, on_restart: RestartHook | None) -> Any:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (sync Flock.run): the old one's tasks are gone
            self._loop, self._lock, self._task, self._client, self._dead = (
                loop,
                asyncio.Lock(),
                None,
                None,
                None,
            )
            self._started = False  # stopped with its loop, not dead: starting it again is no restart
        async with self._lock:
            if self.running:
                return self._client
            if self._down is not None:
                raise (McpConfigError if self._config_error else McpServerError)(self._down)
            if self._started:  # it ran and broke, its process exited, or it could not start
                reason = self._dead or "its connection ended"
                await self.close()
                if self.restarts >= self.config.max_restarts:
                    self._down = (
                        f"MCP server {self.config.describe()} is down: {reason}; it was restarted"
                        f" {self.restarts} time(s) already (max_restarts={self.config.max_restarts})"
                    )
                    raise McpServerError(self._down)
                self.restarts += 1
                log.warning(
                    "flock: MCP server '%s' died (%s); restarting it (%d of %d)",
                    self.config.name, reason, self.restarts, self.config.max_restarts,
                )  # fmt: skip
                if on_restart is not None:
                    on_restart(self.config.name, self.restarts, reason)
            self._started = True
            await self._start()
            return self._client

    async def _start(self) -> None:
        self._stop, self._dead = asyncio.Event(), None
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._hold(ready), name=f"mcp-server-{self.config.name}")
        try:
            await asyncio.wait_for(asyncio.shield(ready), self.config.startup_timeout)
        except TimeoutError:
            await self._abort()
            self._dead = f"it did not start within {self.config.startup_timeout:g}s (startup_timeout)"
            raise McpServerError(f"MCP server {self.config.describe()} {self._dead}") from None
        except McpConfigError as exc:  # the environment will not change: no restart can help
            await self._abort()
            self._down, self._config_error = str(exc), True
            raise
        except McpServerError as exc:
            await self._abort()
            self._dead = str(exc)
            raise

    async def _abort(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def _hold(self, ready: asyncio.Future[None]) -> None:
        """The connection's own task: connect, list the tools, then hold on until told to stop."""
        from mcp import Client

        _one_line_parse_errors()

        try:
            async with Client(self.config.target(), cache=None) as client:
                tools = await _list_tools(client, self.config.name)
                self._client, self._tools = client, tools
                ready.set_result(None)
                await self._stop.wait()
        except asyncio.CancelledError:
            raise
        except (McpServerError, McpConfigError) as exc:
            if not ready.done():
                ready.set_exception(exc)
        except BaseException as exc:  # reported to whoever waits, or kept as the reason
            reason = self.config.redact(_reason(exc))
            if not ready.done():
                ready.set_exception(
                    McpServerError(f"MCP server {self.config.describe()} could not start: {reason}")
                )
            elif self._dead is None:
                self._dead = reason
        finally:
            self._client = None


class _NotMcpLine(logging.Filter):
    """The SDK logs a server's stdout line that is not an MCP message with a full traceback;
    a user needs one line: what the server printed, and that it belongs on stderr."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Failed to parse JSONRPC message") and record.exc_info:
            error = record.exc_info[1]
            errors = error.errors() if error is not None and hasattr(error, "errors") else []
            line = errors[0].get("input") if errors else None
            record.msg = (
                "flock: an MCP server wrote a line on stdout that is not an MCP message"
                " (a server's own output belongs on stderr): %r"
            )
            record.args = (str(line)[:200] if line is not None else str(error)[:200],)
            record.exc_info, record.exc_text = None, None
        return True


def _one_line_parse_errors() -> None:
    sdk = logging.getLogger("mcp.client.stdio")
    if not any(isinstance(f, _NotMcpLine) for f in sdk.filters):
        sdk.addFilter(_NotMcpLine())


async def _list_tools(client: Any, server: str) -> dict[str, McpToolInfo]:
    found: dict[str, McpToolInfo] = {}
    cursor: str | None = None
    while True:
        page = await client.list_tools(cursor=cursor)
        for tool in page.tools:
            found[tool.name] = McpToolInfo(
                server, tool.name, tool.description or "", dict(tool.input_schema or {})
            )
        cursor = page.next_cursor
        if not cursor:
            return found


def _transport_failure(exc: BaseException) -> bool:
    """True for the failures of the connection itself (not of one call's answer)."""
    import anyio
    import httpx2

    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    lost = (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream, OSError)
    return isinstance(exc, (*lost, httpx2.TransportError))


def _connection_lost(exc: Exception) -> bool:
    from mcp_types import CONNECTION_CLOSED

    return getattr(getattr(exc, "error", None), "code", None) == CONNECTION_CLOSED


def _reason(exc: BaseException) -> str:
    """A short reason from an exception (an exception group: its first leaf)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _result_text(result: Any) -> str:
    """The text of a tool's answer: its text parts, else its structured content as JSON."""
    import json

    parts = []
    for item in result.content:
        text = getattr(item, "text", None)
        parts.append(text if isinstance(text, str) else json.dumps(item.model_dump(mode="json"), default=str))
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, default=str))
    text = "\n".join(parts)
    if len(text) > RESULT_CHARS:
        text = text[:RESULT_CHARS] + f"\n[cut: the answer was {len(text)} characters]"
    return text
