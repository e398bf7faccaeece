"""Blackboard stores: the contract every store implements, and the in-memory store."""

from flock_cli.store.contract import (
    EXTERNAL,
    UNRESTRICTED,
    ArtifactQuery,
    BlackboardStore,
    DeadLetter,
    Delivery,
    DeliveryStatus,
    Page,
    StaleLeaseError,
    Viewer,
    VisibilityDenial,
)
from flock_cli.store.memory import InMemoryBlackboardStore

__all__ = [
    "EXTERNAL",
    "UNRESTRICTED",
    "ArtifactQuery",
    "BlackboardStore",
    "DeadLetter",
    "Delivery",
    "DeliveryStatus",
    "InMemoryBlackboardStore",
    "Page",
    "StaleLeaseError",
    "Viewer",
    "VisibilityDenial",
]
