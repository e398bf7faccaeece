"""The request and response bodies of the HTTP service (its OpenAPI document's schemas)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, create_model

__all__ = [
    "AgentOut",
    "ArtifactOut",
    "ArtifactPage",
    "DeadLetterOut",
    "LineageOut",
    "publish_body",
    "typed_artifact",
]


class ArtifactOut(BaseModel):
    """An artifact as the service shows it."""

    id: UUID
    type: str
    payload: dict[str, Any]
    produced_by: str
    correlation_id: UUID | None
    partition_key: str | None
    tags: list[str]
    visibility: dict[str, Any]
    created_at: datetime
    version: int
    trace_context: str | None = None
    """The W3C traceparent of the span that published it (its workflow's trace)."""

    @classmethod
    def of(cls, artifact: Any) -> ArtifactOut:
        """The view of a stored artifact."""
        data = artifact.model_dump(mode="json")
        data["tags"] = sorted(data["tags"])
        return cls.model_validate(data)


def typed_artifact(type_name: str, model: type[BaseModel]) -> type[ArtifactOut]:
    """``ArtifactOut`` with the payload of ``type_name`` (what its publish route answers)."""
    typed: type[ArtifactOut] = create_model(
        f"{type_name}Artifact",
        __base__=ArtifactOut,
        __doc__=f"A stored artifact of type {type_name}.",
        payload=(model, ...),
    )
    return typed


class ArtifactPage(BaseModel):
    """One page of artifacts and how many match in all (of those the caller may see)."""

    items: list[ArtifactOut]
    total: int
    limit: int
    offset: int


class LineageOut(BaseModel):
    """What an artifact came from and what came of it (as far as the caller may see)."""

    artifact_id: UUID
    parents: list[UUID]
    children: list[UUID]


class AgentOut(BaseModel):
    """An agent: what it consumes and publishes, its runs now and so far, its budget."""

    name: str
    description: str
    consumes: list[str]
    publishes: list[str]
    running: int
    queued: int
    runs: int
    usage: dict[str, Any]
    budget: dict[str, Any] | None


class DeadLetterOut(BaseModel):
    """A run that failed for good, or was held."""

    id: UUID
    agent: str
    artifact_ids: list[UUID]
    reason: str
    error_type: str | None
    error: str | None
    stage: str | None
    attempts: int
    created_at: datetime


_NAME = r"[A-Za-z0-9_.-]{1,64}"
Tag = Annotated[str, Field(min_length=1, max_length=128)]


def visibility_pattern(agents: list[str]) -> str:
    """The pattern of the ``visibility`` field: the rules ``flock publish --visibility`` takes,
    with the recipe's agents for ``private`` and embargoes of 1 to 999 seconds, minutes, hours or
    days (so that a value the schema allows is one the service accepts)."""
    names = "|".join(re.escape(a) for a in sorted(agents))
    private = f"|private:({names})(,({names}))*" if names else ""  # no agents: no private rule
    return f"^(public{private}|labelled:{_NAME}(,{_NAME})*|tenant:{_NAME}|after:[1-9][0-9]{{0,2}}(s|m|h|d)?)$"


def publish_body(type_name: str, model: type[BaseModel], agents: list[str]) -> type[BaseModel]:
    """The body of ``POST /v1/types/{type_name}/artifacts``: the typed payload and its envelope."""
    body: type[BaseModel] = create_model(
        f"Publish{type_name}",
        __config__=ConfigDict(extra="forbid"),
        __doc__=f"An artifact of type {type_name} to publish.",
        payload=(model, ...),
        correlation_id=(
            UUID | None,
            Field(default=None, description="the workflow to join (default: a new one)"),
        ),
        partition_key=(str | None, Field(default=None, min_length=1, max_length=256)),
        tags=(list[Tag], Field(default_factory=list, max_length=64)),
        visibility=(
            str | None,
            Field(
                default=None,
                pattern=visibility_pattern(agents),
                description="public, private:AGENT[,AGENT], labelled:LABEL[,LABEL], tenant:ID or"
                " after:DURATION (default: tenant:<the token's tenant> for a token with a tenant,"
                " else public)",
            ),
        ),
    )
    return body
