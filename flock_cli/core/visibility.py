"""Who may see an artifact.

Every artifact carries one :class:`Visibility`. The scheduler asks ``allows(identity, now=...)``
before it delivers an artifact to an agent, and every read path of a store asks it before it
returns an artifact. Five kinds exist; :class:`AfterVisibility` wraps another kind behind an
embargo, which is how kinds combine.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from flock_cli.core.options import Options

__all__ = [
    "AfterVisibility",
    "AgentIdentity",
    "LabelledVisibility",
    "PrivateVisibility",
    "PublicVisibility",
    "TenantVisibility",
    "Visibility",
    "VisibilitySpec",
    "only_for",
]


class AgentIdentity(Options):
    """The identity visibility rules are checked against: a name, RBAC labels and a tenant."""

    model_config = ConfigDict(frozen=True)

    name: str
    labels: frozenset[str] = frozenset()
    tenant_id: str | None = None


class Visibility(Options):
    """Base of the visibility kinds. Subclasses implement :meth:`allows`."""

    model_config = ConfigDict(frozen=True)

    kind: str

    def allows(self, identity: AgentIdentity, *, now: datetime | None = None) -> bool:
        """Whether ``identity`` may see an artifact with this visibility at time ``now``."""
        raise NotImplementedError

    def describe(self) -> str:
        """A short human-readable form, used in denial records."""
        return self.kind

    def bind(self, published_at: datetime) -> Visibility:
        """Return the visibility as stored on an artifact published at ``published_at``."""
        return self


class PublicVisibility(Visibility):
    """Everyone may see the artifact (the default)."""

    kind: Literal["Public"] = "Public"

    def allows(self, identity: AgentIdentity, *, now: datetime | None = None) -> bool:
        """Always true."""
        return True


class PrivateVisibility(Visibility):
    """Only the named agents may see the artifact."""

    kind: Literal["Private"] = "Private"
    agents: frozenset[str]

    def allows(self, identity: AgentIdentity, *, now: datetime | None = None) -> bool:
        """True when the identity's name is on the allow-list."""
        return identity.name in self.agents

    def describe(self) -> str:
        """``Private(a, b)``."""
        return f"Private({', '.join(sorted(self.agents))})"


class LabelledVisibility(Visibility):
    """Only identities holding every required label may see the artifact (RBAC)."""

    kind: Literal["Labelled"] = "Labelled"
    required_labels: frozenset[str]

    def allows(self, identity: AgentIdentity, *, now: datetime | None = None) -> bool:
        """True when the required labels are a subset of the identity's labels."""
        return self.required_labels <= identity.labels

    def describe(self) -> str:
        """``Labelled(x, y)``."""
        return f"Labelled({', '.join(sorted(self.required_labels))})"


class TenantVisibility(Visibility):
    """Only identities of one tenant may see the artifact."""

    kind: Literal["Tenant"] = "Tenant"
    tenant_id: str

    def allows(self, identity: AgentIdentity, *, now: datetime | None = None) -> bool:
        """True when the identity belongs to the tenant."""
        return identity.tenant_id == self.tenant_id

    def describe(self) -> str:
        """``Tenant(acme)``."""
        return f"Tenant({self.tenant_id})"


class AfterVisibility(Visibility):
    """Nobody may see the artifact until ``ttl`` after it was published; then ``then`` decides.

    ``then=None`` means public once the embargo lifts. The embargo starts when the artifact is
    published (``start`` is filled in then); an unpublished value counts from ``now``.
    """

    kind: Literal["After"] = "After"
    ttl: timedelta
    then: VisibilitySpec | None = None
    start: datetime | None = None

    def lifts_at(self, now: datetime | None = None) -> datetime:
        """When the embargo ends."""
        return (self.start or now or datetime.now(UTC)) + self.ttl

    def allows(self, identity: AgentIdentity, *, now: datetime | None = None) -> bool:
        """False during the embargo; afterwards whatever ``then`` says (public if None)."""
        now = now or datetime.now(UTC)
        if now < self.lifts_at(now):
            return False
        return self.then.allows(identity, now=now) if self.then is not None else True

    def bind(self, published_at: datetime) -> Visibility:
        """Start the embargo at the publish time (unless it was already started)."""
        if self.start is not None:
            return self
        return self.model_copy(update={"start": published_at})

    def describe(self) -> str:
        """``After(1 day, 0:00:00 then Public)``."""
        then = self.then.describe() if self.then is not None else "Public"
        return f"After({self.ttl} then {then})"


VisibilitySpec = Annotated[
    PublicVisibility | PrivateVisibility | LabelledVisibility | TenantVisibility | AfterVisibility,
    Field(discriminator="kind"),
]
"""Any one of the five visibility kinds, discriminated by ``kind`` (for serialisation)."""

AfterVisibility.model_rebuild()


def only_for(*agent_names: str) -> PrivateVisibility:
    """Sugar for ``PrivateVisibility(agents={...})``."""
    return PrivateVisibility(agents=frozenset(agent_names))
