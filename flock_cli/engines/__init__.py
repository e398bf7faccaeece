"""Engines shipped with Flock-Flow. The two offline engines need no model and no network."""

from flock_cli.engines.function import FunctionEngine
from flock_cli.engines.scripted import TestEngine

__all__ = ["FunctionEngine", "TestEngine"]
