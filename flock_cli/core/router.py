"""Matching: which subscriptions a new artifact wakes, and what runs that makes.

The router owns the type index (type name -> subscriptions, so matching never scans every agent),
the gates, joins and batchers. It decides synchronously and hands finished :class:`ReadyRun`
objects to the orchestrator, which stores and dispatches them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from flock_cli.core.agent import Agent
from flock_cli.core.artifact import Artifact
from flock_cli.core.gathering import Batcher, Gate, OpenGroup
from flock_cli.core.subscription import ReadyRun, Subscription
from flock_cli.core.summary import ExpiredGroup, PendingGroup, PredicateError, SummaryCollector
from flock_cli.core.visibility import AfterVisibility
from flock_cli.errors import InvalidDeclarationError
from flock_cli.store.records import BatchEntry, GateEntry, RoutingTx
from flock_cli.tracing.tracer import Tracer

__all__ = ["NO_KEY", "Router", "sub_key", "typed_loader"]


def sub_key(sub: Subscription) -> str:
    """The stable name of a subscription in the store: ``agent#index``."""
    return f"{sub.agent}#{sub.index}"


class Router:
    """Index of subscriptions plus the gathering state of every gated or batched subscription."""

    def __init__(self, agents: dict[str, Agent], collector: SummaryCollector, tracer: Tracer) -> None:
        self._agents = agents
        self._collector = collector
        self._tracer = tracer
        self._by_type: dict[str, list[Subscription]] = {}
        self._group_members: dict[str, dict[str, Subscription]] = {}
        self.gates: dict[Subscription, Gate] = {}
        self.batchers: dict[Subscription, Batcher] = {}

    # -- declaration -----------------------------------------------------------------------------

    def add(self, sub: Subscription) -> None:
        """Index a new subscription; checks exclusive groups shared by several agents."""
        if sub.group is not None:
            members = self._group_members.setdefault(sub.group, {})
            others = {name: s for name, s in members.items() if name != sub.agent}
            if others and (not sub.is_simple or any(not s.is_simple for s in others.values())):
                raise InvalidDeclarationError(
                    f"exclusive group '{sub.group}' is shared by {', '.join(sorted({*others, sub.agent}))}:"
                    " shared groups take single-type subscriptions without join or batch"
                )
            members.setdefault(sub.agent, sub)
        for name in set(sub.type_names):
            subs = self._by_type.setdefault(name, [])
            subs.append(sub)
            subs.sort(key=lambda s: -s.priority)  # higher priority claims first
        if sub.gathers:
            self.gates[sub] = Gate(sub)
        if sub.batch is not None:
            self.batchers[sub] = Batcher(sub)

    def subscriptions_for(self, type_name: str) -> list[Subscription]:
        """Subscriptions that consume ``type_name``, highest priority first."""
        return self._by_type.get(type_name, [])

    def group_members(self, group: str) -> dict[str, Subscription]:
        """The agents of an exclusive group and their subscriptions."""
        return dict(self._group_members.get(group, {}))

    def shared_groups(self) -> list[str]:
        """The exclusive groups several agents share (their deliveries queue as ``group:NAME``)."""
        return sorted(name for name, members in self._group_members.items() if len(members) > 1)

    def holds_state(self) -> bool:
        """Whether any gate or batch holds something."""
        return any(g.groups for g in self.gates.values()) or any(b.units for b in self.batchers.values())

    def claim_key(self, sub: Subscription) -> str:
        """What an artifact is claimed under: the agent, or a group several agents share."""
        if sub.group is not None and len(self._group_members.get(sub.group, ())) > 1:
            return f"group:{sub.group}"
        return sub.agent

    # -- matching --------------------------------------------------------------------------------

    def screen(
        self, artifact: Artifact, sub: Subscription, typed: Callable[[], BaseModel], now: datetime
    ) -> str | None:
        """Why ``sub`` does not take ``artifact`` ("self", "from_agents", "channels", "where",
        "predicate_error"), or None when it does. Visibility is checked by the caller."""
        reason, error = self._rejection(artifact, sub, typed)
        if error is not None:  # a failing predicate means "no match", and is recorded
            self._predicate_error(sub, artifact, error)
        return reason

    def _rejection(
        self, artifact: Artifact, sub: Subscription, typed: Callable[[], BaseModel]
    ) -> tuple[str | None, Exception | None]:
        agent = self._agents[sub.agent]
        if agent.prevent_self_trigger and artifact.produced_by == agent.name:
            return "self", None
        reason = sub.header_rejection(artifact)
        if reason is not None:
            return reason, None
        if sub.where:
            try:
                model = typed()
                for predicate in sub.where:
                    if not predicate(model):
                        return "where", None
            except Exception as exc:
                return "predicate_error", exc
        return None, None

    def eligible(
        self, artifacts: Sequence[Artifact], members: dict[str, Subscription], now: datetime
    ) -> dict[str, Subscription]:
        """The agents among ``members`` that may take a stored delivery of ``artifacts`` (after a
        restart, or a dead letter offered again): each must see every artifact now, and a member
        of an exclusive group must accept the artifact as routing would have (``where``, producer,
        channels). Nothing is recorded: this repeats a decision routing already reported."""
        chosen: dict[str, Subscription] = {}
        for name, sub in members.items():
            identity = self._agents[name].identity
            if not all(a.visibility.allows(identity, now=now) for a in artifacts):
                continue
            if len(members) > 1 and any(
                self._rejection(a, sub, typed_loader(a, sub.models[a.type]))[0] is not None for a in artifacts
            ):
                continue
            chosen[name] = sub
        return chosen

    @staticmethod
    def embargo_lift(artifact: Artifact, agent: Agent, now: datetime) -> datetime | None:
        """When an embargoed artifact becomes visible to ``agent``, or None if it never will."""
        vis = artifact.visibility
        if not isinstance(vis, AfterVisibility):
            return None
        lifts = vis.lifts_at(now)
        if lifts <= now:
            return None
        if vis.then is not None and not vis.then.allows(agent.identity, now=lifts):
            return None
        return lifts

    def gather(
        self,
        artifact: Artifact,
        sub: Subscription,
        typed: Callable[[], BaseModel],
        now: datetime,
        tx: RoutingTx,
    ) -> tuple[list[ReadyRun], list[tuple[Gate, OpenGroup]], list[tuple[Batcher, int]]]:
        """Feed an accepted artifact to the subscription's gate and batcher, recording in ``tx``
        what the store must remember (gate and batch entries).

        Returns the runs ready now, the join groups that opened (they need a window timer) and the
        batches that started (they need a ``within`` timer).
        """
        key_of_sub = sub_key(sub)
        unit: list[Artifact] | None = [artifact]
        opened: list[tuple[Gate, OpenGroup]] = []
        started: list[tuple[Batcher, int]] = []
        gate = self.gates.get(sub)
        if gate is not None:
            key = self.join_key(artifact, sub, typed)
            if key is NO_KEY:
                return [], [], []
            unit, new_group = gate.add(artifact, key, now)
            tx.gate_adds.append(GateEntry(sub_key=key_of_sub, artifact_id=artifact.id, arrived_at=now))
            if unit is not None:
                tx.gate_removes.extend((key_of_sub, a.id) for a in unit)
            if new_group is not None and sub.join is not None and sub.join.window is not None:
                opened.append((gate, new_group))
            for group in gate.expire_by_count():
                self.record_expired(sub, group, "count_window", tx)
        if unit is None:
            return [], opened, started
        groups = [unit] if gate is not None else []
        batcher = self.batchers.get(sub)
        if batcher is None:
            return [ReadyRun(sub, unit, groups)], opened, started
        full, new_batch = batcher.add(unit)
        if new_batch and full is None and sub.batch is not None and sub.batch.within is not None:
            started.append((batcher, batcher.generation))
        if full is None:
            tx.batch_adds.append(
                BatchEntry(sub_key=key_of_sub, artifact_ids=tuple(a.id for a in unit), arrived_at=now)
            )
            return [], opened, started
        return [self.batch_run(batcher, full, "size", tx)], opened, started

    def batch_run(
        self, batcher: Batcher, units: list[list[Artifact]], trigger: str, tx: RoutingTx
    ) -> ReadyRun:
        """One run for a flushed batch (the store forgets the batch's entries in ``tx``)."""
        sub = batcher.sub
        tx.batch_clears.append(sub_key(sub))
        groups = units if sub.gathers else []
        return ReadyRun(sub, [a for u in units for a in u], groups, batch_trigger=trigger)

    def flush_all(self, trigger: str, tx: RoutingTx) -> list[ReadyRun]:
        """Flush every partial batch (at idle and at shutdown)."""
        return [self.batch_run(b, b.take(), trigger, tx) for b in self.batchers.values() if b.units]

    def join_key(self, artifact: Artifact, sub: Subscription, typed: Callable[[], BaseModel]) -> Any:
        """The group key of ``artifact`` in ``sub``'s gate (NO_KEY when it has none).

        A gate never mixes workflows unless asked to: without a join, or with ``by`` unset, the
        key is the artifact's correlation id; ``by="arrival"`` puts every artifact in one group
        (first in, first out); a function of the payload gives any other key.
        """
        by = sub.join.by if sub.join is not None else None
        if by == "arrival":
            return None
        if by is None or by == "correlation_id":
            if artifact.correlation_id is None:
                self._collector.filtered["no_correlation_id"] += 1
                self._tracer.event(
                    "subscription.filtered",
                    agent=sub.agent,
                    artifact_id=artifact.id,
                    reason="no_correlation_id",
                )
                return NO_KEY
            return artifact.correlation_id
        try:
            key: Hashable = by(typed())
            hash(key)
        except Exception as exc:
            self._predicate_error(sub, artifact, exc, what="join key: ")
            return NO_KEY
        return key

    def _predicate_error(self, sub: Subscription, artifact: Artifact, exc: Exception, what: str = "") -> None:
        self._tracer.event(
            "predicate.error",
            agent=sub.agent,
            artifact_id=artifact.id,
            error=f"{what}{type(exc).__name__}: {exc}",
        )
        self._collector.predicate_errors.append(
            PredicateError(
                agent=sub.agent,
                subscription=sub.index,
                artifact_id=artifact.id,
                error=f"{what}{type(exc).__name__}: {exc}",
            )
        )

    def record_expired(self, sub: Subscription, group: OpenGroup, reason: str, tx: RoutingTx) -> None:
        """Report an expired join group in the summary; the store forgets its entries in ``tx``."""
        tx.gate_removes.extend((sub_key(sub), a.id) for a in group.artifacts())
        members = group.artifacts()
        artifact_ids = [str(a.id) for a in members]
        self._tracer.event(
            "join.expired", agent=sub.agent, artifact_id=members[0].id if members else None,
            reason=reason, key=str(group.key), artifacts=artifact_ids, missing=group.missing(sub),
        )  # fmt: skip
        self._collector.expired.append(
            ExpiredGroup(
                agent=sub.agent,
                subscription=sub.index,
                key=str(group.key),
                reason=reason,
                artifact_ids=[a.id for a in group.artifacts()],
                present=sorted({a.type for a in group.artifacts()}),
                missing=group.missing(sub),
            )
        )

    def pending(self) -> list[PendingGroup]:
        """Every gate or join group still waiting."""
        return [
            PendingGroup(
                agent=sub.agent,
                subscription=sub.index,
                key=None if group.key is None else str(group.key),
                artifact_ids=[a.id for a in group.artifacts()],
                missing=group.missing(sub),
            )
            for sub, gate in self.gates.items()
            for group in gate.groups.values()
        ]


NO_KEY: Any = object()


def typed_loader(artifact: Artifact, model: type[BaseModel]) -> Callable[[], BaseModel]:
    """A memoised ``artifact.as_model(model)`` (predicates and join keys share one validation)."""
    cache: list[BaseModel] = []

    def load() -> BaseModel:
        if not cache:
            cache.append(model.model_validate(artifact.payload))
        return cache[0]

    return load
