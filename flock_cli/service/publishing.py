"""Publishing over HTTP: rights, visibility, backpressure and idempotency keys."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid5

from flock_cli.errors import FlockClosedError, UserError
from flock_cli.recipe.visibility_text import parse_visibility
from flock_cli.service.problems import Problem
from flock_cli.store.contract import UNRESTRICTED

if TYPE_CHECKING:
    from pydantic import BaseModel

    from flock_cli.core.artifact import Artifact
    from flock_cli.core.visibility import Visibility
    from flock_cli.service.state import ServiceState
    from flock_cli.service.tokens import Principal

__all__ = ["check_rights", "publish"]

log = logging.getLogger("flock_cli.service")

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
    is new (False: an earlier publish with the same key). The caller checks the rights first
    (:func:`check_rights`, before it reads the body)."""
    fields: dict[str, Any] = dict(body)
    payload = fields["payload"].model_dump(mode="json")
    visibility = _visibility(state, principal, fields.get("visibility"))
    asked = _Asked(type_name, payload, fields, visibility)
    artifact_id = None
    if idempotency_key is not None:
        if not 0 < len(idempotency_key) <= MAX_KEY:
            raise Problem(400, f"an Idempotency-Key has 1 to {MAX_KEY} characters")
        artifact_id = key_id(principal, idempotency_key)
        earlier = await _earlier(state, artifact_id, asked)
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
    except FlockClosedError:
        raise Problem(503, "the service is shutting down", headers={"Retry-After": "1"}) from None
    except UserError as exc:
        raise Problem(422, str(exc), type_name=type_name) from None
    except Exception as exc:
        if artifact_id is not None:
            # The same key published at the same moment (through this replica or another): the
            # board's unique id let one artifact in, and that one is the answer.
            earlier = await _earlier(state, artifact_id, asked)
            if earlier is not None:
                log.info(
                    "flock serve: %s was published concurrently (%s); answering with it", earlier.id, exc
                )
                return earlier, False
        raise
    state.tail.wake()
    return artifact, True


def check_rights(state: ServiceState, principal: Principal, type_name: str) -> None:
    """503 while stopping, 403 for a type the token may not publish."""
    state.check_accepting()
    if not principal.can_publish(type_name):
        raise Problem(403, f"the token {principal.name!r} may not publish {type_name}")


def _visibility(state: ServiceState, principal: Principal, text: str | None) -> Visibility | None:
    tenant = principal.identity.tenant_id
    if text is None:
        return None if tenant is None else parse_visibility(f"tenant:{tenant}", agents=[])
    try:
        rule = parse_visibility(text, agents=[a.name for a in state.flock.agents], label="visibility")
    except UserError as exc:
        raise Problem(
            422,
            str(exc),
            errors=[{"loc": ["body", "visibility"], "msg": str(exc), "type": "value_error"}],
        ) from None
    if tenant is not None and text.strip() != f"tenant:{tenant}":
        # A tenant's token writes into its own tenant only: anything else would put its data in
        # front of other tenants (or into another tenant's workflows).
        raise Problem(
            403,
            f"the token {principal.name!r} of tenant {tenant!r} publishes with visibility"
            f" tenant:{tenant} only",
        )
    return rule


@dataclass(frozen=True)
class _Asked:
    """What a publish asked for, to compare with an earlier artifact of the same key."""

    type_name: str
    payload: dict[str, Any]
    fields: dict[str, Any]
    visibility: Visibility | None

    def differs_from(self, earlier: Artifact) -> str | None:
        """The first field in which ``earlier`` is not what was asked, or None."""
        fields = self.fields
        if earlier.type != self.type_name:
            return "type"
        if _canonical(earlier.model_dump(mode="json")["payload"]) != _canonical(self.payload):
            return "payload"
        if earlier.tags != frozenset(fields.get("tags") or ()):
            return "tags"
        if earlier.partition_key != fields.get("partition_key"):
            return "partition_key"
        if fields.get("correlation_id") is not None and earlier.correlation_id != fields["correlation_id"]:
            return "correlation_id"
        kind = self.visibility.kind if self.visibility is not None else "Public"
        if earlier.visibility.kind != kind or (
            kind != "After" and self.visibility is not None and earlier.visibility != self.visibility
        ):
            return "visibility"
        return None


async def _earlier(state: ServiceState, artifact_id: UUID, asked: _Asked) -> Artifact | None:
    found = await state.store.get_many([artifact_id], viewer=UNRESTRICTED)
    if not found:
        return None
    earlier = found[0]
    different = asked.differs_from(earlier)
    if different is not None:
        raise Problem(
            409,
            f"this Idempotency-Key was used for a publish with another {different};"
            " use a new key for new content",
            artifact_id=str(artifact_id),
        )
    return earlier


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
