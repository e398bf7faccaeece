"""MCP servers as tool providers for agents (the ``flock-flow[mcp]`` extra).

A flock declares servers (``Flock.mcp_server(...)``, a recipe's ``mcp_servers:``); agents name the
tools they may use as ``server.tool`` or ``server.*``. Each server starts once per flock, on first
use, is shared by its agents, restarted (bounded) when it dies and stopped when the flock shuts
down. The ``mcp`` SDK is imported only when a server starts.
"""

from flock_cli.mcp_tools.config import McpServer, split_tool_name
from flock_cli.mcp_tools.errors import McpConfigError, McpServerError, McpToolNotFoundError
from flock_cli.mcp_tools.pool import McpServers, McpToolInfo

__all__ = [
    "McpConfigError",
    "McpServer",
    "McpServerError",
    "McpServers",
    "McpToolInfo",
    "McpToolNotFoundError",
    "split_tool_name",
]
