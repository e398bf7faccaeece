"""Flock-Flow: a blackboard-first multi-agent orchestrator.

Agents never call each other: they subscribe to typed artifacts on a shared blackboard, run when
matching artifacts appear, and publish new artifacts.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names below are imported on first use, so `flock --help` stays fast
    from flock_cli.clock import ManualClock, SequentialIds, SystemClock
    from flock_cli.core.agent import Agent, AgentComponent, EngineComponent
    from flock_cli.core.artifact import Artifact
    from flock_cli.core.builder import AgentBuilder
    from flock_cli.core.context import Context, EvalInputs, EvalResult
    from flock_cli.core.orchestrator import Flock
    from flock_cli.core.registry import flock_tool, flock_type
    from flock_cli.core.session import BoardBusyError, ResumeRefusedError
    from flock_cli.core.specs import BatchSpec, Budget, JoinSpec, RetryPolicy
    from flock_cli.core.summary import RunSummary
    from flock_cli.core.visibility import (
        AfterVisibility,
        AgentIdentity,
        LabelledVisibility,
        PrivateVisibility,
        PublicVisibility,
        TenantVisibility,
        Visibility,
        only_for,
    )
    from flock_cli.engines import DSPyEngine, FunctionEngine, TestEngine
    from flock_cli.engines.blocking import block_model_calls
    from flock_cli.engines.model_spec import Model
    from flock_cli.engines.rate_limit import RateLimit
    from flock_cli.errors import (
        AgentRunError,
        AmbiguousTypeError,
        DuplicateAgentError,
        FlockClosedError,
        FlockError,
        IdleTimeoutError,
        InvalidDeclarationError,
        InvalidPayloadError,
        ModelCallsBlockedError,
        ModelNotConfiguredError,
        OutputError,
        RunError,
        TraceStoreBusyError,
        TraceStoreError,
        TypeConflictError,
        TypeRegistryError,
        UnknownAgentError,
        UnknownTypeError,
        UsageError,
        UserError,
    )
    from flock_cli.tracing.reader import TraceReader

__version__ = "0.1.0"

# public name -> defining module; resolved lazily by __getattr__ (PEP 562)
_EXPORTS: dict[str, str] = {
    "AfterVisibility": "flock_cli.core.visibility",
    "Agent": "flock_cli.core.agent",
    "AgentBuilder": "flock_cli.core.builder",
    "AgentComponent": "flock_cli.core.agent",
    "AgentIdentity": "flock_cli.core.visibility",
    "AgentRunError": "flock_cli.errors",
    "AmbiguousTypeError": "flock_cli.errors",
    "Artifact": "flock_cli.core.artifact",
    "BatchSpec": "flock_cli.core.specs",
    "BoardBusyError": "flock_cli.core.session",
    "Context": "flock_cli.core.context",
    "DuplicateAgentError": "flock_cli.errors",
    "EngineComponent": "flock_cli.core.agent",
    "EvalInputs": "flock_cli.core.context",
    "EvalResult": "flock_cli.core.context",
    "Flock": "flock_cli.core.orchestrator",
    "FlockClosedError": "flock_cli.errors",
    "FlockError": "flock_cli.errors",
    "FunctionEngine": "flock_cli.engines",
    "IdleTimeoutError": "flock_cli.errors",
    "InvalidDeclarationError": "flock_cli.errors",
    "InvalidPayloadError": "flock_cli.errors",
    "JoinSpec": "flock_cli.core.specs",
    "LabelledVisibility": "flock_cli.core.visibility",
    "ManualClock": "flock_cli.clock",
    "Model": "flock_cli.engines.model_spec",
    "OutputError": "flock_cli.errors",
    "PrivateVisibility": "flock_cli.core.visibility",
    "PublicVisibility": "flock_cli.core.visibility",
    "RateLimit": "flock_cli.engines.rate_limit",
    "ResumeRefusedError": "flock_cli.core.session",
    "RetryPolicy": "flock_cli.core.specs",
    "RunError": "flock_cli.errors",
    "RunSummary": "flock_cli.core.summary",
    "SequentialIds": "flock_cli.clock",
    "SystemClock": "flock_cli.clock",
    "TenantVisibility": "flock_cli.core.visibility",
    "TestEngine": "flock_cli.engines",
    "TraceReader": "flock_cli.tracing.reader",
    "Budget": "flock_cli.core.specs",
    "DSPyEngine": "flock_cli.engines",
    "ModelCallsBlockedError": "flock_cli.errors",
    "ModelNotConfiguredError": "flock_cli.errors",
    "block_model_calls": "flock_cli.engines.blocking",
    "TraceStoreBusyError": "flock_cli.errors",
    "TraceStoreError": "flock_cli.errors",
    "TypeConflictError": "flock_cli.errors",
    "TypeRegistryError": "flock_cli.errors",
    "UnknownAgentError": "flock_cli.errors",
    "UnknownTypeError": "flock_cli.errors",
    "UsageError": "flock_cli.errors",
    "UserError": "flock_cli.errors",
    "Visibility": "flock_cli.core.visibility",
    "flock_tool": "flock_cli.core.registry",
    "flock_type": "flock_cli.core.registry",
    "only_for": "flock_cli.core.visibility",
}


__all__ = [
    "AfterVisibility",
    "Agent",
    "AgentBuilder",
    "AgentComponent",
    "AgentIdentity",
    "AgentRunError",
    "AmbiguousTypeError",
    "Artifact",
    "BatchSpec",
    "BoardBusyError",
    "Budget",
    "Context",
    "DSPyEngine",
    "DuplicateAgentError",
    "EngineComponent",
    "EvalInputs",
    "EvalResult",
    "Flock",
    "FlockClosedError",
    "FlockError",
    "FunctionEngine",
    "IdleTimeoutError",
    "InvalidDeclarationError",
    "InvalidPayloadError",
    "JoinSpec",
    "LabelledVisibility",
    "ManualClock",
    "Model",
    "ModelCallsBlockedError",
    "ModelNotConfiguredError",
    "OutputError",
    "PrivateVisibility",
    "PublicVisibility",
    "RateLimit",
    "ResumeRefusedError",
    "RetryPolicy",
    "RunError",
    "RunSummary",
    "SequentialIds",
    "SystemClock",
    "TenantVisibility",
    "TestEngine",
    "TraceReader",
    "TraceStoreBusyError",
    "TraceStoreError",
    "TypeConflictError",
    "TypeRegistryError",
    "UnknownAgentError",
    "UnknownTypeError",
    "UsageError",
    "UserError",
    "Visibility",
    "block_model_calls",
    "flock_tool",
    "flock_type",
    "only_for",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flock_cli' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
