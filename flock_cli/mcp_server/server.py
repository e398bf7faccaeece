"""The MCP server of ``flock mcp``: the protocol on stdio, and the flock running beside it.

One event loop serves both: the flock attaches to its board and watches it (agents run as
artifacts arrive, including those other processes publish to a durable board), while the SDK's
low-level server answers the client. The low-level server is used because each publish tool's
input schema is a recipe type's JSON schema, not a Python signature.

Stdout carries protocol messages only: file descriptor 1 points at stderr (and 0 at the null
device) from before the first run until the last one ended, the protocol going through private
duplicates, so a stray print anywhere in the process (a library's notice, a run finishing after
the client left) cannot corrupt the stream, nor a child process read the client's messages.

The server stops when the client closes stdin, or on SIGINT/SIGTERM: no new run starts, runs in
flight finish (for up to :data:`SHUTDOWN_S` seconds, or until a second signal; on a durable board
the interrupted ones go back to it for the next flock), and the summary goes to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from flock_cli.core.summary import RunSummary
from flock_cli.early_signals import STOP_SIGNALS, EarlySignals
from flock_cli.errors import RunError
from flock_cli.mcp_server.stdin import claimed_stdio, open_stdin
from flock_cli.mcp_server.tools import FlockTools, ToolError
from flock_cli.mcp_server.wire import SerialWriter, answered_lines

if TYPE_CHECKING:
    from mcp.server import Server

    from flock_cli.core.orchestrator import Flock

__all__ = ["SHUTDOWN_S", "Served", "build_server", "serve_stdio"]

SHUTDOWN_S = 10.0
"""How long runs in flight may take to finish once the server stops."""


def build_server(tools: FlockTools, version: str) -> Server[Any]:
    """The SDK's low-level server offering ``tools``."""
    import mcp_types as types
    from mcp.server import Server, ServerRequestContext

    async def list_tools(
        _ctx: ServerRequestContext[Any], _params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(
            tools=[
                types.Tool(
                    name=spec.name,
                    description=spec.description,
                    input_schema=spec.input_schema,
                    annotations=types.ToolAnnotations(read_only_hint=spec.read_only),
                )
                for spec in tools.specs()
            ]
        )

    async def call_tool(
        _ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        try:
            answer = await tools.call(params.name, dict(params.arguments or {}))
        except ToolError as exc:
            return types.CallToolResult(content=[types.TextContent(text=str(exc))], is_error=True)
        return types.CallToolResult(
            content=[types.TextContent(text=json.dumps(answer, indent=2))], structured_content=answer
        )

    recipe = tools.recipe
    return Server(
        f"flock-{recipe.name}",
        version=version,
        title=f"Flock-Flow: {recipe.name}",
        description=recipe.definition.description,
        instructions=_instructions(tools),
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def _instructions(tools: FlockTools) -> str:
    starts = (
        ", ".join(f"publish_{name}" for name in sorted(tools.inputs)) or "(none: nothing starts a workflow)"
    )
    return (
        f"A Flock-Flow flock ({tools.recipe.name}): agents react to typed artifacts on a blackboard."
        f" Start a workflow with {starts}, then call wait_for_results with the correlation_id it"
        " answered; query_board lists artifacts, describe_flock shows the types and agents."
    )


@dataclass
class Served:
    """What a served flock did, and whether a second signal cut its stop short."""

    summary: RunSummary
    aborted: bool


async def serve_stdio(
    flock: Flock, server: Server[Any], *, force: bool, early_signals: EarlySignals | None = None
) -> Served:
    """Serve ``server`` on stdin/stdout while ``flock`` runs, until stdin ends or a signal comes;
    then stop the flock: runs in flight finish, unless a second signal aborts them (on a durable
    board their deliveries go back to it).

    ``early_signals``: the block that counted Ctrl-C and SIGTERM since the board was opened
    (``flock mcp``); the signals it counted are acted on as soon as serving takes the signals."""
    with claimed_stdio() as wire:  # from before the first run starts until the last one ended
        return await _serve(flock, server, force, wire, early_signals)


async def _serve(
    flock: Flock, server: Server[Any], force: bool, wire: tuple[int, int], early_signals: EarlySignals | None
) -> Served:
    loop = asyncio.get_running_loop()
    await flock.attach(force=force)
    stop = asyncio.Event()
    abort = asyncio.Event()
    watcher = asyncio.create_task(flock.watch(stop=stop))
    protocol = asyncio.create_task(_speak(server, *wire))

    signalled = 0

    def on_signal() -> None:
        nonlocal signalled
        signalled += 1
        if signalled == 1 and not protocol.done():
            protocol.cancel()  # the first one stops serving (stdin may still be open)
        else:
            abort.set()

    signals = STOP_SIGNALS
    early = early_signals.release() if early_signals is not None else 0
    for sig in signals:
        loop.add_signal_handler(sig, on_signal)
    for _ in range(early):
        on_signal()  # a Ctrl-C or SIGTERM while the flock was built or attached
    summaries: list[RunSummary] = []
    failure: BaseException | None = None
    try:
        await asyncio.wait({protocol, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if not protocol.done():  # the scheduler stopped under the server: stop serving, say why
            protocol.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await protocol
    finally:
        _note("stopping: no new run starts, runs in flight finish (a second Ctrl-C or SIGTERM aborts them)")
        stop.set()
        try:
            summaries.append(await watcher)
        except Exception as exc:
            failure = exc
        durable = flock.store.durable
        graceful = asyncio.ensure_future(flock.shutdown(SHUTDOWN_S, drain=False, release_interrupted=durable))
        waiter = asyncio.ensure_future(abort.wait())
        await asyncio.wait({graceful, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        aborted = not graceful.done()
        if aborted:
            graceful.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await graceful
            summaries.append(await flock.shutdown(0, release_interrupted=True))
        else:
            summaries.append(graceful.result())
        for sig in signals:
            loop.remove_signal_handler(sig)
        await flock.store.close()
    if failure is not None:
        raise RunError(f"flock mcp stopped because its scheduler failed: {failure}") from failure
    return Served(RunSummary.merged(summaries), aborted)


def _note(text: str) -> None:
    import sys

    print(f"flock mcp: {text}", file=sys.stderr, flush=True)  # stdout is the client's


async def _speak(server: Server[Any], wire_in: int, wire_out: int) -> None:
    """The protocol on the client's stdin and stdout (``wire_in``, ``wire_out``)."""
    import io

    import anyio
    from mcp.server.stdio import stdio_server

    lines = await open_stdin(wire_in)
    stdin: Any = lines
    if lines is None:  # what the loop cannot watch: the SDK's reader thread reads it
        stdin = anyio.wrap_file(
            io.TextIOWrapper(os.fdopen(os.dup(wire_in), "rb"), encoding="utf-8", errors="replace")
        )
    stdout = io.TextIOWrapper(os.fdopen(os.dup(wire_out), "wb"), encoding="utf-8")
    out = SerialWriter(stdout)
    checked: Any = answered_lines(stdin, out)  # requests the SDK cannot read are answered here
    try:
        async with stdio_server(stdin=checked, stdout=cast(Any, out)) as (read, write):
            await server.run(read, write, server.create_initialization_options())
    finally:
        if lines is not None:
            lines.close()
        else:
            stdin.wrapped.close()
        stdout.close()
