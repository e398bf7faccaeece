"""``flock check --connect``: start a recipe's MCP servers and check that every MCP tool its
agents name exists, each problem placed at the file:line:column of the name (``flock validate``
and plain ``flock check`` never start anything)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flock_cli.mcp_tools.config import McpServer
from flock_cli.mcp_tools.errors import McpConfigError, McpServerError
from flock_cli.mcp_tools.pool import McpServers
from flock_cli.recipe.compiler import mcp_server_options
from flock_cli.recipe.diagnostics import Diagnostic, Problem

if TYPE_CHECKING:
    from flock_cli.recipe.loader import Recipe

__all__ = ["check_connections"]


async def check_connections(recipe: Recipe) -> tuple[list[Diagnostic], dict[str, list[str]]]:
    """Problems with the recipe's MCP servers and tools (errors), and the tools each server that
    started offers."""
    servers = McpServers()
    for name, server in recipe.definition.mcp_servers.items():
        servers.declare(McpServer(name=name, **mcp_server_options(server, recipe.path.parent)))
    problems: list[Problem] = []
    offered: dict[str, list[str]] = {}
    broken: set[str] = set()
    try:
        for name in servers.names:
            try:
                offered[name] = sorted(await servers.offered(name))
            except (McpServerError, McpConfigError) as exc:
                broken.add(name)
                problems.append(Problem(("mcp_servers", name), str(exc), code="mcp-server", key=True))
        for agent in recipe.resolved.agents.values():
            for i, tool_name in enumerate(agent.spec.tools):
                if tool_name not in agent.mcp_tools or tool_name.partition(".")[0] in broken:
                    continue
                missing = await servers.missing(tool_name)
                if missing is not None:
                    problems.append(Problem(("agents", agent.name, "tools", i), missing, code="unknown-tool"))
    finally:
        await servers.aclose()
    return [recipe.diagnostic(p) for p in problems], offered
