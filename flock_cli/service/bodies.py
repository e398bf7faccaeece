"""Request bodies and parameters of the service, validated as its OpenAPI document says."""

# No ``from __future__ import annotations``: FastAPI reads these annotations at run time.
import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BaseModel, BeforeValidator, StringConstraints, ValidationError

from flock_cli.limits import MAX_PAYLOAD_DEPTH, DuplicateKey, check_values, unique_keys
from flock_cli.service.problems import Problem

__all__ = ["IdempotencyKey", "Instant", "Name", "strict_body"]


def _iso_only(value: Any) -> Any:
    """Refuse a number where a time is asked (Pydantic would read it as Unix seconds)."""
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.match(value)):
        raise ValueError("a time is written in ISO 8601, e.g. 2026-12-04T09:30:00Z")
    return value


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


_NUMBER = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")
Instant = Annotated[datetime, BeforeValidator(_iso_only), AfterValidator(_utc)]
"""A time of a query: ISO 8601 (UTC when it names no offset), never a number."""
Name = Annotated[str, StringConstraints(min_length=1, max_length=256)]
"""A type, producer or tag of a filter."""
IdempotencyKey = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")]
"""1 to 255 visible ASCII characters (what an HTTP header carries unchanged)."""


async def strict_body(request: Request, body_model: type[BaseModel], agents: list[str]) -> BaseModel:
    """The request's JSON body validated strictly against ``body_model``: the service accepts
    what its OpenAPI document says and nothing looser (no ``0`` for ``false``, no ``"3"`` for 3)."""
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if kind != "application/json" and not kind.endswith("+json"):
        raise Problem(415, f"send the body as application/json, not {kind or 'nothing'}")
    raw = await request.body()
    # JSON Schema counts 3.0 as an integer and Pydantic's strict mode does not: the one
    # difference between the two, settled before validating. (Not JSON: Pydantic names the
    # error below.) What JSON cannot hold is refused here, with where it is: NaN and Infinity
    # (not JSON, though Python's parser and Pydantic's read them), a number too large for a float
    # (1e999 reads as infinity) and lone surrogates; and a key written twice. An ``any`` field
    # would otherwise take them and the board store them changed, as null or as text that cannot
    # be written (or, for a key written twice, keep one of the two unsaid).
    too_deep = Problem(422, f"the body nests objects and lists deeper than {MAX_PAYLOAD_DEPTH} levels")
    try:
        try:
            data = json.loads(raw, parse_constant=_no_constant, object_pairs_hook=unique_keys)
        except (_NotJson, DuplicateKey) as exc:
            raise _refused((), str(exc)) from None
        except ValueError:
            pass  # not JSON at all: Pydantic says where
        else:
            problem = check_values(data, max_depth=MAX_PAYLOAD_DEPTH + 2)  # the envelope's two levels
            if problem is not None:
                if "deep" in problem.message:
                    raise too_deep
                raise _refused(problem.path, problem.message)
            raw = json.dumps(_integral(data)).encode()
        return body_model.model_validate_json(raw, strict=True)
    except RecursionError:
        raise too_deep from None
    except ValidationError as exc:
        errors = [
            {**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False, include_context=False)
        ]
        raise RequestValidationError([_plain(e, agents) for e in errors]) from None


def _plain(error: dict[str, Any], agents: list[str]) -> dict[str, Any]:
    """A visibility that does not match its pattern, told as ``flock publish --visibility`` tells it."""
    if error["loc"] != ("body", "visibility") or error.get("type") != "string_pattern_mismatch":
        return error
    from flock_cli.errors import UserError
    from flock_cli.recipe.visibility_text import parse_visibility  # the recipe layer: only when needed

    try:
        parse_visibility(str(error.get("input")), agents=agents, label="visibility")
    except UserError as exc:
        return {**error, "msg": str(exc)}
    return {**error, "msg": "an embargo here lasts 1 to 999 s, m, h or d (after:30m)"}


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral(v) for v in value]
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    return value


class _NotJson(ValueError):
    """A constant Python's JSON parser would accept (NaN, Infinity, -Infinity)."""


def _no_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON number (JSON has no NaN or infinity)")


def _refused(path: tuple[str | int, ...], message: str) -> RequestValidationError:
    """A 422 with the shape of the service's other validation errors (``detail[].loc``)."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("body", *path), "msg": message, "input": None}]
    )
