"""What an HTTP caller may read: artifacts by visibility (refusals recorded once per caller and
artifact), and the text of runs (model text, errors) only when the caller could read what the
run publishes."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from flock_cli.store.contract import UNRESTRICTED, read_filter, visible

if TYPE_CHECKING:
    from flock_cli.core.artifact import Artifact
    from flock_cli.core.visibility import AgentIdentity, Visibility
    from flock_cli.store.contract import BlackboardStore
    from flock_cli.store.records import DeadLetter

__all__ = ["Access"]

REMEMBERED = 100_000
"""Refusals remembered as recorded (so a stream or a repeated list does not write the same
denial row again and again); the oldest are forgotten first."""


class Access:
    """Visibility checks of one service, over its board."""

    def __init__(self, store: BlackboardStore, outputs: dict[str, list[Visibility | None]]) -> None:
        self._store = store
        self._outputs = outputs  # agent -> the visibility of each declared output (None: public)
        self._recorded: OrderedDict[tuple[str, UUID], None] = OrderedDict()

    async def readable(
        self, artifacts: Iterable[Artifact], viewer: AgentIdentity, now: datetime
    ) -> list[Artifact]:
        """What ``viewer`` may read of ``artifacts``; a refusal is recorded for the audit the
        first time this service refuses that artifact to that caller."""
        shown, denied = read_filter(artifacts, viewer, now)
        fresh = []
        for denial in denied:
            key = (viewer.name, denial.artifact_id)
            if key in self._recorded:
                self._recorded.move_to_end(key)
                continue
            self._recorded[key] = None
            fresh.append(denial)
        while len(self._recorded) > REMEMBERED:
            self._recorded.popitem(last=False)
        if fresh:
            await self._store.record_denials(fresh)
        return shown

    async def shown_letters(
        self, letters: Iterable[DeadLetter], viewer: AgentIdentity, now: datetime
    ) -> list[tuple[DeadLetter, bool]]:
        """The dead letters whose artifacts ``viewer`` may all read, each with whether its error
        may be shown (an error can quote the agent's output: only to who may read that)."""
        shown = []
        for letter in letters:
            found = await self._store.get_many(list(letter.artifact_ids), viewer=UNRESTRICTED)
            seen = await self.readable(found, viewer, now)
            if seen and len(seen) == len(set(letter.artifact_ids)):
                shown.append((letter, self.may_read_output(letter.agent, viewer, now)))
        return shown

    def may_see_all(self, artifacts: Iterable[Artifact], viewer: AgentIdentity, now: datetime) -> bool:
        """Whether ``viewer`` may see every one of ``artifacts`` (nothing is recorded)."""
        return all(visible(a, viewer, now) for a in artifacts)

    def may_read_output(self, agent: str | None, viewer: AgentIdentity, now: datetime) -> bool:
        """Whether ``viewer`` may read what ``agent`` publishes: every declared output's
        visibility must allow it (model text and errors can quote the output)."""
        if agent is None or agent not in self._outputs:
            return False
        for rule in self._outputs[agent]:
            if rule is not None and not rule.allows(viewer, now=now):
                return False
        return True


def output_rules(agents: Iterable[Any]) -> dict[str, list[Visibility | None]]:
    """The declared output visibilities of each agent (``OutputDecl.visibility``)."""
    return {agent.name: [getattr(o, "visibility", None) for o in agent.outputs] for agent in agents}
