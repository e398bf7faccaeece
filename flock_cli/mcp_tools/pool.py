"""A flock's MCP servers: declared by name, each connected on first use and shared by every agent
that names its tools, all stopped when the flock shuts down."""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Iterable
from typing import Any

from flock_cli.errors import InvalidDeclarationError
from flock_cli.mcp_tools.config import McpServer, split_tool_name
from flock_cli.mcp_tools.connection import McpToolInfo, RestartHook, ServerConnection, ToolOutcome
from flock_cli.mcp_tools.errors import McpToolNotFoundError

__all__ = ["McpServers", "McpToolInfo"]


class McpServers:
    """The servers of one flock, by name (see the module docstring)."""

    def __init__(self) -> None:
        self._connections: dict[str, ServerConnection] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._connections

    def __len__(self) -> int:
        return len(self._connections)

    @property
    def names(self) -> list[str]:
        """The declared servers' names, in declaration order."""
        return list(self._connections)

    def config(self, name: str) -> McpServer:
        """The declaration of server ``name``."""
        return self._connections[name].config

    def declare(self, server: McpServer) -> None:
        """Add a server; InvalidDeclarationError when its name is taken."""
        if server.name in self._connections:
            raise InvalidDeclarationError(f"MCP server '{server.name}' is declared twice")
        self._connections[server.name] = ServerConnection(server)

    def check_name(self, tool_name: str) -> tuple[str, str]:
        """(server, tool) of an agent's ``server.tool`` / ``server.*``; InvalidDeclarationError
        when the server is not declared."""
        parts = split_tool_name(tool_name)
        if parts is None:
            raise InvalidDeclarationError(f"'{tool_name}' is not an MCP tool name (server.tool or server.*)")
        if parts[0] not in self._connections:
            known = ", ".join(self._connections) or "none are declared"
            raise InvalidDeclarationError(
                f"tool '{tool_name}' names MCP server '{parts[0]}', which is not declared (servers: {known})"
            )
        return parts

    async def tools_for(
        self, names: Iterable[str], on_restart: RestartHook | None = None
    ) -> list[McpToolInfo]:
        """The tools ``names`` select (``server.tool``, ``server.*`` or another glob), starting the
        servers they name; McpToolNotFoundError for a name that selects nothing."""
        chosen: dict[str, McpToolInfo] = {}
        for name in names:
            server, pattern = self.check_name(name)
            offered = await self._connections[server].tools(on_restart)
            matched = [t for t in offered.values() if fnmatch.fnmatchcase(t.name, pattern)]
            if not matched:
                raise McpToolNotFoundError(_not_offered(name, server, pattern, offered))
            for tool in matched:
                chosen.setdefault(tool.qualified, tool)
        return list(chosen.values())

    async def offered(self, server: str) -> dict[str, McpToolInfo]:
        """The tools ``server`` offers, by name (starting it)."""
        return await self._connections[server].tools()

    async def missing(self, name: str) -> str | None:
        """Why ``name`` selects no tool (starting its server), or None when it selects one."""
        try:
            await self.tools_for([name])
        except McpToolNotFoundError as exc:
            return str(exc)
        return None

    async def call(
        self, server: str, tool: str, arguments: dict[str, Any], on_restart: RestartHook | None = None
    ) -> ToolOutcome:
        """Call ``tool`` of ``server`` (see ``ServerConnection.call``)."""
        return await self._connections[server].call(tool, arguments, on_restart)

    async def aclose(self) -> None:
        """Stop every server that is running."""
        await asyncio.gather(*(c.close() for c in self._connections.values()))


def _not_offered(name: str, server: str, pattern: str, offered: dict[str, McpToolInfo]) -> str:
    from flock_cli.errors import closest

    hint = closest(pattern, offered) if "*" not in pattern else None
    listed = ", ".join(sorted(offered)) or "no tools"
    suggestion = f" Did you mean '{server}.{hint}'?" if hint else ""
    return (
        f"MCP server '{server}' offers no tool '{pattern}' (tool '{name}'); it offers: {listed}.{suggestion}"
    )
