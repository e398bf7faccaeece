"""Artifact types and tools: the ``@flock_type`` / ``@flock_tool`` decorators and the per-Flock registry.

The decorators only *mark* a class or function (its canonical name, its description); they do not
put it in any process-wide table. Each :class:`~flock_cli.Flock` owns a :class:`TypeRegistry` that
learns a type the first time the flock sees it (an agent consumes or publishes it, something
publishes it, or ``Flock.register_type`` is called). Two flocks, or two tests, therefore never see
each other's types.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar, overload

from pydantic import BaseModel, TypeAdapter

from flock_cli.errors import (
    AmbiguousTypeError,
    InvalidDeclarationError,
    TypeConflictError,
    UnknownTypeError,
)

__all__ = ["TypeRegistry", "canonical_name", "flock_tool", "flock_type", "tool_schema"]

M = TypeVar("M", bound=type[BaseModel])
F = TypeVar("F", bound=Callable[..., Any])

_TYPE_ATTR = "__flock_type__"
_TOOL_ATTR = "__flock_tool__"


@overload
def flock_type(cls: M, /) -> M: ...
@overload
def flock_type(*, name: str | None = None) -> Callable[[M], M]: ...
def flock_type(cls: M | None = None, /, *, name: str | None = None) -> M | Callable[[M], M]:
    """Mark a Pydantic model as an artifact type.

    Use bare (``@flock_type``) for the canonical name ``module.ClassName`` or with a name
    (``@flock_type(name="Movie")``). Type names are what artifacts, subscriptions and recipes use.
    """

    def mark(model: M) -> M:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise InvalidDeclarationError(f"@flock_type needs a pydantic BaseModel subclass, got {model!r}")
        if name is not None and not name.strip():
            raise InvalidDeclarationError("@flock_type(name=...) must not be empty")
        # Store on the class itself (not inherited by subclasses: checked via __dict__).
        setattr(model, _TYPE_ATTR, name or f"{model.__module__}.{model.__qualname__}")
        return model

    return mark(cls) if cls is not None else mark


def canonical_name(model: type[BaseModel]) -> str:
    """The type name of ``model``: its ``@flock_type`` name, else ``module.QualifiedName``."""
    marked = model.__dict__.get(_TYPE_ATTR)
    return marked if isinstance(marked, str) else f"{model.__module__}.{model.__qualname__}"


@overload
def flock_tool(func: F, /) -> F: ...
@overload
def flock_tool(*, name: str | None = None, description: str | None = None) -> Callable[[F], F]: ...
def flock_tool(
    func: F | None = None, /, *, name: str | None = None, description: str | None = None
) -> F | Callable[[F], F]:
    """Mark a callable as a tool that engines may call (``agent.with_tools([...])``).

    The tool's name defaults to the function name and its description to the docstring; its
    parameter schema is derived from the type hints (see :func:`tool_schema`).
    """

    def mark(fn: F) -> F:
        if not callable(fn):
            raise InvalidDeclarationError(f"@flock_tool needs a callable, got {fn!r}")
        setattr(
            fn,
            _TOOL_ATTR,
            {
                "name": name or getattr(fn, "__name__", "tool"),
                "description": description or inspect.getdoc(fn) or "",
            },
        )
        return fn

    return mark(func) if func is not None else mark


def tool_schema(func: Callable[..., Any]) -> dict[str, Any]:
    """Name, description and JSON Schema of a tool's parameters, from its signature."""
    meta = getattr(func, _TOOL_ATTR, None) or {
        "name": getattr(func, "__name__", "tool"),
        "description": inspect.getdoc(func) or "",
    }
    hints = inspect.get_annotations(func, eval_str=True)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in inspect.signature(func).parameters.values():
        annotation = hints.get(param.name, Any)
        properties[param.name] = TypeAdapter(annotation).json_schema()
        if param.default is inspect.Parameter.empty:
            required.append(param.name)
    return {
        "name": meta["name"],
        "description": meta["description"],
        "parameters": {"type": "object", "properties": properties, "required": required},
    }


class TypeRegistry:
    """Bidirectional map between artifact type names and Pydantic model classes, for one Flock."""

    def __init__(self) -> None:
        self._by_name: dict[str, type[BaseModel]] = {}
        self._by_cls: dict[type[BaseModel], str] = {}
        self._by_short: dict[str, set[str]] = {}

    def register(self, model: type[BaseModel]) -> str:
        """Register ``model`` (idempotent) and return its canonical name."""
        known = self._by_cls.get(model)
        if known is not None:
            return known
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise InvalidDeclarationError(
                f"Artifact types must be pydantic BaseModel subclasses, got {model!r}"
            )
        name = canonical_name(model)
        existing = self._by_name.get(name)
        if existing is not None and existing is not model:
            if (existing.__module__, existing.__qualname__) != (model.__module__, model.__qualname__):
                raise TypeConflictError(
                    f"Type name '{name}' is already registered to {existing.__module__}."
                    f"{existing.__qualname__}; {model.__module__}.{model.__qualname__} cannot take it."
                    " Give one of them another name with @flock_type(name=...)."
                )
            # The same class re-created (a reloaded module): the newer definition wins.
            del self._by_cls[existing]
        self._by_name[name] = model
        self._by_cls[model] = name
        self._by_short.setdefault(name.rsplit(".", 1)[-1], set()).add(name)
        return name

    def name_of(self, model: type[BaseModel]) -> str:
        """The registered name of ``model``, registering it on first use."""
        return self._by_cls.get(model) or self.register(model)

    def resolve_name(self, name: str) -> str:
        """The canonical name for ``name`` (canonical already, or an unambiguous bare class name)."""
        if name in self._by_name:
            return name
        matches = self._by_short.get(name, set()) if "." not in name else set()
        if len(matches) == 1:
            return next(iter(matches))
        if len(matches) > 1:
            raise AmbiguousTypeError(name, matches)
        raise UnknownTypeError(name, [*self._by_name, *self._by_short])

    def resolve(self, name: str) -> type[BaseModel]:
        """The model class registered under ``name`` (see :meth:`resolve_name`)."""
        return self._by_name[self.resolve_name(name)]

    def get(self, name: str) -> type[BaseModel] | None:
        """The class registered under the exact canonical ``name``, or None."""
        return self._by_name.get(name)

    def names(self) -> list[str]:
        """All canonical names, sorted."""
        return sorted(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name
