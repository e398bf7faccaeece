"""Read-only JSON containers for artifact payloads.

Artifacts are immutable, so their payloads are too: an engine that mutates ``artifact.payload``
would otherwise rewrite the blackboard for every later reader. ``FrozenDict`` and ``FrozenList``
are real ``dict``/``list`` subclasses (JSON, Pydantic and equality work unchanged) whose mutating
methods raise. Copies (``copy.copy``, ``copy.deepcopy``, ``dict(payload)``) are ordinary, mutable
containers.
"""

from __future__ import annotations

import copy
from typing import Any, NoReturn

__all__ = ["FrozenDict", "FrozenList", "freeze"]

_MESSAGE = "artifact payloads are immutable: build a new model (or copy.deepcopy the payload) instead"


def _readonly(self: object, *args: Any, **kwargs: Any) -> NoReturn:
    raise TypeError(_MESSAGE)


class FrozenDict(dict[str, Any]):
    """A dict that refuses to change."""

    __slots__ = ()
    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _readonly

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return {key: copy.deepcopy(value, memo) for key, value in self.items()}

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))


class FrozenList(list[Any]):
    """A list that refuses to change."""

    __slots__ = ()
    __setitem__ = __delitem__ = append = extend = insert = remove = pop = clear = sort = reverse = _readonly
    __iadd__ = __imul__ = _readonly

    def __copy__(self) -> list[Any]:
        return list(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return [copy.deepcopy(value, memo) for value in self]

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenList, (list(self),))


def freeze(value: Any) -> Any:
    """``value`` with every dict and list replaced by its frozen twin (scalars are returned as is)."""
    if isinstance(value, dict):
        if type(value) is FrozenDict:
            return value
        # Scalars are kept without a call each: most payloads are flat, and this runs for every
        # artifact built.
        return FrozenDict({k: v if type(v) in _SCALARS else freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        if type(value) is FrozenList:
            return value
        return FrozenList([v if type(v) in _SCALARS else freeze(v) for v in value])
    return value


_SCALARS = frozenset({str, int, float, bool, type(None)})
