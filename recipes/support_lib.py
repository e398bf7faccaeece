"""Python pieces used by the example support recipes: a keyword triage function (no model)."""

from __future__ import annotations

from typing import Any

from flock_cli import EvalInputs

_KEYWORDS = {
    "billing": ("invoice", "refund", "charge", "payment", "price"),
    "technical": ("error", "crash", "bug", "timeout", "api", "slow"),
    "account": ("password", "login", "email", "account", "2fa"),
}
_URGENT = ("down", "urgent", "outage", "cannot", "can't")


def triage(inputs: EvalInputs) -> list[dict[str, Any]]:
    """Classify each support request by keywords and set its priority (1 is most urgent)."""
    tickets = []
    for artifact in inputs.artifacts:
        request = artifact.payload
        text = f"{request['subject']} {request['body']}".lower()
        category = next((c for c, words in _KEYWORDS.items() if any(w in text for w in words)), "other")
        priority = 1 if any(w in text for w in _URGENT) else 3
        tickets.append(
            {
                "customer": request["customer"],
                "subject": request["subject"],
                "category": category,
                "priority": priority,
            }
        )
    return tickets
