"""How to reach one MCP server: a local command (stdio) or a URL (streamable HTTP), with the
limits every call to it observes.

Secrets stay out of the declaration: a value in ``env``, ``headers`` or ``url`` may be written as
``${NAME}``, read from this process's environment when the server starts. The declaration (and
every message or trace that names the server) keeps the ``${NAME}`` form; the expanded value is
only handed to the server's process or HTTP client.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from flock_cli.mcp_tools.errors import McpConfigError

__all__ = ["SERVER_NAME", "McpServer", "expand", "split_tool_name"]

SERVER_NAME = r"^[A-Za-z][A-Za-z0-9_-]*$"
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class McpServer(BaseModel):
    """One MCP server a flock's agents may call tools of.

    Exactly one of ``command`` (a local program spoken to over stdin/stdout) and ``url`` (a
    streamable HTTP endpoint) is given. ``args``, ``env`` and ``cwd`` only apply to a command,
    ``headers`` only to a URL.

    Args:
        name: how agents name its tools (``name.tool``).
        timeout: seconds one tool call may take; a call that takes longer reaches the model as an
            error observation.
        startup_timeout: seconds to start (or reach) the server and list its tools.
        max_restarts: how many times, over the flock's life, a server that died is started again;
            after that its tools answer with an error.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=SERVER_NAME)
    command: str | None = Field(default=None, min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    url: str | None = Field(default=None, pattern=r"^(https?://|\$\{)")
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(default=60.0, gt=0)
    startup_timeout: float = Field(default=30.0, gt=0)
    max_restarts: int = Field(default=3, ge=0)

    @model_validator(mode="after")
    def _one_transport(self) -> McpServer:
        if (self.command is None) == (self.url is None):
            raise ValueError(f"MCP server '{self.name}' needs exactly one of 'command' and 'url'")
        if self.url is not None and (self.args or self.env or self.cwd is not None):
            raise ValueError(f"MCP server '{self.name}': args, env and cwd apply to a command, not a url")
        if self.command is not None and self.headers:
            raise ValueError(f"MCP server '{self.name}': headers apply to a url, not a command")
        return self

    @property
    def transport(self) -> str:
        """``stdio`` or ``http``."""
        return "stdio" if self.command is not None else "http"

    def describe(self) -> str:
        """The server as shown in messages: its command or URL as declared (``${NAME}`` kept)."""
        return f"'{self.name}' ({self.command if self.command is not None else self.url})"

    def redact(self, text: str) -> str:
        """``text`` with the value of every environment variable the declaration refers to
        (``${NAME}``) replaced by ``${NAME}``: a transport's error may quote a header or URL."""
        for value in (self.url or "", *self.env.values(), *self.headers.values(), *self.args):
            for name in _REFERENCE.findall(value):
                secret = os.environ.get(name)
                if secret and len(secret) >= 3:
                    text = text.replace(secret, f"${{{name}}}")
        return text

    def target(self) -> Any:
        """What ``mcp.Client`` connects to, with ``${NAME}`` references expanded."""
        if self.command is not None:
            from mcp.client.stdio import StdioServerParameters, stdio_client

            env = {key: expand(value, self.name, f"env.{key}") for key, value in self.env.items()}
            command = expand(self.command, self.name, "command")
            params = StdioServerParameters(
                # `python` is the Python running the flock (its virtualenv), not whatever PATH finds
                command=sys.executable if command in ("python", "python3") else command,
                args=[expand(a, self.name, "args") for a in self.args],
                env=env or None,
                cwd=self.cwd,
            )
            return stdio_client(params, errlog=_server_errlog())
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        assert self.url is not None
        headers = {key: expand(value, self.name, f"headers.{key}") for key, value in self.headers.items()}
        client = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(self.startup_timeout, read=None))
        return _HttpTransport(
            streamable_http_client(expand(self.url, self.name, "url"), http_client=client), client
        )


class _HttpTransport:
    """The streamable HTTP transport, closing the HTTP client it was given when it ends."""

    def __init__(self, transport: Any, client: Any) -> None:
        self._transport, self._client = transport, client

    async def __aenter__(self) -> Any:
        return await self._transport.__aenter__()

    async def __aexit__(self, *exc: Any) -> Any:
        try:
            return await self._transport.__aexit__(*exc)
        finally:
            await self._client.aclose()


def _server_errlog() -> Any:
    """Where a server's stderr goes: this process's stderr, the real one when ``sys.stderr`` was
    replaced by something a child process cannot write to (a test runner's capture)."""
    try:
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return sys.__stderr__
    return sys.stderr


def expand(value: str, server: str, where: str) -> str:
    """``value`` with each ``${NAME}`` replaced by that environment variable; McpConfigError
    (naming the variable, never a value) when one is not set."""

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        found = os.environ.get(name)
        if found is None:
            raise McpConfigError(
                f"MCP server '{server}': {where} refers to environment variable {name}, which is not set"
            )
        return found

    return _REFERENCE.sub(lookup, value)


def split_tool_name(name: str) -> tuple[str, str] | None:
    """``server.tool`` -> (server, tool) (``tool`` may be ``*``); None for a name with no dot."""
    server, dot, tool = name.partition(".")
    if not dot or not server or not tool:
        return None
    return server, tool
