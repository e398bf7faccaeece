"""Metrics an engine or component returns (``EvalResult.metrics``), as span attributes.

A run's metrics (``latency_ms``, ``docs_retrieved``, ``confidence``, ``best_of``'s score...) go on
its ``agent.run`` span as ``flock.metric.<name>``, and each engine's own on its ``engine.call``
span, where ``flock trace show`` and the OTLP export find them. Values become what a span
attribute can hold, and what the trace store and OTLP keep as they are:

* numbers stay numbers (``int`` and ``float``, NumPy's too), booleans stay booleans, strings stay
  strings (cut to :data:`MAX_TEXT` characters), ``None`` stays null;
* a mapping is flattened: ``{"best_of": {"score": 0.9}}`` becomes ``flock.metric.best_of.score``;
* anything else (a list, an object, NaN or infinity) is kept as its JSON text, also cut.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from typing import Any

__all__ = ["MAX_TEXT", "METRIC_PREFIX", "metric_attributes", "metrics_of"]

METRIC_PREFIX = "flock.metric."
MAX_TEXT = 1000  # characters of a text value kept on a span
_MAX_DEPTH = 4  # mappings nested deeper are kept as JSON text


def metric_attributes(metrics: Mapping[Any, Any]) -> dict[str, Any]:
    """``metrics`` as span attributes named ``flock.metric.<name>`` (see the module docstring)."""
    attributes: dict[str, Any] = {}
    _flatten(metrics, METRIC_PREFIX, attributes, 0)
    return attributes


def metrics_of(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The metrics among a span's attributes, by name (the prefix taken off), in name order."""
    n = len(METRIC_PREFIX)
    return {key[n:]: attributes[key] for key in sorted(attributes) if key.startswith(METRIC_PREFIX)}


def _flatten(metrics: Mapping[Any, Any], prefix: str, into: dict[str, Any], depth: int) -> None:
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and depth < _MAX_DEPTH:
            _flatten(value, f"{name}.", into, depth + 1)
        else:
            into[name] = _value(value)


def _value(value: Any) -> Any:
    kind = type(value)  # the usual kinds first: the ABC checks below cost a microsecond each
    if kind is int or value is None or kind is bool:
        return value
    if kind is str:
        return _cut(value)
    if kind is float and math.isfinite(value):
        return value
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isfinite(number):
            return number
    if isinstance(value, str):
        return _cut(value)
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):  # a container holding itself, say
        text = repr(value)
    return _cut(text)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"
