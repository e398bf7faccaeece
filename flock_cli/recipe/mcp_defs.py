"""The ``mcp_servers:`` key of a recipe: MCP servers whose tools agents name as ``server.tool``
or ``server.*`` in their ``tools:``. ``flock_cli.mcp_tools.McpServer`` is what each compiles to."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flock_cli.recipe.durations import Duration, parse_duration

__all__ = ["McpServerDef"]

_ENV_REFS = "${NAME} reads environment variable NAME when the server starts (never written to traces)"


class McpServerDef(BaseModel):
    """One MCP server: a local ``command`` (stdio) or a remote ``url`` (streamable HTTP)."""

    # as the other recipe models: unknown keys are errors, and no type is coerced
    model_config = ConfigDict(extra="forbid", strict=True)

    command: str | None = Field(default=None, min_length=1, description="program to run (stdio transport)")
    args: list[str] = Field(default_factory=list, description="its arguments")
    env: dict[str, str] = Field(default_factory=dict, description=f"extra environment variables; {_ENV_REFS}")
    cwd: str | None = Field(
        default=None, min_length=1, description="its working directory (relative: to the recipe)"
    )
    url: str | None = Field(
        default=None,
        pattern=r"^(https?://|\$\{)",
        description="streamable HTTP endpoint (http:// or https://)",
    )
    headers: dict[str, str] = Field(default_factory=dict, description=f"HTTP headers; {_ENV_REFS}")
    timeout: Duration = Field(default=60.0, description="how long one tool call may take")
    startup_timeout: Duration = Field(
        default=30.0, description="how long starting the server and listing its tools may take"
    )
    max_restarts: int = Field(
        default=3, ge=0, description="restarts after the server died, over the flock's life"
    )

    _seconds = field_validator("timeout", "startup_timeout", mode="before")(parse_duration)

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerDef:
        if (self.command is None) == (self.url is None):
            raise ValueError("an MCP server needs exactly one of 'command' and 'url'")
        if self.url is not None and (self.args or self.env or self.cwd is not None):
            raise ValueError("args, env and cwd apply to a command, not a url")
        if self.command is not None and self.headers:
            raise ValueError("headers apply to a url, not a command")
        return self
