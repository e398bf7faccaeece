"""Walking the recipe model along a path: which model describes a place in a recipe, which keys
it accepts, and which steps of a Pydantic location exist in the YAML at all."""

from __future__ import annotations

import functools
import types
import typing
from typing import Any

from pydantic import BaseModel

from flock_cli.recipe.model import RecipeDef
from flock_cli.recipe.source import Document

__all__ = ["keys_at", "keys_written_at", "model_keys", "node_at", "step", "text_path"]


def text_path(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """``loc`` without the steps Pydantic adds for a discriminated union: the member's tag names no
    key of the YAML, and may equal a real key's name (``{kind: tenant, tenant: acme}``)."""
    current: Any = RecipeDef
    out: list[Any] = []
    for part in loc:
        member = _member(current, part)
        if member is not None:
            current = member
            continue
        out.append(part)
        current = None if current is None else step(current, part)
    return tuple(out)


def keys_written_at(doc: Document, path: tuple[Any, ...]) -> list[str]:
    """The keys the recipe model accepts in the mapping at ``path`` of the data (or in the last
    item of the list there): short forms and kinds are followed as the data spells them."""
    annotation: Any = RecipeDef
    node: Any = doc.data
    for part in path:
        annotation = step(_as_written(annotation, node), part)
        node = node[part]
    if isinstance(node, list) and node:
        annotation, node = step(_as_written(annotation, node), len(node) - 1), node[-1]
    return model_keys(_as_written(annotation, node)) if isinstance(node, dict) else []


def _as_written(annotation: Any, node: Any) -> Any:
    """The annotation that describes ``node``: the item type when one item stands for a list,
    the member of a discriminated union that the node's ``kind`` names."""
    while True:
        annotation = _unwrap(annotation, node.get("kind") if isinstance(node, dict) else None)
        if typing.get_origin(annotation) is list and not isinstance(node, list):
            annotation = typing.get_args(annotation)[0]
        else:
            return annotation


def node_at(doc: Document, path: tuple[Any, ...]) -> Any:
    """The data at ``path`` in ``doc``, or None where the path leaves the data."""
    node: Any = doc.data
    for part in path:
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if not (in_list or (isinstance(node, dict) and part in node)):
            return None
        node = node[part]
    return node


def keys_at(loc: tuple[Any, ...]) -> list[str]:
    """Key names the model accepts at the Pydantic location ``loc`` (tags included)."""
    current: Any = RecipeDef
    for part in loc:
        current = step(current, part)
        if current is None:
            return []
    return model_keys(current)


def model_keys(annotation: Any) -> list[str]:
    """The keys of the model ``annotation`` names ([] for anything else)."""
    model = _unwrap(annotation, None)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [f.alias or name for name, f in model.model_fields.items()]
    return []


def _member(annotation: Any, part: Any) -> Any:
    """The member of the discriminated union ``annotation`` whose tag is ``part``, else None."""
    union = _unwrap(annotation, _NO_TAG)  # through Optional and Annotated, to the union itself
    if not isinstance(part, str) or typing.get_origin(union) not in (typing.Union, types.UnionType):
        return None
    members = typing.get_args(union)
    tagged = next((m for m in members if _tag_of(m) == part), None)
    # a plain union (a string or a mapping): pydantic tags a member by its class name, wrapped
    # in its validators' names ("function-after[_check(), ModelDef]")
    return tagged or next((m for m in members if _named(m, part)), None)


_NO_TAG = object()  # a tag no member has (None is the tag of every member without a 'kind')


def _named(member: Any, part: str) -> bool:
    if not (isinstance(member, type) and issubclass(member, BaseModel)):
        return False
    return part == member.__name__ or part.endswith((f" {member.__name__}]", f"[{member.__name__}]"))


def step(annotation: Any, part: Any) -> Any:
    """The annotation one step (a key, an index or a union's tag) inside ``annotation``."""
    member = _member(annotation, part)  # a discriminated union: the tag picks the member
    if member is not None:
        return member
    annotation = _unwrap(annotation, None)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, field in annotation.model_fields.items():
            if part in (name, field.alias):
                return _hints(annotation).get(name, field.annotation)
        return None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is list and isinstance(part, int):
        return args[0]
    if origin is dict:
        return args[1]
    return None


@functools.cache
def _hints(model: type[BaseModel]) -> dict[str, Any]:
    # a field that refers to a later definition (AfterDef.then: VisibilityDef) keeps a
    # ForwardRef in model_fields; the module's names resolve it
    return typing.get_type_hints(model, include_extras=True)


def _unwrap(annotation: Any, tag: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            chosen = next((m for m in members if _tag_of(m) == tag), None)
            annotation = chosen or (members[0] if len(members) == 1 else annotation)
            if chosen is None and len(members) != 1:
                return annotation
        else:
            return annotation


def _tag_of(model: Any) -> Any:
    if isinstance(model, type) and issubclass(model, BaseModel) and "kind" in model.model_fields:
        args = typing.get_args(model.model_fields["kind"].annotation)
        return args[0] if args else None
    return None
