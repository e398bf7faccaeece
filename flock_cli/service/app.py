"""The FastAPI application of ``flock serve``: routes, authentication and error answers.

Every route is a client of the same runtime as the CLI: publishing goes through
``Flock.publish_external`` and every read through the store with the caller's identity as the
viewer, so an HTTP reader is filtered (and its denials recorded) exactly as an agent is.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the routes' annotations, and
# those of the per-type publish routes are made at run time (each its own body model).
import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from flock_cli.errors import UserError
from flock_cli.service import publishing
from flock_cli.service.events import EventFilter, event_stream
from flock_cli.service.limits import BodyLimit
from flock_cli.service.problems import PROBLEM_JSON, Problem, problem_response
from flock_cli.service.schemas import (
    AgentOut,
    ArtifactOut,
    ArtifactPage,
    DeadLetterOut,
    LineageOut,
    publish_body,
)
from flock_cli.service.tokens import Principal
from flock_cli.store.contract import ArtifactQuery

if TYPE_CHECKING:
    from pydantic import BaseModel

    from flock_cli.service.state import ServiceState

__all__ = ["build_app"]

_PROBLEM = {"content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no token, or an unknown one", **_PROBLEM},
    429: {"description": "rate limit reached (see Retry-After)", **_PROBLEM},
}
MAX_PAGE = 1000


def build_app(state: "ServiceState") -> Any:
    """The ASGI application serving ``state``'s flock (wrapped in the body size limit)."""
    app = FastAPI(
        title="Flock-Flow blackboard",
        version="1",
        description="Publish typed artifacts to a flock's blackboard, read them back and follow what"
        " happens. Every call takes `Authorization: Bearer <token>`; reads show what the token's"
        " identity may see.",
        docs_url=None,  # Swagger UI loads its script from a CDN: no use offline
        redoc_url=None,
    )
    app.state.flock = state
    bearer = HTTPBearer(auto_error=False, description="A token of the service's token file.")

    async def principal(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        if state.tokens is None or credentials is None or credentials.scheme.lower() != "bearer":
            raise Problem(401, "send Authorization: Bearer <token>", headers={"WWW-Authenticate": "Bearer"})
        found = state.tokens.lookup(credentials.credentials)
        if found is None:
            raise Problem(401, "unknown token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        state.admit(found)
        return found

    Caller = Annotated[Principal, Depends(principal)]

    _errors(app)
    _publish_routes(app, state, Caller)
    _read_routes(app, state, Caller)
    _ops_routes(app, state, Caller)
    _health_routes(app, state)
    _openapi(app)
    return BodyLimit(app, state.config.max_body_bytes, _too_large)


def _too_large(limit: int) -> Any:
    return problem_response(413, f"the request body is larger than {limit} bytes")


def _errors(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def problem(_: Request, exc: Problem) -> Response:
        return problem_response(exc.status, exc.detail, headers=exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        type_name = request.scope.get("flock_type")
        what = f"an invalid {type_name} payload" if type_name else "an invalid request"
        detail = f"{what}: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        extra: dict[str, Any] = {"errors": errors}
        if type_name:
            extra["type_name"] = type_name
        return problem_response(422, detail, **extra)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Response:
        return problem_response(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))

    @app.exception_handler(UserError)
    async def user_error(_: Request, exc: UserError) -> Response:
        return problem_response(400, str(exc))


def _publish_routes(app: FastAPI, state: "ServiceState", caller: Any) -> None:
    for type_name, model in sorted(state.types.items()):
        _publish_route(app, state, caller, type_name, model)
    known = sorted(n for n in state.types if "." not in n)

    @app.post("/v1/artifacts/{type_name}", include_in_schema=False)
    async def unknown_type(type_name: str, who: caller) -> None:
        from flock_cli.errors import did_you_mean

        raise Problem(
            404,
            f"the recipe has no type {type_name!r}.{did_you_mean(type_name, known)}"
            f" Its types: {', '.join(known)}",
        )


def _publish_route(
    app: FastAPI, state: "ServiceState", caller: Any, type_name: str, model: "type[BaseModel]"
) -> None:
    body_model = publish_body(type_name, model)

    async def mark_type(request: Request) -> None:
        request.scope["flock_type"] = type_name  # names the type in a 422 answer

    async def publish(
        response: Response,
        who: caller,
        body: body_model,  # type: ignore[valid-type]
        idempotency_key: Annotated[
            str | None,
            Header(
                description="Retrying with the same key returns the first artifact instead of a second one."
            ),
        ] = None,
    ) -> ArtifactOut:
        artifact, new = await publishing.publish(state, who, type_name, body, idempotency_key)
        response.status_code = 201 if new else 200
        if not new:
            response.headers["Idempotent-Replayed"] = "true"
        response.headers["Location"] = f"/v1/artifacts/{artifact.id}"
        return ArtifactOut.of(artifact)

    app.post(
        f"/v1/artifacts/{type_name}",
        response_model=ArtifactOut,
        status_code=201,
        operation_id=f"publish_{type_name}",
        summary=f"Publish a {type_name}",
        tags=["publish"],
        dependencies=[Depends(mark_type)],
        responses={
            **_ERRORS,
            200: {"description": "published before with this Idempotency-Key: the first artifact"},
            403: {"description": "the token may not publish this type", **_PROBLEM},
            409: {"description": "the Idempotency-Key was used for other content", **_PROBLEM},
            413: {"description": "the body is too large", **_PROBLEM},
            422: {"description": "the payload is invalid: every field error", **_PROBLEM},
            503: {"description": "the service is shutting down", **_PROBLEM},
        },
    )(publish)


def _read_routes(app: FastAPI, state: "ServiceState", caller: Any) -> None:
    store = state.store

    @app.get(
        "/v1/artifacts",
        response_model=ArtifactPage,
        operation_id="list_artifacts",
        tags=["read"],
        responses=_ERRORS,
    )
    async def list_artifacts(
        who: caller,
        type: Annotated[list[str] | None, Query(description="only these types")] = None,
        produced_by: Annotated[list[str] | None, Query(description="only from these producers")] = None,
        correlation_id: Annotated[UUID | None, Query()] = None,
        tag: Annotated[list[str] | None, Query(description="only artifacts with every tag")] = None,
        since: Annotated[datetime | None, Query(description="created at or after")] = None,
        until: Annotated[datetime | None, Query(description="created before")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
        order: Annotated[str, Query(pattern="^(newest|oldest)$")] = "newest",
    ) -> ArtifactPage:
        """Artifacts the token may see, newest first (``order=oldest`` for the other way), with the
        total of matches."""
        query = ArtifactQuery(
            types=frozenset(type) if type else None,
            produced_by=frozenset(produced_by) if produced_by else None,
            correlation_id=correlation_id,
            tags=frozenset(tag) if tag else None,
            since=since,
            until=until,
            limit=limit,
            offset=offset,
            newest_first=order == "newest",
        )
        page = await store.query(query, viewer=who.identity)
        return ArtifactPage(
            items=[ArtifactOut.of(a) for a in page.items], total=page.total, limit=limit, offset=offset
        )

    @app.get("/v1/whoami", operation_id="whoami", tags=["read"], responses=_ERRORS)
    async def whoami(who: caller) -> dict[str, Any]:
        """The identity the token stands for: what it reads as, what it may publish."""
        identity = who.identity
        return {
            "name": identity.name,
            "tenant": identity.tenant_id,
            "labels": sorted(identity.labels),
            "publish": None if who.may_publish is None else sorted(who.may_publish),
            "operator": who.operator,
        }

    not_found: dict[int | str, dict[str, Any]] = {
        404: {"description": "no such artifact, or the token may not see it", **_PROBLEM}
    }

    @app.get(
        "/v1/artifacts/{artifact_id}",
        response_model=ArtifactOut,
        operation_id="get_artifact",
        tags=["read"],
        responses={**_ERRORS, **not_found},
    )
    async def get_artifact(artifact_id: UUID, who: caller) -> ArtifactOut:
        """One artifact (404 when it does not exist or the token may not see it: the same answer)."""
        found = await store.get_many([artifact_id], viewer=who.identity)
        if not found:
            raise Problem(404, f"no artifact {artifact_id} that this token may see")
        return ArtifactOut.of(found[0])

    @app.get(
        "/v1/artifacts/{artifact_id}/lineage",
        response_model=LineageOut,
        operation_id="get_lineage",
        tags=["read"],
        responses={**_ERRORS, **not_found},
    )
    async def lineage(artifact_id: UUID, who: caller) -> LineageOut:
        """What the artifact came from and what came of it, as far as the token may see."""
        if not await store.get_many([artifact_id], viewer=who.identity):
            raise Problem(404, f"no artifact {artifact_id} that this token may see")
        found = await store.lineage(artifact_id, viewer=who.identity)
        return LineageOut(artifact_id=artifact_id, parents=found.parents, children=found.children)

    @app.get(
        "/v1/events",
        operation_id="follow_events",
        tags=["read"],
        responses={
            **_ERRORS,
            200: {"description": "server-sent events", "content": {"text/event-stream": {}}},
        },
        response_class=StreamingResponse,
    )
    async def events(
        who: caller,
        correlation_id: Annotated[
            UUID | None, Query(description="only this workflow (from its start)")
        ] = None,
        type: Annotated[list[str] | None, Query(description="only artifacts of these types")] = None,
        after: Annotated[int | None, Query(ge=0, description="start after this board position")] = None,
        last_event_id: Annotated[str | None, Header(description="resume after this event")] = None,
    ) -> StreamingResponse:
        """Server-sent events: ``artifact.published``, ``run.started``, ``run.finished``,
        ``run.failed``, ``run.retry``, ``dead_letter`` and ``model.text``, as the token may see them."""
        stream = event_stream(
            store=store,
            tail=state.tail,
            hub=state.hub,
            notifier=state.notifier,
            viewer=who.identity,
            wanted=EventFilter(correlation_id, frozenset(type or ())),
            last_event_id=last_event_id,
            after=after,
            closing=state.closing,
            now=store.clock.now,
        )
        return StreamingResponse(
            stream,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )


def _ops_routes(app: FastAPI, state: "ServiceState", caller: Any) -> None:
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
        shown = []
        for letter in letters:
            if not who.operator:
                seen = await store.get_many(list(letter.artifact_ids), viewer=who.identity)
                if len(seen) != len(set(letter.artifact_ids)):
                    continue
            shown.append(DeadLetterOut.model_validate(letter.model_dump(mode="json")))
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

    @app.get("/v1/runs", operation_id="list_runs", tags=["operate"], responses={**_ERRORS, **forbidden})
    async def runs(
        who: caller,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
    ) -> list[dict[str, Any]]:
        """Traced runs, newest first, as ``flock trace list --json`` gives them."""
        operator(who)
        return await asyncio.to_thread(_run_list, state, limit)

    @app.get(
        "/v1/runs/{run}",
        operation_id="get_run",
        tags=["operate"],
        responses={**_ERRORS, **forbidden, 404: {"description": "no such run", **_PROBLEM}},
    )
    async def run(run: str, who: caller) -> dict[str, Any]:
        """One run as a tree, as ``flock trace show --json`` gives it."""
        operator(who)
        return await asyncio.to_thread(_run_tree, state, run)


def _health_routes(app: FastAPI, state: "ServiceState") -> None:
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


def _openapi(app: FastAPI) -> None:
    """Add the problem document's schema to the OpenAPI document."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = {
            "type": "object",
            "title": "Problem",
            "description": "An error (RFC 9457 problem details).",
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "errors": {"type": "array", "items": {"type": "object"}},
            },
            "required": ["type", "title", "status", "detail"],
        }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _run_list(state: "ServiceState", limit: int) -> list[dict[str, Any]]:
    from flock_cli.tracing.board_runs import board_runs
    from flock_cli.tracing.reader import TraceReader

    if not state.traces:
        raise Problem(404, "tracing is off in this service: no runs to show")
    return [run.to_json() for run in board_runs(TraceReader(state.traces), limit=limit)]


def _run_tree(state: "ServiceState", ref: str) -> dict[str, Any]:
    from flock_cli.tracing.analysis import build_tree
    from flock_cli.tracing.board_runs import agents_now, board_run, process_labels
    from flock_cli.tracing.reader import TraceReader

    if not state.traces:
        raise Problem(404, "tracing is off in this service: no runs to show")
    reader = TraceReader(state.traces)
    try:
        with reader.session():
            row = board_run(reader, ref)
            ids = row.scope
            spans = reader.spans(ids)
            roots, orphans = build_tree(reader.artifacts(ids), spans, reader.events(ids), process_labels(row))
            in_progress = {a: int(v["running"]) for a, v in agents_now(reader, row).items() if v["running"]}
    except UserError as exc:
        raise Problem(404, str(exc)) from None
    return {
        "run": row.to_json(),
        "tree": [r.to_json() for r in roots],
        "outside": [o.to_json() for o in orphans],
        "in_progress": in_progress,
    }
