"""Errors of MCP tool servers: one that cannot be reached, and a tool name it does not offer."""

from __future__ import annotations

from flock_cli.errors import RunError, UserError

__all__ = ["McpServerError", "McpToolNotFoundError"]


class McpServerError(RunError):
    """An MCP server could not be started, died more often than ``max_restarts`` allows, or
    answered a request with an error (the message never holds a header or environment value)."""


class McpToolNotFoundError(UserError):
    """An agent names a tool its MCP server does not offer."""
