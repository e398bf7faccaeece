"""Engines shipped with Flock-Flow. The two offline engines need no model and no network; the
DSPy engine calls a language model (DSPy is imported only when it runs)."""

from flock_cli.engines.dspy_engine import DSPyEngine
from flock_cli.engines.function import FunctionEngine
from flock_cli.engines.scripted import TestEngine

__all__ = ["DSPyEngine", "FunctionEngine", "TestEngine"]
