"""Publishing over HTTP: rights, visibility, backpressure and idempotency keys."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid5

from flock_cli.errors import UserError
from flock_cli.recipe.visibility_text import parse_visibility
from flock_cli.service.problems import Problem
from flock_cli.store.contract import UNRESTRICTED

if TYPE_CHECKING:
    from pydantic import BaseModel

    from flock_cli.core.artifact import Artifact
    from flock_cli.core.visibility import Visibility
    from flock_cli.service.state import ServiceState
    from flock_cli.service.tokens import Principal

__all__ = ["publish"]

_KEYS = UUID("6f0c1e52-5f0e-4b8e-9a57-4f9d1d6c0b11")
"""Namespace of the artifact ids derived from idempotency keys."""

MAX_KEY = 255


def key_id(principal: Principal, key: str) -> UUID:
    """The artifact id an idempotency key of ``principal`` stands for (the same on every replica)."""
    return uuid5(_KEYS, f"{principal.name}\x00{key}")


async def publish(
    state: ServiceState,
    principal: Principal,
    type_name: str,
    body: BaseModel,
    idempotency_key: str | None,
) -> tuple[Artifact, bool]:
    """Publish ``body`` (a ``Publish<Type>``) as ``principal``; returns the artifact and whether it
    is new (False: an earlier publish with the same key)."""
    state.check_accepting()
    if not principal.can_publish(type_name):
        raise Problem(403, f"the token {principal.name!r} may not publish {type_name}")
    fields: dict[str, Any] = dict(body)
    payload = fields["payload"].model_dump(mode="json")
    visibility = _visibility(state, principal, fields.get("visibility"))
    artifact_id = None
    if idempotency_key is not None:
        if not 0 < len(idempotency_key) <= MAX_KEY:
            raise Problem(400, f"an Idempotency-Key has 1 to {MAX_KEY} characters")
        artifact_id = key_id(principal, idempotency_key)
        earlier = await _earlier(state, artifact_id, type_name, payload)
        if earlier is not None:
            return earlier, False
    state.check_room()
    try:
        artifact = await state.flock.publish_external(
            type_name,
            payload,
            visibility=visibility,
            correlation_id=fields.get("correlation_id"),
            partition_key=fields.get("partition_key"),
            tags=fields.get("tags") or None,
            produced_by=principal.name,
            artifact_id=artifact_id,
        )
    except UserError as exc:
        raise Problem(422, str(exc), type_name=type_name) from None
    except Exception:
        if artifact_id is not None:
            # The same key published at the same moment through another replica: its artifact won.
            earlier = await _earlier(state, artifact_id, type_name, payload)
            if earlier is not None:
                return earlier, False
        raise
    state.tail.wake()
    return artifact, True


def _visibility(state: ServiceState, principal: Principal, text: str | None) -> Visibility | None:
    if text is None:
        tenant = principal.identity.tenant_id
        return None if tenant is None else parse_visibility(f"tenant:{tenant}", agents=[])
    try:
        return parse_visibility(text, agents=[a.name for a in state.flock.agents], label="visibility")
    except UserError as exc:
        raise Problem(
            422,
            str(exc),
            errors=[{"loc": ["body", "visibility"], "msg": str(exc), "type": "value_error"}],
        ) from None


async def _earlier(
    state: ServiceState, artifact_id: UUID, type_name: str, payload: dict[str, Any]
) -> Artifact | None:
    found = await state.store.get_many([artifact_id], viewer=UNRESTRICTED)
    if not found:
        return None
    earlier = found[0]
    same = earlier.type == type_name and _canonical(earlier.model_dump(mode="json")["payload"]) == _canonical(
        payload
    )
    if not same:
        raise Problem(
            409,
            "this Idempotency-Key was used for a different publish; use a new key for new content",
            artifact_id=str(artifact_id),
        )
    return earlier


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
