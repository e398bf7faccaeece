"""The FastAPI application of ``flock serve``: routes, authentication and error answers.

Every route is a client of the same runtime as the CLI: publishing goes through
``Flock.publish_external`` and every read through the store with the caller's identity as the
viewer, so an HTTP reader is filtered (and its denials recorded) exactly as an agent is.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the routes' annotations, and
# those of the per-type publish routes are made at run time (each its own body model).
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from flock_cli.errors import UserError
from flock_cli.service import operations, publishing
from flock_cli.service.bodies import IdempotencyKey, Instant, Name, strict_body
from flock_cli.service.events import EventFilter, EventStream
from flock_cli.service.limits import BodyLimit
from flock_cli.service.problems import COMMON_ERRORS as _ERRORS
from flock_cli.service.problems import PROBLEM_RESPONSE as _PROBLEM
from flock_cli.service.problems import Problem, problem_response
from flock_cli.service.schemas import (
    ArtifactOut,
    ArtifactPage,
    LineageOut,
    publish_body,
    typed_artifact,
)
from flock_cli.service.tokens import Principal
from flock_cli.store.contract import UNRESTRICTED, ArtifactQuery

if TYPE_CHECKING:
    from pydantic import BaseModel

    from flock_cli.service.state import ServiceState

__all__ = ["build_app"]

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
    app.state.bodies = []  # the publish bodies, added to the OpenAPI document's schemas
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
    operations.routes(app, state, Caller)
    operations.health_routes(app, state)
    _openapi(app)
    return BodyLimit(app, state.config.max_body_bytes, _too_large)


def _too_large(limit: int) -> Any:
    if limit < 0:
        return problem_response(400, "the Content-Length header is not a length")
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
        in_payload = bool(errors) and all(e["loc"][:2] == ["body", "payload"] for e in errors)
        what = f"an invalid {type_name} payload" if type_name and in_payload else "an invalid request"
        detail = f"{what}: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        extra: dict[str, Any] = {"errors": errors}
        if type_name:
            extra["type_name"] = type_name
        title = "Invalid payload" if in_payload else "Invalid request"
        return problem_response(422, detail, title=title, **extra)

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

    @app.get("/v1/types", operation_id="list_types", tags=["publish"], responses=_ERRORS)
    async def types(who: caller) -> list[dict[str, Any]]:
        """The recipe's types with their JSON schemas, and whether this token may publish each."""
        return [
            {"name": name, "may_publish": who.can_publish(name), "schema": model.model_json_schema()}
            for name, model in sorted(state.types.items())
        ]

    @app.post("/v1/types/{type_name}/artifacts", include_in_schema=False)
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
    agents = [a.name for a in state.flock.agents]
    body_model = publish_body(type_name, model, agents)
    app.state.bodies.append(body_model)

    async def mark_type(request: Request) -> None:
        request.scope["flock_type"] = type_name  # names the type in a 422 answer

    async def publish(
        request: Request,
        response: Response,
        who: caller,
        idempotency_key: Annotated[
            IdempotencyKey | None,
            Header(
                description="Retrying with the same key returns the first artifact instead of a second one."
            ),
        ] = None,
    ) -> Any:
        publishing.check_rights(state, who, type_name)  # before the body: no schema for the unentitled
        body = await strict_body(request, body_model, agents)
        artifact, new = await publishing.publish(state, who, type_name, body, idempotency_key)
        response.status_code = 201 if new else 200
        if not new:
            response.headers["Idempotent-Replayed"] = "true"
        response.headers["Location"] = f"/v1/artifacts/{artifact.id}"
        return typed.of(artifact)

    typed = typed_artifact(type_name, model)
    app.post(
        f"/v1/types/{type_name}/artifacts",
        response_model=typed,
        status_code=201,
        operation_id=f"publish_{type_name}",
        summary=f"Publish a {type_name}",
        tags=["publish"],
        dependencies=[Depends(mark_type)],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{body_model.__name__}"}}
                },
            }
        },
        responses={
            **_ERRORS,
            200: {
                "description": "published before with this Idempotency-Key: the first artifact",
                "model": typed,
            },
            400: {"description": "a malformed request (a header HTTP does not allow)", **_PROBLEM},
            403: {"description": "the token may not publish this type", **_PROBLEM},
            409: {"description": "the Idempotency-Key was used for other content", **_PROBLEM},
            413: {"description": "the body is too large", **_PROBLEM},
            415: {"description": "the body is not JSON", **_PROBLEM},
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
        type: Annotated[list[Name] | None, Query(description="only these types")] = None,
        produced_by: Annotated[list[Name] | None, Query(description="only from these producers")] = None,
        correlation_id: Annotated[UUID | None, Query()] = None,
        tag: Annotated[list[Name] | None, Query(description="only artifacts with every tag")] = None,
        since: Annotated[Instant | None, Query(description="created at or after (ISO 8601)")] = None,
        until: Annotated[Instant | None, Query(description="created before (ISO 8601)")] = None,
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
            newest_first=order == "newest",
        )
        matches = (await store.query(query, viewer=UNRESTRICTED)).items
        shown = await state.access.readable(matches, who.identity, store.clock.now())
        items = [ArtifactOut.of(a) for a in shown[offset : offset + limit]]
        return ArtifactPage(items=items, total=len(shown), limit=limit, offset=offset)

    @app.get("/v1/whoami", operation_id="whoami", tags=["read"], responses=_ERRORS)
    async def whoami(who: caller) -> dict[str, Any]:
        """The identity the token stands for: what it reads as, what it may publish."""
        identity = who.identity
        return {
            "name": identity.name,
            "tenant": identity.tenant_id,
            "labels": sorted(identity.labels),
            "publish": "*" if who.may_publish is None else sorted(who.may_publish),
            "operator": who.operator,
        }

    async def _one(artifact_id: UUID, who: Principal) -> Any:
        """The artifact, or 404 when it does not exist or the token may not see it (one answer)."""
        found = await store.get_many([artifact_id], viewer=UNRESTRICTED)
        if not found or not await state.access.readable(found, who.identity, store.clock.now()):
            raise Problem(404, f"no artifact {artifact_id} that this token may see")
        return found[0]

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
        found = await _one(artifact_id, who)
        return ArtifactOut.of(found)

    @app.get(
        "/v1/artifacts/{artifact_id}/lineage",
        response_model=LineageOut,
        operation_id="get_lineage",
        tags=["read"],
        responses={**_ERRORS, **not_found},
    )
    async def lineage(artifact_id: UUID, who: caller) -> LineageOut:
        """What the artifact came from and what came of it, as far as the token may see."""
        await _one(artifact_id, who)
        full = await store.lineage(artifact_id, viewer=UNRESTRICTED)
        related = await store.get_many([*full.parents, *full.children], viewer=UNRESTRICTED)
        shown = {a.id for a in await state.access.readable(related, who.identity, store.clock.now())}
        return LineageOut(
            artifact_id=artifact_id,
            parents=[i for i in full.parents if i in shown],
            children=[i for i in full.children if i in shown],
        )

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
        type: Annotated[list[Name] | None, Query(description="only artifacts of these types")] = None,
        after: Annotated[int | None, Query(ge=0, description="start after this board position")] = None,
        last_event_id: Annotated[str | None, Header(description="resume after this event")] = None,
    ) -> StreamingResponse:
        """Server-sent events: ``artifact.published``, ``run.started``, ``run.finished``,
        ``run.failed``, ``run.retry``, ``dead_letter`` and ``model.text``, as the token may see them."""
        stream = EventStream(
            store=store,
            tail=state.tail,
            hub=state.hub,
            notifier=state.notifier,
            access=state.access,
            viewer=who.identity,
            operator=who.operator,
            wanted=EventFilter(correlation_id, frozenset(type or ())),
            last_event_id=last_event_id,
            after=after,
            closing=state.closing,
            now=store.clock.now,
        )
        release = state.take_stream_slot(who)  # 429 now, while an answer can still say so
        return _SlotResponse(
            release,
            stream.events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )


class _SlotResponse(StreamingResponse):
    """A streaming answer that gives its stream slot back however it ends (sent in full, cut
    off by the client, or never started)."""

    def __init__(self, release: Callable[[], None], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


def _openapi(app: FastAPI) -> None:
    """Add the problem document's schema to the OpenAPI document."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for methods in schema.get("paths", {}).values():
            for operation in methods.values():
                responses = operation.get("responses", {})
                if "422" in responses:  # FastAPI documents its own body; ours is a problem document
                    responses["422"] = {"description": "an invalid request: every field error", **_PROBLEM}
        for unused in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(unused, None)
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        for body in app.state.bodies:  # read from the raw body (strictly): not known to FastAPI
            found = body.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(found.pop("$defs", {}))
            schemas[body.__name__] = found
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
