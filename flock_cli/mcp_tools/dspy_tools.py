"""An agent's MCP tools as DSPy tools for one engine call: live (calling the flock's servers) or
replayed (answering from a recording, with no server started).

Every call is kept (tool, arguments, answer, error or not) so the engine records it with the
model's answers; a replay gives the recorded answers back in order. A tool's error (the server's
error result, a timeout, a server that died) is given to the model as an observation starting
``Error:``, and the run goes on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flock_cli.errors import InvalidDeclarationError
from flock_cli.mcp_tools.connection import McpToolInfo
from flock_cli.mcp_tools.errors import McpServerError

if TYPE_CHECKING:
    from flock_cli.core.agent import Agent
    from flock_cli.core.context import Context
    from flock_cli.engines.recording import ModelCall

__all__ = ["McpToolBox", "mcp_toolbox"]


class McpToolBox:
    """The MCP tools one engine call offers and the calls the model made with them."""

    def __init__(self, tools: list[McpToolInfo], ctx: Context, recorded: list[dict[str, Any]] | None) -> None:
        self.tools = tools
        self.calls: list[dict[str, Any]] = []
        self.problems: list[str] = []  # replayed calls that differ from the recorded ones
        self._ctx = ctx
        self._recorded = recorded

    def definitions(self) -> list[dict[str, Any]]:
        """The offered tools as recorded with the call."""
        return [t.to_json() for t in self.tools]

    def dspy_tools(self) -> list[Any]:
        """One ``dspy.Tool`` per MCP tool, named ``server.tool``."""
        import dspy
        from dspy.adapters.types.tool import convert_input_schema_to_tool_args

        made = []
        for info in self.tools:
            args, arg_types, arg_desc = convert_input_schema_to_tool_args(info.input_schema)
            # a property's title repeats its name: noise that small models copy into their calls
            args = {name: {k: v for k, v in spec.items() if k != "title"} for name, spec in args.items()}
            tool = dspy.Tool(self._caller(info), name=info.qualified, desc=info.description or None)
            tool.args, tool.arg_types, tool.arg_desc = args, arg_types, arg_desc
            made.append(tool)
        return made

    def _caller(self, info: McpToolInfo) -> Any:
        async def call(**arguments: Any) -> str:
            if self._recorded is not None:
                text, is_error = self._replayed(info, arguments)
            else:
                text, is_error = await self._live(info, arguments)
                self.calls.append({"tool": info.qualified, "arguments": arguments, "result": text,
                                   "is_error": is_error})  # fmt: skip
            return f"Error: {text}" if is_error else text

        return call

    async def _live(self, info: McpToolInfo, arguments: dict[str, Any]) -> tuple[str, bool]:
        try:
            outcome = await self._ctx.tool_servers.call(info.server, info.name, arguments, self.restarted)
        except McpServerError as exc:  # down for good: the model is told, the run goes on
            return str(exc), True
        return outcome.text, outcome.is_error

    def _replayed(self, info: McpToolInfo, arguments: dict[str, Any]) -> tuple[str, bool]:
        assert self._recorded is not None
        index = len(self.calls)
        self.calls.append({"tool": info.qualified, "arguments": arguments})
        if index >= len(self._recorded):
            self.problems.append(f"tool call {index + 1} ({info.qualified}) was not recorded")
            return "this call was not recorded", True
        entry = self._recorded[index]
        if entry.get("tool") != info.qualified or entry.get("arguments") != arguments:
            self.problems.append(
                f"tool call {index + 1} was recorded as {entry.get('tool')} and replayed as {info.qualified}"
                " with other arguments" if entry.get("tool") == info.qualified else
                f"tool call {index + 1} was recorded as {entry.get('tool')} and replayed as {info.qualified}"
            )  # fmt: skip
            return "this call differs from the recorded one", True
        self.calls[index].update(result=entry.get("result", ""), is_error=bool(entry.get("is_error")))
        return str(entry.get("result", "")), bool(entry.get("is_error"))

    def restarted(self, server: str, restart: int, reason: str) -> None:
        """Trace a server's restart in the run that caused it."""
        self._ctx.trace.event("mcp.server_restart", server=server, restart=restart, reason=reason)


async def mcp_toolbox(agent: Agent, ctx: Context, recorded: ModelCall | None) -> McpToolBox | None:
    """The agent's MCP tools for one engine call: those of the ``recorded`` call when replaying
    (no server is started), else listed from the flock's servers (started if need be)."""
    if not agent.mcp_tools:
        return None
    if recorded is not None:
        tools = [McpToolInfo(str(t["server"]), str(t["name"]), str(t.get("description") or ""),
                             dict(t.get("input_schema") or {})) for t in recorded.tools]  # fmt: skip
        return McpToolBox(tools, ctx, list(recorded.tool_calls))
    servers = ctx.tool_servers
    if servers is None or not len(servers):
        raise InvalidDeclarationError(
            f"agent '{agent.name}' names MCP tools but its flock has no MCP servers"
        )
    box = McpToolBox([], ctx, None)
    box.tools = await servers.tools_for(agent.mcp_tools, box.restarted)
    return box
