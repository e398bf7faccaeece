"""The read-only board view handed to engines and components as ``ctx.board``."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import TypeVar
from uuid import UUID

from pydantic import BaseModel

from flock_cli.clock import Clock
from flock_cli.core.artifact import Artifact
from flock_cli.core.visibility import AgentIdentity
from flock_cli.store.contract import ArtifactQuery, BlackboardStore, Page

__all__ = ["BoardView"]

M = TypeVar("M", bound=BaseModel)


class BoardView:
    """Reads the blackboard as one identity: artifacts it may not see are never returned."""

    def __init__(self, store: BlackboardStore, identity: AgentIdentity, clock: Clock) -> None:
        self._store = store
        self._identity = identity
        self._clock = clock

    @property
    def identity(self) -> AgentIdentity:
        """Whose eyes this view reads with."""
        return self._identity

    async def get(self, artifact_id: UUID) -> Artifact | None:
        """One artifact, if visible."""
        return await self._store.get(artifact_id, viewer=self._identity, now=self._clock.now())

    async def get_many(self, artifact_ids: Sequence[UUID]) -> list[Artifact]:
        """The visible ones among ``artifact_ids``."""
        return await self._store.get_many(artifact_ids, viewer=self._identity, now=self._clock.now())

    async def query(self, query: ArtifactQuery | None = None) -> Page:
        """Visible artifacts matching ``query``."""
        return await self._store.query(query, viewer=self._identity, now=self._clock.now())

    async def list(self) -> list[Artifact]:
        """Every visible artifact."""
        return (await self.query()).items

    async def get_by_type(self, model: type[M]) -> builtins.list[M]:
        """Visible artifacts of ``model``'s type, typed."""
        return await self._store.get_by_type(model, viewer=self._identity, now=self._clock.now())
