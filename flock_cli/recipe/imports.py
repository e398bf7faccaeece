"""Resolving ``package.module:Name`` references to Python objects, with helpful errors."""

from __future__ import annotations

import importlib
from typing import Any

from flock_cli.errors import did_you_mean
from flock_cli.recipe.diagnostics import Problem

__all__ = ["import_object"]


def import_object(ref: str, path: tuple[str | int, ...], what: str) -> Any:
    """Import ``module:Name``; raise :class:`Problem` at ``path`` naming what went wrong."""
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        raise Problem(
            path,
            f"cannot import module '{module_name}' for {what} '{ref}' (no module named '{missing}')",
            hint="the recipe's folder and the current directory are on the import path;"
            " install the package or fix the name",
            code="import",
        ) from None
    except Exception as exc:  # the module itself is broken: report what it raised
        raise Problem(
            path, f"importing '{module_name}' failed: {type(exc).__name__}: {exc}", code="import"
        ) from None
    value: Any = module
    for part in attr.split("."):
        if not hasattr(value, part):
            public = [n for n in dir(value) if not n.startswith("_")]
            raise Problem(
                path,
                f"'{module_name}' has no attribute '{attr}' (for {what} '{ref}')",
                hint=did_you_mean(part, public).strip(),
                code="import",
            )
        value = getattr(value, part)
    return value
