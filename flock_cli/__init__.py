"""Flock-Flow: a blackboard-first multi-agent orchestrator.

Agents never call each other: they subscribe to typed artifacts on a shared blackboard, run when
matching artifacts appear, and publish new artifacts.
"""

from flock_cli.clock import ManualClock, SequentialIds, SystemClock
from flock_cli.core.agent import Agent, AgentBuilder
from flock_cli.core.artifact import Artifact
from flock_cli.core.components import AgentComponent, Context, EngineComponent, EvalInputs, EvalResult
from flock_cli.core.orchestrator import Flock
from flock_cli.core.registry import flock_tool, flock_type
from flock_cli.core.session import BoardBusyError, ResumeRefusedError
from flock_cli.core.specs import BatchSpec, JoinSpec, RetryPolicy
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
from flock_cli.engines import FunctionEngine, TestEngine
from flock_cli.errors import (
    AgentRunError,
    AmbiguousTypeError,
    DuplicateAgentError,
    FlockClosedError,
    FlockError,
    IdleTimeoutError,
    InvalidDeclarationError,
    InvalidPayloadError,
    OutputError,
    RunError,
    TypeConflictError,
    TypeRegistryError,
    UnknownAgentError,
    UnknownTypeError,
    UsageError,
    UserError,
)

__version__ = "0.1.0"

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
    "Context",
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
    "OutputError",
    "PrivateVisibility",
    "PublicVisibility",
    "ResumeRefusedError",
    "RetryPolicy",
    "RunError",
    "RunSummary",
    "SequentialIds",
    "SystemClock",
    "TenantVisibility",
    "TestEngine",
    "TypeConflictError",
    "TypeRegistryError",
    "UnknownAgentError",
    "UnknownTypeError",
    "UsageError",
    "UserError",
    "Visibility",
    "flock_tool",
    "flock_type",
    "only_for",
]
