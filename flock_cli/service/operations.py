"""The service's operator routes (agents, dead letters, runs) and its health probes."""

# No ``from __future__ import annotations``: FastAPI reads the routes' annotations at run time.
import asyncio
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

from fastapi import FastAPI, Query, Response
from fastapi.responses import PlainTextResponse

from flock_cli.errors import UserError
from flock_cli.service.problems import COMMON_ERRORS as _ERRORS
from flock_cli.service.problems import PROBLEM_RESPONSE as _PROBLEM
from flock_cli.service.problems import Problem
from flock_cli.service.schemas import AgentOut, DeadLetterOut
from flock_cli.service.tokens import Principal

if TYPE_CHECKING:
    from flock_cli.service.state import ServiceState

__all__ = ["health_routes", "routes"]

MAX_RUNS = 1000


def routes(app: FastAPI, state: "ServiceState", caller: Any) -> None:
    flock, store = state.flock, state.store

    def operator(who: Principal) -> None:
        if not who.operator:
            raise Problem(403, f"the token {who.name!r} is not an operator token (operator: true)")

    forbidden: dict[int | str, dict[str, Any]] = {403: {"description": "needs an operator token", **_PROBLEM}}

    @app.get(
        "/v1/agents",
        response_model=list[AgentOut],
        operation_id="list_agents",
        tags=["operate"],
        responses={**_ERRORS, **forbidden},
    )
    async def agents(who: caller) -> list[AgentOut]:
        """The agents with their runs going, queued and done, model usage and budget."""
        operator(who)
        status = flock.status()
        found = []
        for agent in flock.agents:
            usage = flock.usage.of(agent.name)
            found.append(
                AgentOut(
                    name=agent.name,
                    description=agent.description,
                    consumes=sorted({t for s in agent.subscriptions for t in s.type_names}),
                    publishes=[o.type_name for o in agent.outputs],
                    running=status.running_by_agent.get(agent.name, 0),
                    queued=status.queued_by_agent.get(agent.name, 0),
                    runs=status.runs_by_agent.get(agent.name, 0),
                    usage={
                        "input_tokens": usage.input_tokens,
                        "output_tokens": usage.output_tokens,
                        "cost": usage.cost,
                        "calls": usage.calls,
                    },
                    budget=agent.budget.model_dump(mode="json") if agent.budget is not None else None,
                )
            )
        return found

    @app.get(
        "/v1/dead-letters",
        response_model=list[DeadLetterOut],
        operation_id="list_dead_letters",
        tags=["operate"],
        responses=_ERRORS,
    )
    async def dead_letters(who: caller) -> list[DeadLetterOut]:
        """Dead letters whose artifacts the token may all see (an operator token sees every one)."""
        letters = await store.dead_letters()
        if who.operator:
            pairs = [(letter, True) for letter in letters]
        else:
            pairs = await state.access.shown_letters(letters, who.identity, store.clock.now())
        shown = []
        for letter, error_shown in pairs:
            data = letter.model_dump(mode="json")
            if not error_shown:
                data["error"] = "(hidden)" if data.get("error") else None  # it can quote the output
            shown.append(DeadLetterOut.model_validate(data))
        return shown

    @app.post(
        "/v1/dead-letters/{letter_id}/redeliver",
        status_code=202,
        operation_id="redeliver_dead_letter",
        tags=["operate"],
        responses={**_ERRORS, **forbidden, 404: {"description": "no such dead letter", **_PROBLEM}},
    )
    async def redeliver(letter_id: UUID, who: caller) -> dict[str, str]:
        """Offer a dead letter's artifacts to its agent again (the letter is removed)."""
        operator(who)
        state.check_accepting()
        if letter_id not in {letter.id for letter in await store.dead_letters()}:
            raise Problem(404, f"no dead letter {letter_id}")
        try:
            await flock.retry_dead_letter(letter_id)
        except UserError as exc:
            raise Problem(409, str(exc)) from None
        state.tail.wake()
        return {"status": "redelivered", "letter": str(letter_id)}

    no_runs: dict[int | str, dict[str, Any]] = {404: {"description": "tracing is off: no runs", **_PROBLEM}}

    @app.get(
        "/v1/runs", operation_id="list_runs", tags=["operate"], responses={**_ERRORS, **forbidden, **no_runs}
    )
    async def runs(
        who: caller,
        limit: Annotated[int, Query(ge=1, le=MAX_RUNS)] = 20,
    ) -> list[dict[str, Any]]:
        """Traced runs, newest first, as ``flock trace list --json`` gives them."""
        operator(who)
        return await asyncio.to_thread(_run_list, state, limit)

    @app.get(
        "/v1/runs/{run}",
        operation_id="get_run",
        tags=["operate"],
        responses={
            **_ERRORS,
            **forbidden,
            404: {"description": "no such run (or tracing is off)", **_PROBLEM},
        },
    )
    async def run(run: str, who: caller) -> dict[str, Any]:
        """One run as a tree, as ``flock trace show --json`` gives it."""
        operator(who)
        return await asyncio.to_thread(_run_tree, state, run)


def health_routes(app: FastAPI, state: "ServiceState") -> None:
    @app.get("/health/live", operation_id="live", tags=["health"])
    async def live() -> dict[str, str]:
        """The process answers (Kubernetes' liveness probe)."""
        return {"status": "alive"}

    @app.get(
        "/health/ready",
        operation_id="ready",
        tags=["health"],
        responses={503: {"description": "not ready: the checks say why"}},
    )
    async def ready(response: Response) -> dict[str, Any]:
        """Board reachable, scheduler running, not draining (Kubernetes' readiness probe)."""
        ok, checks = state.ready
        response.status_code = 200 if ok else 503
        return {"status": "ready" if ok else "not ready", "checks": checks}

    @app.get("/metrics", response_class=PlainTextResponse, operation_id="metrics", tags=["health"])
    async def metrics() -> PlainTextResponse:
        """Prometheus metrics of this process's flock."""
        return PlainTextResponse(state.flock.tracer.metrics.render(), media_type="text/plain; version=0.0.4")


def _run_list(state: "ServiceState", limit: int) -> list[dict[str, Any]]:
    from flock_cli.tracing.board_runs import board_runs
    from flock_cli.tracing.reader import TraceReader

    if not state.traces:
        raise Problem(404, "tracing is off in this service: no runs to show")
    return [run.to_json() for run in board_runs(TraceReader(state.traces), limit=limit)]


def _run_tree(state: "ServiceState", ref: str) -> dict[str, Any]:
    from flock_cli.tracing.reader import TraceReader
    from flock_cli.tracing.run_tree import read_run_tree

    if not state.traces:
        raise Problem(404, "tracing is off in this service: no runs to show")
    try:
        return read_run_tree(TraceReader(state.traces), ref).to_json()
    except UserError as exc:
        raise Problem(404, str(exc)) from None
