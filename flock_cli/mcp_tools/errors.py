"""Errors of MCP tool servers: one that cannot be reached, and a tool name it does not offer."""

from __future__ import annotations

from flock_cli.errors import RunError, UserError

__all__ = ["McpConfigError", "McpServerError", "McpToolNotFoundError"]


class McpServerError(RunError):
    """An MCP server could not be started, died more often than ``max_restarts`` allows, or
    answered a request with an error (the message never holds a header or environment value)."""


class McpToolNotFoundError(UserError):
    """An agent names a tool its MCP server does not offer."""


class McpConfigError(UserError):
    """A server's declaration cannot be used as it stands: a ``${NAME}`` it refers to is not set
    (said before the server is started, naming the variable, never a value)."""
