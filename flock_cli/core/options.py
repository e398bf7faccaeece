"""Options given to a constructor are enforced: an unknown one is refused by name, never dropped.

Pydantic ignores unknown keyword arguments by default, so ``TestEngine(sede=1)`` would build an
engine with the default seed and say nothing. Every option-taking class of the public API
(engines, components, specs, visibility kinds, identities, artifacts) derives from
:class:`Options`: unknown options are forbidden, and every validation problem is raised as an
:class:`~flock_cli.errors.InvalidDeclarationError` (a ``UserError``) in the words the recipe
loader uses for the same mistake (``has no option 'sede'. Did you mean 'seed'?``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from flock_cli.errors import InvalidDeclarationError, suggest

__all__ = ["Options", "invalid_options"]


class Options(BaseModel):
    """A model built from keyword options; subclasses inherit the refusal of unknown ones."""

    model_config = ConfigDict(extra="forbid")

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise invalid_options(type(self), exc) from None


def invalid_options(owner: type[BaseModel], exc: ValidationError) -> InvalidDeclarationError:
    """The user error for ``exc``, raised while building ``owner``: each unknown option named with
    a suggestion, then the other problems as ``option: message``. ``problems`` holds the text
    without the class's name, for callers that name the option the spec was given to."""
    name = owner.__name__
    valid = [field.alias or key for key, field in owner.model_fields.items()]
    unknown: list[str] = []
    other: list[str] = []
    for item in exc.errors():
        loc = item["loc"]
        if item["type"] == "extra_forbidden" and len(loc) == 1:
            option = str(loc[0])
            unknown.append(f"{name} has no option '{option}'. {suggest(option, valid, 'Valid options')}")
        else:
            other.append(f"{'.'.join(str(p) for p in loc) or name}: {item['msg']}")
    sentences = [text if text.endswith("?") else f"{text.rstrip()}." for text in unknown]
    details = "; ".join(other)
    problems = " ".join([*sentences, details] if other else sentences)
    error = InvalidDeclarationError(
        " ".join([*sentences, f"Invalid {name}: {details}"] if other else sentences)
    )
    error.problems = problems  # type: ignore[attr-defined]
    return error
