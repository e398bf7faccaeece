"""Durations in recipes: a number of seconds, or a number with a unit (``150ms``, ``30s``, ``5m``,
``2h``, ``1d``), with the JSON Schema that says so. Below every recipe model that takes one."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field, WithJsonSchema

__all__ = ["MAX_SECONDS", "Delay", "Duration", "parse_duration"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> Any:
    """``"150ms"``, ``"30s"``, ``"5m"``, ``"2h"``, ``"1d"`` or a number of seconds -> seconds."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"'{value}' is not a duration; write a number of seconds or e.g. 30s, 5m, 2h")
        return float(match.group(1)) * _UNITS[match.group(2) or "s"]
    return value


def _seconds_schema(bound: dict[str, float]) -> WithJsonSchema:
    return WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", **bound},
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*$"},
            ],
            "description": "seconds, or a number with a unit: 150ms, 30s, 5m, 2h, 1d",
        }
    )


MAX_SECONDS = 10 * 365 * 86400  # ten years: longer is a mistake, and overflows date arithmetic
Duration = Annotated[
    float,
    Field(gt=0, le=MAX_SECONDS, allow_inf_nan=False),
    _seconds_schema({"exclusiveMinimum": 0, "maximum": MAX_SECONDS}),
]
Delay = Annotated[
    float,
    Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False),
    _seconds_schema({"minimum": 0, "maximum": MAX_SECONDS}),
]
