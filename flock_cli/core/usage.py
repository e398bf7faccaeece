"""What a flock's model calls have used so far, per agent and in all: tokens, cost, calls.

Engines report usage through ``ctx.trace.usage`` (the DSPy engine does for every model call);
the ledger adds it up for budgets (``Budget``) and for ``Flock.usage``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Usage", "UsageLedger"]


@dataclass
class Usage:
    """Tokens (input and output), cost and model calls."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    calls: int = 0

    @property
    def tokens(self) -> int:
        """Input and output tokens together."""
        return self.input_tokens + self.output_tokens

    def add(self, input_tokens: int, output_tokens: int, cost: float | None, calls: int) -> None:
        """Add one report."""
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.cost += cost or 0.0
        self.calls += calls


class UsageLedger:
    """Usage per agent and in total."""

    def __init__(self) -> None:
        self.total = Usage()
        self.by_agent: dict[str, Usage] = {}

    def add(self, agent: str, input_tokens: int, output_tokens: int, cost: float | None, calls: int) -> None:
        """Record what one of ``agent``'s runs used."""
        self.total.add(input_tokens, output_tokens, cost, calls)
        self.by_agent.setdefault(agent, Usage()).add(input_tokens, output_tokens, cost, calls)

    def of(self, agent: str) -> Usage:
        """What ``agent`` used (zero when it used nothing)."""
        return self.by_agent.get(agent) or Usage()
