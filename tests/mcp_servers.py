"""MCP servers for the tests, written with the official SDK (``mcp.server.mcpserver.MCPServer``).

Run as a program: ``python tests/mcp_servers.py stdio`` serves over stdin/stdout,
``python tests/mcp_servers.py http PORT`` serves streamable HTTP on 127.0.0.1:PORT/mcp (and, with a
third argument, refuses requests whose ``Authorization`` header is not ``Bearer <that argument>``).
Set ``FLOCK_TEST_PIDFILE`` to have the server write its process id there when it starts.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("test-tools")
NOTES = {"alpha": "Alpha is the first letter.", "beta": "Beta comes second."}


@server.tool()
def read_note(name: str) -> str:
    """Read the note called `name` (alpha or beta)."""
    if name not in NOTES:
        raise ToolError(f"no note called {name!r}")
    return NOTES[name]


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def env_value(name: str) -> str:
    """The value of environment variable `name` in the server's process."""
    return os.environ.get(name, "<unset>")


@server.tool()
def working_dir() -> str:
    """The server's working directory."""
    return os.getcwd()


@server.tool()
def crash() -> str:
    """Exit the server process in the middle of the call."""
    os._exit(3)


@server.tool()
async def hang() -> str:
    """Never answer."""
    await asyncio.sleep(3600)
    return "unreachable"


def main() -> None:
    pidfile = os.environ.get("FLOCK_TEST_PIDFILE")
    if pidfile:
        Path(pidfile).write_text(str(os.getpid()))
    if sys.argv[1] == "stdio":
        server.run("stdio")
    elif sys.argv[1] == "stdio-once":  # serves the first time; every later start exits at once
        flag = Path(sys.argv[2])
        if flag.exists():
            sys.exit(5)
        flag.write_text("started")
        server.run("stdio")
    elif sys.argv[1] == "stdio-banner":  # a line that is no MCP message first, on stdout
        print("Test server v1 starting...", flush=True)
        server.run("stdio")
    elif sys.argv[1] == "stdio-bad-output":
        _run_bad_output()
    else:
        port = int(sys.argv[2])
        if len(sys.argv) > 3:
            _run_with_token(port, sys.argv[3])
        else:
            server.run("streamable-http", host="127.0.0.1", port=port)


def _run_bad_output() -> None:
    """A low-level server whose ``count`` tool answers against its own output schema (which the
    client refuses), beside a good ``add``."""
    import anyio
    import mcp_types as types
    from mcp.server import Server
    from mcp.server.stdio import stdio_server

    async def list_tools(ctx, params):  # type: ignore[no-untyped-def]
        counted = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
        return types.ListToolsResult(
            tools=[
                types.Tool(name="count", input_schema={"type": "object"}, output_schema=counted),
                types.Tool(name="add", input_schema={"type": "object"}),
            ]
        )

    async def call_tool(ctx, params):  # type: ignore[no-untyped-def]
        if params.name == "count":
            return types.CallToolResult(content=[types.TextContent(text="x")], structured_content={"n": "x"})
        return types.CallToolResult(content=[types.TextContent(text="3")])

    lowlevel = Server("bad-output", on_list_tools=list_tools, on_call_tool=call_tool)

    async def serve() -> None:
        async with stdio_server() as (read, write):
            await lowlevel.run(read, write, lowlevel.create_initialization_options())

    anyio.run(serve)


def _run_with_token(port: int, token: str) -> None:
    import uvicorn
    from starlette.middleware.base import BaseHTTPMiddleware
    from starlette.responses import PlainTextResponse

    app = server.streamable_http_app()

    async def check(request, call_next):  # type: ignore[no-untyped-def]
        if request.headers.get("authorization") != f"Bearer {token}":
            return PlainTextResponse("unauthorized", status_code=401)
        return await call_next(request)

    app.add_middleware(BaseHTTPMiddleware, dispatch=check)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
