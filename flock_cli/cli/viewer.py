"""``flock board ... --as NAME [--tenant ID] [--label L ...]``: whose eyes the board is read with.

Without ``--as`` the board commands read as the operator, who sees every artifact. With it they
read as an :class:`~flock_cli.core.visibility.AgentIdentity`, through the same reads an agent's
``ctx.board`` makes, so an operator can check what an agent or a tenant would see. When the recipe
is given and NAME is one of its agents, the identity is that agent's (its tenant and labels come
from the recipe); any other name is an outside identity with the tenant and labels given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from flock_cli.cli.common import err_console, fail

if TYPE_CHECKING:
    from flock_cli.core.visibility import AgentIdentity
    from flock_cli.recipe.loader import Recipe

__all__ = ["AsOpt", "LabelOpt", "TenantOpt", "Who", "viewer_json"]

AsOpt = Annotated[
    str | None,
    typer.Option(
        "--as",
        metavar="NAME",
        help="Read as the identity NAME, with the checks an agent's ctx.board makes: only what NAME"
        " may see, embargoes included. With --recipe, an agent's tenant and labels come from the"
        " recipe. Without --as you read as the operator and see every artifact.",
    ),
]
TenantOpt = Annotated[
    str | None, typer.Option("--tenant", metavar="ID", help="With --as: the identity's tenant.")
]
LabelOpt = Annotated[
    list[str] | None,
    typer.Option("--label", metavar="LABEL", help="With --as: one of the identity's labels (repeatable)."),
]


@dataclass(frozen=True)
class Who:
    """What ``--as``, ``--tenant`` and ``--label`` asked for (checked by :meth:`identity`)."""

    name: str | None
    tenant: str | None
    labels: list[str] | None

    def identity(self, recipe: Recipe | None) -> AgentIdentity | None:
        """The identity to read as, or None for the operator's unrestricted view. Says on stderr
        whose view it is; a usage error (exit 2) when the options do not make an identity."""
        from flock_cli.core.visibility import AgentIdentity

        labels = self.labels or []
        if self.name is None:
            if self.tenant is not None or labels:
                fail("--tenant and --label describe the identity given by --as NAME; add --as")
            return None
        name = self.name
        if not name.strip() or name != name.strip():
            fail(f"--as takes an identity name without spaces around it, got {name!r}")
        if self.tenant is not None and not self.tenant.strip():
            fail("--tenant takes a tenant id, got an empty one")
        if any(not label.strip() for label in labels):
            fail("--label takes a label, got an empty one")
        agent = recipe.definition.agents.get(name) if recipe is not None else None
        if recipe is not None and agent is not None:
            if self.tenant is not None or labels:
                fail(
                    f"'{name}' is an agent of {recipe.path}: its identity comes from the recipe"
                    f" ({_describe(agent.tenant, agent.labels)}); drop --tenant and --label, or read"
                    " as a name that is not one of its agents"
                )
            identity = AgentIdentity(name=name, labels=frozenset(agent.labels), tenant_id=agent.tenant)
            source = f"agent '{name}' of {recipe.path}"
        else:
            identity = AgentIdentity(name=name, labels=frozenset(labels), tenant_id=self.tenant)
            source = f"'{name}'"
        note = f"reading as {source} ({_describe(identity.tenant_id, sorted(identity.labels))})"
        if recipe is not None and agent is None:
            from flock_cli.errors import did_you_mean

            note += f"; it is not an agent of {recipe.path}.{did_you_mean(name, recipe.definition.agents)}"
        from rich.markup import escape

        err_console().print(f"[dim]{escape(note)}[/]")
        return identity


def _describe(tenant: str | None, labels: list[str]) -> str:
    tenant_text = f"tenant {tenant}" if tenant is not None else "no tenant"
    labels_text = f"labels {', '.join(sorted(labels))}" if labels else "no labels"
    return f"{tenant_text}, {labels_text}"


def viewer_json(identity: AgentIdentity | None) -> dict[str, Any] | None:
    """The identity read as, for ``--json`` output (None: the operator, who sees everything)."""
    if identity is None:
        return None
    return {"name": identity.name, "tenant": identity.tenant_id, "labels": sorted(identity.labels)}
