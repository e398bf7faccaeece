"""Visibility rules written as text: ``public``, ``private:a,b``, ``labelled:x,y``, ``tenant:acme``
or ``after:5m`` (``flock publish --visibility`` and the HTTP service's ``visibility`` field)."""

from __future__ import annotations

from datetime import timedelta

from flock_cli.core.visibility import (
    AfterVisibility,
    LabelledVisibility,
    PrivateVisibility,
    PublicVisibility,
    TenantVisibility,
    Visibility,
)
from flock_cli.errors import UsageError, did_you_mean
from flock_cli.recipe.model import MAX_SECONDS, parse_duration

__all__ = ["parse_visibility"]


def parse_visibility(text: str, *, agents: list[str], label: str = "--visibility") -> Visibility:
    """``public``, ``private:a,b``, ``labelled:x,y``, ``tenant:acme`` or ``after:5m``; the agents
    of ``private`` must be among ``agents``."""
    kind, _, arg = text.partition(":")
    names = [n.strip() for n in arg.split(",") if n.strip()]
    kinds = ("public", "private", "labelled", "tenant", "after")
    if kind == "public" and not arg:
        return PublicVisibility()
    if kind in ("private", "labelled", "tenant", "after") and not names:
        raise UsageError(f"{label} {kind} needs a value: {kind}:...")
    if kind == "private":
        for name in names:
            if name not in agents:
                raise UsageError(
                    f"{label} private: the recipe has no agent '{name}'.{did_you_mean(name, agents)}"
                )
        return PrivateVisibility(agents=frozenset(names))
    if kind == "labelled":
        return LabelledVisibility(required_labels=frozenset(names))
    if kind == "tenant":
        return TenantVisibility(tenant_id=arg.strip())
    if kind == "after":
        try:
            seconds = float(parse_duration(arg.strip()))
        except ValueError as exc:
            raise UsageError(f"{label} after: {exc}") from None
        if not 0 < seconds <= MAX_SECONDS:
            raise UsageError(
                f"{label} after: the embargo must last more than 0 s and at most {MAX_SECONDS} s"
            )
        return AfterVisibility(ttl=timedelta(seconds=seconds))
    raise UsageError(f"unknown visibility {text!r}; use {', '.join(kinds)}.{did_you_mean(kind, kinds)}")
