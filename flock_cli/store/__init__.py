"""Blackboard stores: the contract every store implements, the in-memory store and the SQLite board."""

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
from flock_cli.store.sqlite import DEFAULT_BOARD, SQLiteBlackboardStore

__all__ = [
    "DEFAULT_BOARD",
    "EXTERNAL",
    "UNRESTRICTED",
    "ArtifactQuery",
    "BlackboardStore",
    "DeadLetter",
    "Delivery",
    "DeliveryStatus",
    "InMemoryBlackboardStore",
    "Page",
    "SQLiteBlackboardStore",
    "StaleLeaseError",
    "Viewer",
    "VisibilityDenial",
]
