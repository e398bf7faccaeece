"""The exception tree of Flock-Flow.

Two families, never mixed: a :class:`UserError` means the caller did something wrong (a bad
declaration, an invalid payload, an unknown type name) and can fix it; a :class:`RunError` means
something failed while the system ran (an engine raised, a run timed out, an output was invalid).
The CLI maps the first family to exit code 2 and the second to exit code 1.

    FlockError
    ├── UserError
    │   ├── TypeRegistryError
    │   │   ├── UnknownTypeError
    │   │   ├── AmbiguousTypeError
    │   │   └── TypeConflictError
    │   ├── InvalidPayloadError
    │   ├── DuplicateAgentError
    │   ├── UnknownAgentError
    │   ├── InvalidDeclarationError
    │   ├── UsageError
    │   ├── FlockClosedError
    │   ├── TraceStoreError
    │   └── BoardUnavailableError
    └── RunError
        ├── AgentRunError
        ├── OutputError
        ├── IdleTimeoutError
        ├── TraceStoreBusyError
        └── BoardConnectionError
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = [
    "AgentRunError",
    "AmbiguousTypeError",
    "BoardConnectionError",
    "BoardUnavailableError",
    "DuplicateAgentError",
    "FlockClosedError",
    "FlockError",
    "IdleTimeoutError",
    "InvalidDeclarationError",
    "InvalidPayloadError",
    "ModelCallsBlockedError",
    "ModelNotConfiguredError",
    "OutputError",
    "RunError",
    "TraceStoreBusyError",
    "TraceStoreError",
    "TypeConflictError",
    "TypeRegistryError",
    "UnknownAgentError",
    "UnknownTypeError",
    "UsageError",
    "UserError",
]


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``name``, if one is close enough to be a likely misspelling."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return close[0] if close else None


def printable(text: str, keep: str = "\n") -> str:
    """``text`` with every character a terminal would not show as itself (control characters,
    lone surrogates, other line separators) escaped, ``\\x1e``; the characters in ``keep`` stay.
    Error messages quote what users wrote, and what they wrote may be anything."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() or c in keep else c.encode("unicode_escape", "backslashreplace").decode("ascii")
        for c in text
    )


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest candidate, or an empty string."""
    close = closest(name, candidates)
    return f" Did you mean '{close}'?" if close else ""


def suggest(name: str, candidates: Iterable[str], listing: str) -> str:
    """``"Did you mean 'x'?"`` for the closest candidate, else ``"<listing>: a, b, c"`` ('' when
    there are none): what the recipe loader and the Python API say after an unknown name."""
    names = list(candidates)
    return did_you_mean(name, names).strip() or (f"{listing}: {', '.join(names)}" if names else "")


class FlockError(Exception):
    """Root of every error Flock-Flow raises on purpose."""


class UserError(FlockError):
    """A usage mistake by the caller: fix the declaration, the input or the call."""


class RunError(FlockError):
    """A failure while the system ran: an engine, a component, a timeout."""


class TypeRegistryError(UserError):
    """A type could not be registered or resolved."""


class UnknownTypeError(TypeRegistryError):
    """No registered type has this name."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = sorted(set(known))
        listing = ", ".join(self.known) if self.known else "none"
        super().__init__(
            f"Unknown artifact type '{name}'.{did_you_mean(name, self.known)} Known names: {listing}."
            " Decorate the model with @flock_type and use it in an agent, publish it, or call"
            " Flock.register_type()."
        )


class AmbiguousTypeError(TypeRegistryError):
    """A bare class name matches several registered types."""

    def __init__(self, name: str, matches: Iterable[str]) -> None:
        self.name = name
        self.matches = sorted(matches)
        super().__init__(
            f"Type name '{name}' is ambiguous: it matches {', '.join(self.matches)}. Use the qualified name."
        )


class TypeConflictError(TypeRegistryError):
    """Two different classes claim the same type name."""


class InvalidPayloadError(UserError):
    """A payload does not validate against its registered type.

    ``type_name`` names the type and ``fields`` the dotted paths of the failing fields.
    """

    def __init__(self, type_name: str, error: ValidationError) -> None:
        self.type_name = type_name
        self.errors: list[dict[str, Any]] = [dict(e) for e in error.errors()]
        # field names come from the payload: a key may hold a line break or a control character
        self.fields = [
            printable(".".join(str(p) for p in e["loc"]), keep="") or "<root>" for e in self.errors
        ]
        details = "; ".join(f"{field}: {e['msg']}" for field, e in zip(self.fields, self.errors, strict=True))
        super().__init__(f"Invalid payload for type '{type_name}': {details}")


class DuplicateAgentError(UserError):
    """Two agents were declared with one name."""


class UnknownAgentError(UserError):
    """An agent name does not exist in this Flock."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        known = sorted(known)
        super().__init__(f"Unknown agent '{name}'.{did_you_mean(name, known)}")


class InvalidDeclarationError(UserError):
    """An agent, subscription or option was declared with values that cannot work."""


class UsageError(UserError):
    """A call got arguments it cannot use (a wrong kind of value, an unknown id)."""


class FlockClosedError(UserError):
    """Work was submitted after ``Flock.shutdown()``."""


class TraceStoreError(UserError):
    """A trace store path that cannot be used: a directory, not a DuckDB file, a run id that is not there."""


class AgentRunError(RunError):
    """An agent run failed; ``agent`` and ``stage`` say where, ``__cause__`` says why."""

    def __init__(self, agent: str, stage: str, cause: BaseException) -> None:
        self.agent = agent
        self.stage = stage
        super().__init__(f"Agent '{agent}' failed in {stage}: {type(cause).__name__}: {cause}")


class OutputError(RunError):
    """An engine produced an output the agent may not publish (undeclared or invalid)."""


class IdleTimeoutError(RunError):
    """``run_until_idle(timeout=...)`` ran out of time; ``summary`` holds what happened so far."""

    def __init__(self, timeout: float, summary: Any) -> None:
        self.timeout = timeout
        self.summary = summary
        super().__init__(f"The flock did not become idle within {timeout} s.")


class TraceStoreBusyError(RunError):
    """The trace store stayed locked by other processes for longer than the wait allowed."""


class ModelNotConfiguredError(UserError):
    """A dspy engine has no model to call: none was given anywhere it may be given."""


class ModelCallsBlockedError(UserError):
    """A real model call was attempted while model calls are blocked (tests, ``FLOCK_BLOCK_MODEL_CALLS``)."""


class BoardUnavailableError(UserError):
    """The board's database cannot be reached or used."""


class BoardConnectionError(RunError):
    """The board's database went away during a run and did not come back in time."""
