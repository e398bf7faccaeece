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
from flock_cli.store.records import BatchEntry, BoardSummary, GateEntry, Lineage, RoutingTx, RunRecord
from flock_cli.store.sqlite import DEFAULT_BOARD, SQLiteBlackboardStore

__all__ = [
    "DEFAULT_BOARD",
    "EXTERNAL",
    "UNRESTRICTED",
    "ArtifactQuery",
    "BatchEntry",
    "BlackboardStore",
    "BoardSummary",
    "DeadLetter",
    "Delivery",
    "DeliveryStatus",
    "GateEntry",
    "InMemoryBlackboardStore",
    "Lineage",
    "Page",
    "RoutingTx",
    "RunRecord",
    "SQLiteBlackboardStore",
    "StaleLeaseError",
    "Viewer",
    "VisibilityDenial",
]
