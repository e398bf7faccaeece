"""What engines and utility components are written against: the hook classes and a run's data.

Each name is defined where it belongs (the component classes in :mod:`flock_cli.core.agent`, beside
the agent whose hooks they are; a run's ``Context``, ``EvalInputs`` and ``EvalResult`` in
:mod:`flock_cli.core.context`) and gathered here for component authors.
"""

from __future__ import annotations

from flock_cli.core.agent import AgentComponent, EngineComponent
from flock_cli.core.context import BatchTrigger, Context, EvalInputs, EvalResult

__all__ = ["AgentComponent", "BatchTrigger", "Context", "EngineComponent", "EvalInputs", "EvalResult"]
