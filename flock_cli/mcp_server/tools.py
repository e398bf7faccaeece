"""The tools ``flock mcp`` offers, without the protocol: what each takes, does and answers.

* ``publish_<Type>`` for each type the recipe starts from (consumed, published by no agent): the
  arguments are the payload, checked against the type (its JSON schema is the tool's input
  schema); each publish starts a workflow of its own and answers its artifact and correlation id.
* ``wait_for_results``: wait (up to a timeout) until a workflow has settled, and answer what it
  produced, what still waits in gates and what failed.
* ``query_board``: artifacts by type and correlation id, newest first.
* ``describe_flock``: the recipe's types and agents.

The client reads and publishes as one identity, ``mcp`` (a tenant and labels from the command
line): it sees what that identity may see, exactly as a ``flock serve`` token of that identity
would, and a refusal is recorded for the audit the same way (:class:`~flock_cli.service.access.Access`).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flock_cli.errors import FlockClosedError, InvalidPayloadError, printable
from flock_cli.mcp_server.workflow import WorkflowState, read_workflow, settled_twice
from flock_cli.service.access import Access, output_rules
from flock_cli.service.schemas import ArtifactOut
from flock_cli.store.contract import UNRESTRICTED, ArtifactQuery

if TYPE_CHECKING:
    from flock_cli.core.artifact import Artifact
    from flock_cli.core.orchestrator import Flock
    from flock_cli.core.visibility import AgentIdentity, Visibility
    from flock_cli.recipe.loader import Recipe

__all__ = ["CLIENT_NAME", "MAX_WAIT", "FlockTools", "ToolError", "ToolSpec"]

CLIENT_NAME = "mcp"
"""The identity an MCP client reads and publishes as (``produced_by`` of what it publishes)."""
MAX_WAIT = 600.0
"""The longest ``wait_for_results`` timeout, in seconds."""
MAX_ITEMS = 200
POLL_S = 0.25
"""How often a waiting call reads the board again when no run started or ended meanwhile."""


class ToolError(Exception):
    """A call the tool refuses (bad arguments, an invalid payload): the client gets the message
    as a tool error, so the model reading it can correct the call."""


@dataclass(frozen=True)
class ToolSpec:
    """A tool as ``tools/list`` shows it."""

    name: str
    description: str
    input_schema: dict[str, Any]
    read_only: bool


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WaitArgs(_Args):
    correlation_id: UUID = Field(description="The workflow, as a publish_* tool answered it.")
    timeout: float = Field(
        default=30, ge=0, le=MAX_WAIT, description="Seconds to wait at most for the workflow to settle."
    )


class QueryArgs(_Args):
    type: str | None = Field(default=None, description="Only artifacts of this type.")
    correlation_id: UUID | None = Field(default=None, description="Only this workflow.")
    limit: int = Field(default=20, ge=1, le=MAX_ITEMS, description="At most this many, newest first.")


class DescribeArgs(_Args):
    pass


class FlockTools:
    """The tools over one flock (running in this process) and its recipe."""

    def __init__(self, flock: Flock, recipe: Recipe, identity: AgentIdentity) -> None:
        self.flock = flock
        self.recipe = recipe
        self.identity = identity
        self.access = Access(flock.store, output_rules(flock.agents))
        entry = recipe.graph.entry_types()
        self.inputs = {name: recipe.resolved.types[name] for name in entry}
        self._known = sorted(n for n in recipe.resolved.types if "." not in n)
        self._waiters: set[asyncio.Event] = set()
        flock.on_activity(self._wake)  # a run started or ended: waiting calls look again at once

    def _wake(self, _activity: Any) -> None:
        for waiter in self._waiters:
            waiter.set()

    def specs(self) -> list[ToolSpec]:
        """Every tool, publish tools first (sorted by type)."""
        found = [
            ToolSpec(
                f"publish_{name}",
                f"Publish a {name} to the flock's blackboard: {_doc(model)}This starts a workflow"
                f" ({', '.join(self.recipe.graph.consumers(name))} consume it). Answers the artifact"
                " id and the workflow's correlation_id (give it to wait_for_results).",
                model.model_json_schema(),
                read_only=False,
            )
            for name, model in sorted(self.inputs.items())
        ]
        found += [
            ToolSpec(
                "wait_for_results",
                "Wait until a workflow (a correlation_id from a publish_* tool) has settled: no"
                " agent run queued or going for it. Answers the artifacts it produced so far,"
                " whether it settled or the timeout came first, what waits in gates for more"
                " input and which runs failed.",
                WaitArgs.model_json_schema(),
                read_only=True,
            ),
            ToolSpec(
                "query_board",
                "List artifacts on the blackboard, newest first, by type and workflow"
                " (correlation_id), with the total of matches.",
                QueryArgs.model_json_schema(),
                read_only=True,
            ),
            ToolSpec(
                "describe_flock",
                "The recipe: its types (with their JSON schemas and which can be published here)"
                " and its agents (what each consumes and publishes).",
                DescribeArgs.model_json_schema(),
                read_only=True,
            ),
        ]
        return found

    async def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """Run the tool ``name``; raises ToolError for a call it refuses."""
        if name.startswith("publish_") and name.removeprefix("publish_") in self.inputs:
            return await self.publish(name.removeprefix("publish_"), arguments)
        if name == "wait_for_results":
            return await self.wait(_parse(WaitArgs, arguments, name))
        if name == "query_board":
            return await self.query(_parse(QueryArgs, arguments, name))
        if name == "describe_flock":
            _parse(DescribeArgs, arguments, name)
            return self.describe()
        tools = ", ".join(spec.name for spec in self.specs())
        raise ToolError(f"no tool named {name!r}; the tools: {tools}")

    async def publish(self, type_name: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Publish ``payload`` as a new workflow's ``type_name``."""
        try:
            artifact = await self.flock.publish_external(
                type_name, payload, visibility=self._visibility(), produced_by=self.identity.name
            )
        except InvalidPayloadError as exc:
            raise ToolError(str(exc)) from None
        except FlockClosedError:
            raise ToolError("the flock is stopping: nothing more is published") from None
        return {
            "artifact_id": str(artifact.id),
            "correlation_id": str(artifact.correlation_id),
            "type": type_name,
        }

    def _visibility(self) -> Visibility | None:
        tenant = self.identity.tenant_id
        if tenant is None:
            return None
        from flock_cli.recipe.visibility_text import parse_visibility

        # as a flock serve token of a tenant: what it publishes stays in its tenant
        return parse_visibility(f"tenant:{tenant}", agents=[])

    async def wait(self, args: WaitArgs) -> dict[str, Any]:
        """Wait for the workflow to settle (or the timeout), then describe it."""
        store = self.flock.store
        loop = asyncio.get_running_loop()
        deadline = loop.time() + args.timeout
        waiter = asyncio.Event()
        self._waiters.add(waiter)
        try:
            state = await read_workflow(store, args.correlation_id)
            await self._visible_or_refuse(state)
            while True:
                waiter.clear()
                again = await read_workflow(store, args.correlation_id)
                settled = settled_twice(state, again)
                state = again
                left = deadline - loop.time()
                if settled or left <= 0:
                    break
                with contextlib.suppress(TimeoutError):  # no run started or ended: look again anyway
                    await asyncio.wait_for(waiter.wait(), min(POLL_S, left))
        finally:
            self._waiters.discard(waiter)
        return await self._report(state, settled)

    async def _visible_or_refuse(self, state: WorkflowState) -> None:
        now = self.flock.store.clock.now()
        if not state.artifacts or not self.access.may_see_all(state.artifacts[:1], self.identity, now):
            # one answer for "none" and "not yours": a workflow's existence is not shown to those
            # who may not see how it started
            raise ToolError(f"no workflow {state.correlation_id} that this client may see")

    async def _report(self, state: WorkflowState, settled: bool) -> dict[str, Any]:
        now = self.flock.store.clock.now()
        shown = await self.access.readable(state.artifacts, self.identity, now)
        failed = []
        for letter, readable in await self.access.shown_letters(state.dead_letters, self.identity, now):
            failed.append(
                {
                    "agent": letter.agent,
                    "reason": str(letter.reason),
                    "error_type": letter.error_type,
                    "error": letter.error if readable or letter.error is None else "(hidden)",
                    "attempts": letter.attempts,
                }
            )
        return {
            "correlation_id": str(state.correlation_id),
            "settled": settled,
            "timed_out": not settled,
            "artifacts": [_view(a) for a in shown],
            "hidden": len(state.artifacts) - len(shown),
            "runs_open": state.running + state.unrouted + state.batched,
            "waiting_in_gates": dict(sorted(state.gated.items())),
            "failed": failed,
        }

    async def query(self, args: QueryArgs) -> dict[str, Any]:
        """Artifacts this client may see, newest first."""
        if args.type is not None and args.type not in self.recipe.resolved.types:
            from flock_cli.errors import did_you_mean

            raise ToolError(
                f"the recipe has no type {args.type!r}.{did_you_mean(args.type, self._known)}"
                f" Its types: {', '.join(self._known)}"
            )
        store = self.flock.store
        query = ArtifactQuery(
            types=frozenset({args.type}) if args.type else None,
            correlation_id=args.correlation_id,
            newest_first=True,
        )
        matches = (await store.query(query, viewer=UNRESTRICTED)).items
        shown = await self.access.readable(matches, self.identity, store.clock.now())
        return {"items": [_view(a) for a in shown[: args.limit]], "total": len(shown), "limit": args.limit}

    def describe(self) -> dict[str, Any]:
        """The recipe's types and agents, and who this client is."""
        graph = self.recipe.graph
        identity = self.identity
        return {
            "recipe": self.recipe.name,
            "description": self.recipe.definition.description,
            "client": {
                "name": identity.name,
                "tenant": identity.tenant_id,
                "labels": sorted(identity.labels),
            },
            "types": [
                {
                    "name": name,
                    "publish_tool": f"publish_{name}" if name in self.inputs else None,
                    "consumed_by": graph.consumers(name),
                    "published_by": graph.producers(name),
                    "schema": self.recipe.resolved.types[name].model_json_schema(),
                }
                for name in self._known
            ],
            "agents": [
                {
                    "name": agent.name,
                    "description": agent.description,
                    "consumes": graph.inputs(agent.name),
                    "publishes": graph.outputs(agent.name),
                }
                for agent in self.flock.agents
            ],
        }


def _parse(model: type[_Args], arguments: dict[str, Any], tool: str) -> Any:
    try:
        return model.model_validate(arguments)
    except ValidationError as exc:
        details = "; ".join(
            f"{printable('.'.join(str(p) for p in e['loc']), keep='') or '<arguments>'}: {e['msg']}"
            for e in exc.errors()
        )
        raise ToolError(f"invalid arguments for {tool}: {details}") from None


def _view(artifact: Artifact) -> dict[str, Any]:
    return ArtifactOut.of(artifact).model_dump(mode="json", exclude={"trace_context"})


def _doc(model: type[BaseModel]) -> str:
    doc = (model.__doc__ or "").strip()
    return f"{doc.rstrip('.')}. " if doc else ""
